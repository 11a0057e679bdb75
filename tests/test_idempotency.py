"""Idempotency keys (heygemd.idempotency) in a real state folder: replays, mismatches, restarts, expiry, and
concurrent requests with one key of which exactly one goes ahead."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from heygemd.errors import BadIdempotencyKey, IdempotencyBusy, IdempotencyMismatch
from heygemd.idempotency import IDEMPOTENCY, LEASE_S, TTL_S, Claim, IdempotencyStore, Replay, fingerprint

BODY = fingerprint(b"POST", b"/api/jobs", b'{"name": "lesson-01", "audio_url": "https://cdn.example/a.mp3"}')
OTHER = fingerprint(b"POST", b"/api/jobs", b'{"name": "lesson-02", "audio_url": "https://cdn.example/a.mp3"}')
ANSWER = {"job_id": "lesson-01", "status_url": "/api/jobs/lesson-01"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_767_225_600.0

    def __call__(self) -> float:
        return self.now


def test_same_key_same_request_answers_the_original(tmp_path: Path) -> None:
    store = IdempotencyStore(tmp_path)
    claim = store.begin("key-1", BODY)
    assert isinstance(claim, Claim)
    store.finish(claim, ANSWER)
    assert store.begin("key-1", BODY) == Replay(ANSWER)
    assert isinstance(store.begin("key-2", BODY), Claim), "another key is another request"


def test_same_key_another_request_is_a_mismatch(tmp_path: Path) -> None:
    store = IdempotencyStore(tmp_path)
    claim = store.begin("key-1", BODY)
    assert isinstance(claim, Claim)
    with pytest.raises(IdempotencyBusy):
        store.begin("key-1", BODY)
    with pytest.raises(IdempotencyMismatch) as caught:
        store.begin("key-1", OTHER)
    assert caught.value.code == "IDEMPOTENCY_MISMATCH"
    store.finish(claim, ANSWER)
    with pytest.raises(IdempotencyMismatch):
        store.begin("key-1", OTHER)


def test_a_key_holds_across_a_restart(tmp_path: Path) -> None:
    first = IdempotencyStore(tmp_path)
    claim = first.begin("key-1", BODY)
    assert isinstance(claim, Claim)
    first.finish(claim, ANSWER)
    restarted = IdempotencyStore(tmp_path)
    assert restarted.begin("key-1", BODY) == Replay(ANSWER)
    with pytest.raises(IdempotencyMismatch):
        restarted.begin("key-1", OTHER)


def test_concurrent_requests_with_one_key_one_goes_ahead(tmp_path: Path) -> None:
    start = threading.Barrier(8)
    results: list[object] = []

    def request() -> None:
        start.wait()
        try:
            results.append(IdempotencyStore(tmp_path).begin("key-1", BODY))
        except IdempotencyBusy as exc:
            results.append(exc)

    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    claims = [r for r in results if isinstance(r, Claim)]
    assert len(results) == 8 and len(claims) == 1
    assert all(isinstance(r, IdempotencyBusy) for r in results if r is not claims[0])


def test_a_failed_request_gives_its_key_back(tmp_path: Path) -> None:
    store = IdempotencyStore(tmp_path)
    claim = store.begin("key-1", BODY)
    assert isinstance(claim, Claim)
    store.release(claim)
    again = store.begin("key-1", OTHER)
    assert isinstance(again, Claim), "a key whose request failed stands for nothing yet"


def test_a_key_expires_after_a_day_and_a_dead_request_after_its_lease(tmp_path: Path) -> None:
    clock = Clock()
    store = IdempotencyStore(tmp_path, clock=clock)
    claim = store.begin("key-1", BODY)
    assert isinstance(claim, Claim)
    store.finish(claim, ANSWER)
    clock.now += TTL_S - 1
    assert store.begin("key-1", BODY) == Replay(ANSWER)
    clock.now += 1
    renewed = store.begin("key-1", OTHER)
    assert isinstance(renewed, Claim) and renewed.path.name == "1.json"
    clock.now += LEASE_S - 1  # its process was killed: no answer will ever come
    with pytest.raises(IdempotencyBusy):
        store.begin("key-1", OTHER)
    clock.now += 1
    assert isinstance(store.begin("key-1", OTHER), Claim)


def test_prune_removes_expired_keys_only(tmp_path: Path) -> None:
    clock = Clock()
    store = IdempotencyStore(tmp_path, clock=clock)
    for key in ("old", "new"):
        claim = store.begin(key, BODY)
        assert isinstance(claim, Claim)
        store.finish(claim, ANSWER)
        clock.now += TTL_S
    clock.now -= TTL_S - LEASE_S + 1  # "old" expired LEASE_S - 1 s ago, "new" is LEASE_S - 1 s old
    assert store.prune() == 0, "an expired key is kept for LEASE_S more"
    clock.now += 1
    assert store.prune() == 1
    assert len(list((tmp_path / IDEMPOTENCY).iterdir())) == 1
    assert store.begin("new", BODY) == Replay(ANSWER)


@pytest.mark.parametrize("key", ["", "x" * 256, "ключ", "a\nb"])
def test_malformed_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(BadIdempotencyKey):
        IdempotencyStore(tmp_path).begin(key, BODY)


def test_fingerprints_of_different_part_lists_differ() -> None:
    assert fingerprint(b"ab", b"c") != fingerprint(b"a", b"bc") != fingerprint(b"abc")
