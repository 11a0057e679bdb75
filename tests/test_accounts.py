"""The accounts file: hashes only, written atomically with mode 600, changed under a lock on the file as it is;
passwords and API keys checked, keys revoked at once, their last use recorded; a file others may write refused."""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from heygemd.accounts import AccountError, AccountExists, Accounts, NoSuchAccount, allows
from heygemd.errors import ConfigError

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
"""Argon2id with tiny costs: the tests check what is stored and compared, not the cost."""


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def test_roles_each_allow_what_the_one_before_does() -> None:
    assert allows("admin", "editor") and allows("editor", "viewer") and allows("viewer", "viewer")
    assert not allows("viewer", "editor") and not allows("editor", "admin")


def test_only_hashes_are_stored_in_a_file_only_heygemd_may_read(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path, hasher=FAST)
    accounts.add("anna", "editor", "correct horse battery")
    key, secret = accounts.add_key("anna", "nightly upload")
    path = tmp_path / "users.json"
    text = path.read_text(encoding="utf-8")
    assert "correct horse battery" not in text and secret not in text and secret.split("_")[2] not in text
    stored = json.loads(text)["accounts"][0]
    assert stored["password"].startswith("$argon2id$") and stored["keys"][0]["hash"].startswith("$argon2id$")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".users.json")], "no temporary file left"
    assert secret.startswith(f"hgd_{key.id}_")


def test_passwords_and_keys_are_checked_and_a_revoked_key_is_refused_at_once(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path, hasher=FAST)
    anna = accounts.add("anna", "editor", "s3cret-pass")
    assert accounts.check_password("anna", "s3cret-pass") == anna
    assert accounts.check_password("anna", "wrong") is None
    assert accounts.check_password("nobody", "s3cret-pass") is None
    _key, secret = accounts.add_key("anna", "ci")
    found = accounts.check_key(secret)
    assert found is not None and found[0].name == "anna" and found[1].name == "ci"
    assert accounts.check_key(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert accounts.check_key("hgd_000000000000_x") is None and accounts.check_key("not a key") is None
    other_process = Accounts(tmp_path, hasher=FAST)  # the CLI, while the server runs
    other_process.revoke_key("anna", "ci")
    assert accounts.check_key(secret) is None, "a key checked before is refused once revoked"


def test_a_key_records_its_last_use_at_most_once_a_minute(tmp_path: Path) -> None:
    clock = Clock()
    accounts = Accounts(tmp_path, hasher=FAST, clock=clock)
    accounts.add("ci", "editor", None)
    _key, secret = accounts.add_key("ci", "deploy")
    assert accounts.check_key(secret) is not None
    first = Accounts(tmp_path).get("ci")
    assert first is not None and first.keys[0].last_used == clock.now
    clock.now += timedelta(seconds=30)
    assert accounts.check_key(secret) is not None
    assert Accounts(tmp_path).get("ci").keys[0].last_used == first.keys[0].last_used  # type: ignore[union-attr]
    clock.now += timedelta(seconds=31)
    assert accounts.check_key(secret) is not None
    assert Accounts(tmp_path).get("ci").keys[0].last_used == clock.now  # type: ignore[union-attr]


def test_two_processes_changing_the_file_keep_each_others_changes(tmp_path: Path) -> None:
    cli, server = Accounts(tmp_path, hasher=FAST), Accounts(tmp_path, hasher=FAST)
    cli.add("anna", "viewer", "pw-anna-123")
    assert server.get("anna") is not None  # read again: the file changed
    server.add("bob", "admin", "pw-bob-123")
    cli.set_role("anna", "editor")
    assert sorted((a.name, a.role) for a in Accounts(tmp_path).all()) == [("anna", "editor"), ("bob", "admin")]


def test_names_roles_and_duplicates_are_refused_with_clear_errors(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path, hasher=FAST)
    for name in ("Anna", "token", "local", "a b", "", "x" * 33, "../x"):
        with pytest.raises(AccountError):
            accounts.add(name, "viewer", "pw")
    with pytest.raises(AccountError):
        accounts.add("anna", "owner", "pw")
    accounts.add("anna", "viewer", "pw")
    with pytest.raises(AccountExists):
        accounts.add("anna", "admin", "pw")
    with pytest.raises(NoSuchAccount):
        accounts.remove("bob")
    with pytest.raises(NoSuchAccount):
        accounts.revoke_key("anna", "none")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".users.json")], "no temporary file left"


def test_removing_an_account_ends_its_keys(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path, hasher=FAST)
    accounts.add("anna", "editor", "pw")
    _key, secret = accounts.add_key("anna", "ci")
    assert accounts.check_key(secret) is not None
    Accounts(tmp_path).remove("anna")
    assert accounts.check_key(secret) is None and accounts.get("anna") is None


def test_a_file_others_may_write_or_a_link_is_refused(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path, hasher=FAST)
    accounts.add("anna", "admin", "pw")
    path = tmp_path / "users.json"
    os.chmod(path, 0o666)
    with pytest.raises(ConfigError, match="make himself admin"):
        Accounts(tmp_path).all()
    os.chmod(path, 0o600)
    assert Accounts(tmp_path).get("anna") is not None
    path.rename(tmp_path / "elsewhere.json")
    path.symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(Exception, match="symbolic link"):
        Accounts(tmp_path).all()
