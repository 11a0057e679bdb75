"""The web server's accounts: named people with a role, and API keys for their scripts.

Roles, each allowed what the one before is: ``viewer`` (reads everything: jobs, outputs, logs, metrics),
``editor`` (also submits, cancels and retries jobs, anyone's, changes priorities, manages the presenter library),
``admin`` (also deletes jobs and pauses or resumes the intake; accounts are managed with ``heygemd users``). The web
server's ``web.token`` is an admin key of its own, besides any account.

Accounts live in ``<state>/users.json`` (:mod:`heygemd.layout`), readable and writable by heygemd's user only
(mode 600; a file that others may write is refused: whoever can write it can make himself admin). Passwords and API
keys are stored only as Argon2id hashes (argon2-cffi's defaults, RFC 9106's low-memory profile). An API key is
``hgd_<id>_<secret>``: its id finds the one hash to check, and a key checked once is known (in this process's
memory) until users.json changes, so a script polling every few seconds does not pay for Argon2 every time, while a
revoked key is refused at once. A key records when it was last used (at most once a minute). Every change is made
under a lock (``users.json.lock``), on the file as it is then, and written atomically, so the CLI and a running
server never undo each other's changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from heygemd.errors import ConfigError, HeygemdError
from heygemd.fsutil import atomic_writer, exclusive_lock, open_regular, own_dir
from heygemd.layout import users_file, users_lock

Role = Literal["viewer", "editor", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "editor", "admin")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
RESERVED_NAMES = frozenset({"token", "local", "nas", "cli"})
"""Names heygemd uses itself in ``submitted_by`` (web.token, a loopback server without one, the inbox, the CLI)."""
KEY_PREFIX = "hgd_"
USERS_MAX_BYTES = 1024 * 1024
LAST_USED_EVERY_S = 60.0
"""How often (at most) a key's last use is written to users.json."""


def allows(role: Role, needed: Role) -> bool:
    """Whether ``role`` may do what ``needed`` may."""
    return ROLES.index(role) >= ROLES.index(needed)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class AccountError(HeygemdError):
    code = "BAD_ACCOUNT"
    default_hint = (
        "Account names are 1-32 lower-case letters, digits, '.', '_' or '-' (not token, local, nas or cli); "
        "roles are viewer, editor and admin."
    )


class NoSuchAccount(HeygemdError):
    code = "NO_SUCH_ACCOUNT"
    default_hint = "`heygemd users list` shows the accounts and their keys."


class AccountExists(HeygemdError):
    code = "ACCOUNT_EXISTS"
    default_hint = "Choose another name, or change this account with `heygemd users role` / `heygemd users password`."


class ApiKey(BaseModel):
    """One API key of an account: its public id, the name its owner gave it, the hash of its secret."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    name: str
    hash: str
    created: AwareDatetime
    last_used: AwareDatetime | None = None


class Account(BaseModel):
    """One person: a name, a role, a password (hash; none for an account used only through keys), keys. ``id`` is
    drawn when the account is made: a session belongs to it, so an account removed and made again under the same
    name does not inherit the old one's sessions."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    name: str
    role: Role
    password: str | None = None
    created: AwareDatetime
    keys: tuple[ApiKey, ...] = ()


class UsersFile(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = 1
    accounts: tuple[Account, ...] = Field(default=())


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name) or name in RESERVED_NAMES:
        raise AccountError(f"{name!r} cannot be an account's name")
    return name


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise AccountError(f"{role!r} is not a role")
    return role


