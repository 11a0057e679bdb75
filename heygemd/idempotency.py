"""Idempotent submissions: an ``Idempotency-Key`` a client sends with a request stands for that request for TTL_S
(24 h). The same key with the same request answers what the first one answered, instead of doing it again; the
same key with another request is refused (IDEMPOTENCY_MISMATCH). Workflow tools retry a request that timed out;
this makes their retries safe.

Kept in the state folder, so it holds across restarts and for every process sharing the folder:
``<state>/idempotency/<sha256 of the key>/<n>.json``. The first request with a key creates ``0.json`` with an
exclusive create (``O_EXCL``): of two at the same time exactly one wins; the other is told to come back
(IDEMPOTENCY_BUSY) while the first is in progress, and gets its answer afterwards. ``n.json`` holds the request's
fingerprint and time, and once it is answered the answer (written atomically over it). A request that failed
gives its key back (:meth:`IdempotencyStore.release`). A key whose newest record expired (TTL_S after it was
answered), or whose request never finished (its process was killed: LEASE_S after it began), is taken by the next
request with ``n + 1``, again with an exclusive create.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from heygemd.errors import BadIdempotencyKey, HeygemdError, IdempotencyBusy, IdempotencyMismatch
from heygemd.fsutil import atomic_write_bytes, own_dir, own_subdirs, read_regular, remove_tree
from heygemd.layout import IDEMPOTENCY

TTL_S = 24 * 3600.0
"""How long a key stands for its request after it was answered."""
LEASE_S = 3600.0
"""A request that began this long ago without an answer is taken to have died with its process."""
MAX_KEY_LENGTH = 255
MAX_RECORD_BYTES = 1024 * 1024


class KeyRecord(BaseModel):
    """``<n>.json``: the request a key stands for, and its answer once there is one."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    fingerprint: str
    began: float
    answered: float | None = None
    answer: dict[str, Any] | None = None


@dataclass(frozen=True)
class Claim:
    """The request holds its key: it goes ahead, then calls :meth:`IdempotencyStore.finish` (or ``release``)."""

    key: str
    path: Path
    record: KeyRecord


@dataclass(frozen=True)
class Replay:
    """The key's request was answered before: answer ``answer`` again (HTTP 200) instead of doing it again."""

    answer: dict[str, Any]


def fingerprint(*parts: bytes) -> str:
    """A request's fingerprint from its parts (method, path, body, ...): hex SHA-256, each part length-prefixed so
    no two different part lists collide."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def check_key(key: str) -> str:
    """``key`` when it is 1..MAX_KEY_LENGTH printable ASCII characters (BadIdempotencyKey if not)."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
        raise BadIdempotencyKey(f"the Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")
    return key


def _generation(path: Path) -> int:
    stem = path.name.removesuffix(".json")
    return int(stem) if stem.isdigit() and path.name.endswith(".json") else -1


class IdempotencyStore:
    """The keys of ``state_dir``. ``clock`` gives Unix time (tests pass their own)."""

    def __init__(self, state_dir: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.state_dir = state_dir
        self.clock = clock

    def _folder(self, key: str) -> Path:
        return own_dir(self.state_dir, IDEMPOTENCY, hashlib.sha256(key.encode("ascii")).hexdigest())

    def _newest(self, folder: Path) -> tuple[int, KeyRecord | None]:
        """The newest generation in ``folder`` and its record (None: being written, or not readable)."""
        generations = [g for g in map(_generation, folder.iterdir()) if g >= 0]
        if not generations:
            return -1, None
        newest = max(generations)
        try:
            data = read_regular(folder / f"{newest}.json", max_bytes=MAX_RECORD_BYTES)
            return newest, KeyRecord.model_validate_json(data)
        except (FileNotFoundError, HeygemdError, ValidationError):  # gone, not a plain file, not (yet) a record
            return newest, None

    def begin(self, key: str, request: str) -> Claim | Replay:
        """Take ``key`` for the request with fingerprint ``request``: a Claim when this request goes ahead, a Replay
        when the key's request was answered before. IdempotencyMismatch when the key stands for another request,
        IdempotencyBusy while its request is still in progress, BadIdempotencyKey for a malformed key."""
        check_key(key)
        for _ in range(3):  # a prune removing the key's folder meanwhile: look again
            now = self.clock()
            folder = self._folder(key)
            newest, record = self._newest(folder)
            if record is not None and not self._expired(record, now):
                if record.fingerprint != request:
                    raise IdempotencyMismatch(
                        "this Idempotency-Key was used for a different request less than 24 hours ago"
                    )
                if record.answer is None:
                    raise IdempotencyBusy("the first request with this Idempotency-Key is still in progress")
                return Replay(record.answer)
            if newest >= 0 and record is None and not self._stale_file(folder / f"{newest}.json", now):
                raise IdempotencyBusy("the first request with this Idempotency-Key is still in progress")
            claim = self._create(key, folder / f"{newest + 1}.json", KeyRecord(fingerprint=request, began=now))
            if claim is not None:
                return claim
        raise IdempotencyBusy("another request with this Idempotency-Key is starting at the same moment")

    def _expired(self, record: KeyRecord, now: float) -> bool:
        if record.answered is None:
            return now - record.began >= LEASE_S
        return now - record.answered >= TTL_S

    def _stale_file(self, path: Path, now: float) -> bool:
        """A generation that cannot be read: stale once LEASE_S old (a kill between its create and its write)."""
        try:
            return now - path.stat().st_mtime >= LEASE_S
        except FileNotFoundError:
            return True

    def _create(self, key: str, path: Path, record: KeyRecord) -> Claim | None:
        """Create ``path`` exclusively with ``record``; None when another request created it first (or the folder
        went away)."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except (FileExistsError, FileNotFoundError):
            return None
        with os.fdopen(fd, "wb") as fh:
            fh.write(record.model_dump_json().encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        return Claim(key, path, record)

    def finish(self, claim: Claim, answer: dict[str, Any]) -> None:
        """Record the answer to the claimed request (JSON-able): the key's later requests get it."""
        json.dumps(answer)  # a TypeError here, before the record is replaced, for an answer that is not JSON
        done = claim.record.model_copy(update={"answer": answer, "answered": self.clock()})
        self._folder(claim.key)  # made again if a prune removed it meanwhile
        atomic_write_bytes(claim.path, done.model_dump_json().encode("utf-8"))

    def release(self, claim: Claim) -> None:
        """Give the key back after the claimed request failed: the next request with it goes ahead."""
        claim.path.unlink(missing_ok=True)

    def prune(self) -> int:
        """Remove the keys whose newest record expired more than LEASE_S ago; returns how many were removed."""
        now = self.clock()
        removed = 0
        for folder in own_subdirs(self.state_dir, IDEMPOTENCY):
            newest, record = self._newest(folder)
            path = folder / f"{newest}.json"
            if newest < 0 or (record is None and self._stale_file(path, now - LEASE_S)):
                gone = True
            else:
                gone = record is not None and self._expired(record, now - LEASE_S)
            if gone:
                remove_tree(folder)
                removed += 1
        return removed