class Accounts:
    """The accounts in ``state_dir``'s users.json; ``clock`` is the wall clock (aware UTC)."""

    _dummy_hash: ClassVar[str | None] = None

    def __init__(
        self, state_dir: Path, *, clock: Callable[[], datetime] = utc_now, hasher: PasswordHasher | None = None
    ) -> None:
        self.state_dir = Path(state_dir)
        self.path = users_file(self.state_dir)
        self.clock = clock
        self.hasher = hasher if hasher is not None else PasswordHasher()
        self._seen: tuple[int, int, int] | None = None
        self._data = UsersFile()
        self._verified: dict[bytes, tuple[str, str]] = {}
        """Digest of a presented key -> (account id, key id), while users.json stays as it was."""
        self._touched: dict[str, datetime] = {}

    # -- reading

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _read(self) -> UsersFile:
        """users.json as it is on disk (empty when there is none)."""
        try:
            fd = open_regular(self.path, max_bytes=USERS_MAX_BYTES)
        except FileNotFoundError:
            return UsersFile()
        with os.fdopen(fd, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise ConfigError(
                    f"may be written by other users (mode {stat.filemode(mode)}); whoever can write it can make "
                    "himself admin, so heygemd does not use it",
                    path=self.path,
                    hint=f"chmod 600 {self.path} (and keep paths.state where only heygemd's user can write).",
                )
            data = fh.read(USERS_MAX_BYTES + 1)
        try:
            return UsersFile.model_validate_json(data)
        except ValidationError as exc:
            raise ConfigError(
                f"is not a heygemd accounts file ({str(exc).splitlines()[0]})",
                path=self.path,
                hint="Restore it from a backup, or move it away and make the accounts again (heygemd users add).",
            ) from None

    def _current(self) -> UsersFile:
        """users.json, read again only when it changed (its inode, time or size)."""
        signature = self._signature()
        if signature != self._seen or signature is None:
            self._data = self._read()
            self._seen = signature
            self._verified.clear()
        return self._data

    def all(self) -> tuple[Account, ...]:
        return self._current().accounts

    def any(self) -> bool:
        return bool(self.all())

    def get(self, name: str) -> Account | None:
        return next((a for a in self.all() if a.name == name), None)

    def by_id(self, account_id: str) -> Account | None:
        return next((a for a in self.all() if a.id == account_id), None)

    # -- checking

    def _matches(self, hashed: str | None, secret: str) -> bool:
        """Whether ``secret`` is the one ``hashed`` was made of. Without a hash (no such account or key, an account
        without a password) a stand-in is checked, so the answer takes as long as a wrong secret's."""
        if Accounts._dummy_hash is None:
            Accounts._dummy_hash = self.hasher.hash(secrets.token_hex(16))
        try:
            return self.hasher.verify(hashed or Accounts._dummy_hash, secret) and hashed is not None
        except (VerificationError, InvalidHashError):
            return False

    def check_password(self, name: str, password: str) -> Account | None:
        """The account ``name`` when ``password`` is its password, else None (in about the same time either
        way)."""
        account = self.get(name)
        hashed = account.password if account is not None else None
        return account if self._matches(hashed, password) and account is not None else None

    def key_account(self, presented: str) -> str | None:
        """The name of the account a key that looks like one of ours (``hgd_<id>_...``) claims to be of, right or
        wrong (so failures can be counted against it), else None."""
        key_id = _key_id(presented)
        for account in self.all() if key_id else ():
            if any(k.id == key_id for k in account.keys):
                return account.name
        return None

    def check_key(self, presented: str) -> tuple[Account, ApiKey] | None:
        """The account and key of an API key, else None (unknown, revoked, or wrong)."""
        self._current()
        digest = hashlib.sha256(presented.encode("utf-8", "replace")).digest()
        known = self._verified.get(digest)
        key_id = _key_id(presented)
        for account in self.all():
            for key in account.keys:
                if key.id != key_id:
                    continue
                if known == (account.id, key.id) or self._matches(key.hash, presented):
                    self._verified[digest] = (account.id, key.id)
                    self._touch(account, key)
                    return account, key
                return None
        self._matches(None, presented)
        return None

    def _touch(self, account: Account, key: ApiKey) -> None:
        """Record the key's use, at most every LAST_USED_EVERY_S (a share refusing the write only loses that)."""
        now = self.clock()
        last = self._touched.get(key.id) or key.last_used
        if last is not None and (now - last).total_seconds() < LAST_USED_EVERY_S:
            return
        self._touched[key.id] = now

        def touched(data: UsersFile) -> UsersFile:
            return _replace_account(
                data,
                account.name,
                lambda a: a.model_copy(
                    update={
                        "keys": tuple(k.model_copy(update={"last_used": now}) if k.id == key.id else k for k in a.keys)
                    }
                ),
            )

        with contextlib.suppress(OSError, NoSuchAccount):
            self._change(touched, keep_verified=True)

    # -- changing

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        own_dir(self.state_dir)
        with exclusive_lock(users_lock(self.state_dir)):
            yield

    def _change(self, change: Callable[[UsersFile], UsersFile], *, keep_verified: bool = False) -> UsersFile:
        """Apply ``change`` to users.json as it is now, under the lock, and write the result atomically (mode
        600)."""
        with self._locked():
            data = change(self._read())
            with atomic_writer(self.path) as fh:
                os.fchmod(fh.fileno(), 0o600)
                fh.write(data.model_dump_json(indent=2).encode("utf-8") + b"\n")
            verified = dict(self._verified)
            self._data, self._seen = data, self._signature()
            self._verified = verified if keep_verified else {}
        return data

    def add(self, name: str, role: str, password: str | None) -> Account:
        """A new account (AccountExists when the name is taken)."""
        account = Account(
            id=secrets.token_hex(8),
            name=check_name(name),
            role=check_role(role),
            password=self.hasher.hash(password) if password else None,
            created=self.clock(),
        )

        def added(data: UsersFile) -> UsersFile:
            if any(a.name == name for a in data.accounts):
                raise AccountExists(f"there is already an account {name!r}")
            return data.model_copy(update={"accounts": (*data.accounts, account)})

        self._change(added)
        return account

    def remove(self, name: str) -> Account:
        """Remove an account: its keys stop working and its sessions end at their next request."""
        removed = self._existing(name)
        self._change(
            lambda data: data.model_copy(update={"accounts": tuple(a for a in data.accounts if a.name != name)})
        )
        return removed

    def set_role(self, name: str, role: str) -> Account:
        checked = check_role(role)
        data = self._change(lambda d: _replace_account(d, name, lambda a: a.model_copy(update={"role": checked})))
        return next(a for a in data.accounts if a.name == name)

    def set_password(self, name: str, password: str | None) -> Account:
        hashed = self.hasher.hash(password) if password else None
        data = self._change(lambda d: _replace_account(d, name, lambda a: a.model_copy(update={"password": hashed})))
        return next(a for a in data.accounts if a.name == name)

    def add_key(self, name: str, key_name: str) -> tuple[ApiKey, str]:
        """A new API key for ``name``: the key and its secret, ``hgd_<id>_<secret>``, shown this once only."""
        if not key_name.strip() or len(key_name) > 64 or not key_name.isprintable():
            raise AccountError(
                f"{key_name!r} cannot be a key's name", hint="Name a key after its script: 1-64 characters."
            )
        key_id = secrets.token_hex(6)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        key = ApiKey(id=key_id, name=key_name.strip(), hash=self.hasher.hash(secret), created=self.clock())

        def added(account: Account) -> Account:
            if any(k.name == key.name for k in account.keys):
                raise AccountExists(
                    f"account {name!r} already has a key named {key.name!r}", hint="Give the new key another name."
                )
            return account.model_copy(update={"keys": (*account.keys, key)})

        self._change(lambda data: _replace_account(data, name, added))
        return key, secret

    def revoke_key(self, name: str, key_name: str) -> ApiKey:
        """Revoke ``name``'s key ``key_name`` (by its name or id): it is refused from its next request on."""
        account = self._existing(name)
        key = next((k for k in account.keys if key_name in (k.name, k.id)), None)
        if key is None:
            raise NoSuchAccount(f"account {name!r} has no key {key_name!r}")
        self._change(
            lambda data: _replace_account(
                data, name, lambda a: a.model_copy(update={"keys": tuple(k for k in a.keys if k.id != key.id)})
            )
        )
        return key

    def _existing(self, name: str) -> Account:
        account = self.get(name)
        if account is None:
            raise NoSuchAccount(f"no account {name!r}")
        return account


def _replace_account(data: UsersFile, name: str, change: Callable[[Account], Account]) -> UsersFile:
    if not any(a.name == name for a in data.accounts):
        raise NoSuchAccount(f"no account {name!r}")
    return data.model_copy(update={"accounts": tuple(change(a) if a.name == name else a for a in data.accounts)})


def _key_id(presented: str) -> str | None:
    if not presented.startswith(KEY_PREFIX):
        return None
    key_id, _, rest = presented[len(KEY_PREFIX) :].partition("_")
    return key_id if key_id and rest else None
