"""Signed callbacks (heygemd.notify.callbacks) to a real receiver on 127.0.0.1: the signature verifies with the
verifier docs/notifications.md prints, retries keep the delivery id and follow the backoff (an injected clock:
nothing sleeps through it), pending deliveries survive a restart and a SIGKILL in the middle of a send, and only
allowed hosts and addresses are ever sent to."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from pydantic import SecretStr

from heygemd.daemon.status import CallbackRecord
from heygemd.errors import CallbackNotAllowed
from heygemd.notify.callbacks import (
    BACKOFF_S,
    CALLBACKS,
    LEASE_S,
    PENDING,
    SENDING,
    CallbackQueue,
    CallbackSender,
    check_callback_url,
)
from heygemd.settings import NotifySettings
from tests.daemon.daemon_process import wait_until
from tests.httpserver import Answer, Receiver, answers, receiver

REPO = Path(__file__).resolve().parents[2]
SECRET = "callback-secret-0123456789"
BODY = json.dumps({"job_id": "lesson-01", "state": "done", "note": "ünïcode"}, ensure_ascii=False).encode()
T0 = 1_767_225_600.0


def documented_verifier() -> Callable[..., bool]:
    """The ``verify`` function exactly as docs/notifications.md prints it."""
    text = (REPO / "docs" / "notifications.md").read_text(encoding="utf-8")
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "def verify(" in block]
    namespace: dict[str, object] = {}
    exec(code, namespace)
    return namespace["verify"]  # type: ignore[return-value]


def settings(*hosts: str, secret: str | None = SECRET) -> NotifySettings:
    return NotifySettings(signing_secret=SecretStr(secret) if secret else None, callback_hosts=hosts)


def make_queue(
    state: Path,
    *hosts: str,
    resolver: Callable[[str, int], Sequence[str]] | None = None,
    records: list[tuple[str, CallbackRecord]] | None = None,
    clock: Callable[[], float] = lambda: T0,
) -> CallbackQueue:
    notify = settings(*hosts)
    sender = CallbackSender(notify) if resolver is None else CallbackSender(notify, resolver=resolver)
    on_change = None if records is None else (lambda job, record: records.append((job, record)))
    return CallbackQueue(state, sender, on_change=on_change, clock=clock)


def test_a_delivery_is_signed_and_verifies_with_the_documented_code(tmp_path: Path) -> None:
    verify = documented_verifier()
    records: list[tuple[str, CallbackRecord]] = []
    with receiver() as server:
        queue = make_queue(tmp_path, "127.0.0.1", records=records)
        queued = queue.enqueue("lesson-01", server.url("/hook?token=abc"), BODY)
        (done,) = queue.step(T0)
        (seen,) = server.seen
    assert seen.method == "POST" and seen.path == "/hook?token=abc" and seen.body == BODY
    assert seen.headers["Heygemd-Event"] == "job.finished"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Heygemd-Delivery"] == queued.delivery == done.delivery
    header = seen.headers["Heygemd-Signature"]
    assert header.startswith(f"t={int(T0)},v1=")
    assert verify(SECRET.encode(), BODY, header, now=T0)
    assert verify(SECRET.encode(), BODY, header, now=T0 + 299)
    assert not verify(SECRET.encode(), BODY, header, now=T0 + 301), "outside the timestamp window"
    assert not verify(b"another-secret-0123456789", BODY, header, now=T0)
    assert not verify(SECRET.encode(), BODY.replace(b"done", b"fail"), header, now=T0)
    assert done.state == "delivered" and done.attempts == 1 and done.host == "127.0.0.1" and done.last_error is None
    assert [r.state for _, r in records] == ["pending", "delivered"] and {j for j, _ in records} == {"lesson-01"}
    assert "token" not in done.model_dump_json(), "the record names the host, never the URL"
    assert queue.pending() == [] and list((tmp_path / CALLBACKS / SENDING).iterdir()) == []


def test_500_twice_then_200_is_three_attempts_with_one_delivery_id_on_the_backoff(tmp_path: Path) -> None:
    with receiver(answers(500, 500)) as server:
        queue = make_queue(tmp_path, "127.0.0.1")
        queue.enqueue("lesson-01", server.url("/hook"), BODY)
        (first,) = queue.step(T0)
        assert first.state == "pending" and first.last_error == "answered 500 Internal Server Error"
        assert first.next_attempt is not None and first.next_attempt.timestamp() == T0 + BACKOFF_S[0]
        assert queue.step(T0 + BACKOFF_S[0] - 1) == [], "not due before its backoff"
        (second,) = queue.step(T0 + BACKOFF_S[0])
        assert second.attempts == 2 and second.next_attempt is not None
        assert second.next_attempt.timestamp() == T0 + BACKOFF_S[0] + BACKOFF_S[1]
        assert queue.step(T0 + BACKOFF_S[0] + BACKOFF_S[1] - 1) == []
        (third,) = queue.step(T0 + BACKOFF_S[0] + BACKOFF_S[1])
        ids = {s.headers["Heygemd-Delivery"] for s in server.seen}
    assert third.state == "delivered" and third.attempts == 3
    assert len(server.seen) == 3 and ids == {first.delivery}
    assert [s.body for s in server.seen] == [BODY] * 3


def test_a_delivery_is_given_up_after_the_last_backoff(tmp_path: Path) -> None:
    with receiver(lambda _: Answer(503)) as server:
        queue = make_queue(tmp_path, "127.0.0.1")
        queue.enqueue("lesson-01", server.url("/hook"), BODY)
        now, states = T0, []
        for wait in (0.0, *BACKOFF_S):
            now += wait
            (record,) = queue.step(now)
            states.append(record.state)
        assert queue.step(now + 10 * BACKOFF_S[-1]) == []
    assert states == ["pending"] * len(BACKOFF_S) + ["failed"]
    assert record.attempts == len(BACKOFF_S) + 1 and record.last_error == "answered 503 Service Unavailable"
    assert len(server.seen) == len(BACKOFF_S) + 1 and queue.pending() == []


def test_a_redirect_is_not_followed_and_counts_as_a_failure(tmp_path: Path) -> None:
    with receiver(lambda s: Answer(302, headers={"Location": "/elsewhere"})) as server:
        queue = make_queue(tmp_path, "127.0.0.1")
        queue.enqueue("lesson-01", server.url("/hook"), BODY)
        (record,) = queue.step(T0)
    assert record.state == "pending" and "never follow" in (record.last_error or "")
    assert [s.path for s in server.seen] == ["/hook"]


def test_a_receiver_that_trickles_its_answer_fails_the_attempt_after_the_timeout(tmp_path: Path) -> None:
    """A byte every 0.05 s never trips the timeout of one read: the answer as a whole must come within it."""
    padding = {"X-Padding": "p" * 200}  # a status line and headers of ~270 bytes: 13 s at that pace
    with receiver(lambda s: Answer(200, headers=padding, drip_s=0.05)) as server:
        queue = CallbackQueue(tmp_path, CallbackSender(settings("127.0.0.1"), timeout=1.0), clock=lambda: T0)
        queue.enqueue("lesson-01", server.url("/hook"), BODY)
        began = time.monotonic()
        (record,) = queue.step(T0)
        assert time.monotonic() - began < 5, "the sender is free again soon after the timeout"
    assert record.state == "pending" and record.last_error == "no whole answer within 1 s"


def test_a_new_queue_on_the_same_folder_delivers_what_the_old_one_left(tmp_path: Path) -> None:
    with receiver(answers(500)) as server:
        make_queue(tmp_path, "127.0.0.1").enqueue("lesson-01", server.url("/hook"), BODY)
        make_queue(tmp_path, "127.0.0.1").step(T0)  # 500: pending again
        (record,) = make_queue(tmp_path, "127.0.0.1").step(T0 + BACKOFF_S[0])
    assert record.state == "delivered" and record.attempts == 2
    assert len({s.headers["Heygemd-Delivery"] for s in server.seen}) == 1


def test_the_thread_sends_without_being_stepped(tmp_path: Path) -> None:
    with receiver() as server:
        queue = CallbackQueue(tmp_path, CallbackSender(settings("127.0.0.1")), poll_s=60.0)
        queue.start()
        try:
            queue.enqueue("lesson-01", server.url("/hook"), BODY)  # wakes the thread at once, not after 60 s
            wait_until(lambda: server.seen, 10, "the delivery")
        finally:
            queue.stop()
    wait_until(lambda: queue.pending() == [] and not list((tmp_path / CALLBACKS / SENDING).iterdir()), 5, "cleanup")


def test_a_claim_held_by_another_sender_waits_for_its_lease(tmp_path: Path) -> None:
    with receiver() as server:
        queue = make_queue(tmp_path, "127.0.0.1")
        record = queue.enqueue("lesson-01", server.url("/hook"), BODY)
        pending = tmp_path / CALLBACKS / PENDING / f"{record.delivery}.json"
        held = tmp_path / CALLBACKS / SENDING / f"{record.delivery}.{int(T0 + LEASE_S)}.json"
        held.parent.mkdir()
        os.rename(pending, held)  # as another process does while it sends
        assert queue.step(T0 + LEASE_S - 1) == [] and server.seen == []
        (done,) = queue.step(T0 + LEASE_S + 1)
    assert done.state == "delivered" and not held.exists()


def test_two_senders_on_one_folder_attempt_a_delivery_once(tmp_path: Path) -> None:
    with receiver(answers(500)) as server:
        first, second = make_queue(tmp_path, "127.0.0.1"), make_queue(tmp_path, "127.0.0.1")
        first.enqueue("lesson-01", server.url("/hook"), BODY)
        assert [d.next_at for d in first.pending()] == [T0]  # what the first sender has seen
        (record,) = second.step(T0)  # 500: due again in 30 s
        assert first.step(T0 + 1) == [], "the first sender sees it is not due any more"
        (again,) = first.step(T0 + BACKOFF_S[0])
    assert record.state == "pending" and again.state == "delivered" and len(server.seen) == 2


def test_a_foreign_file_in_the_queue_is_skipped_not_followed(tmp_path: Path) -> None:
    with receiver() as server:
        queue = make_queue(tmp_path, "127.0.0.1")
        record = queue.enqueue("lesson-01", server.url("/hook"), BODY)
        secret = tmp_path / "secret.json"
        secret.write_text("{}", encoding="utf-8")
        (tmp_path / CALLBACKS / PENDING / f"{'0' * 32}.json").symlink_to(secret)
        (tmp_path / CALLBACKS / PENDING / f"{'1' * 32}.json").write_text("not json", encoding="utf-8")
        (done,) = queue.step(T0)
    assert done.delivery == record.delivery and done.state == "delivered"


KILLED_SENDER = """
import sys
from pathlib import Path
from pydantic import SecretStr
from heygemd.notify.callbacks import CallbackQueue, CallbackSender
from heygemd.settings import NotifySettings

notify = NotifySettings(signing_secret=SecretStr(sys.argv[3]), callback_hosts=("127.0.0.1",))
queue = CallbackQueue(Path(sys.argv[1]), CallbackSender(notify))
record = queue.enqueue("lesson-01", sys.argv[2], b'{"job_id": "lesson-01", "state": "done"}')
print("DELIVERY", record.delivery, flush=True)
queue.start()
sys.stdin.read()  # sends from its thread until killed
"""


def test_a_sigkill_in_the_middle_of_a_send_is_delivered_by_the_next_process(tmp_path: Path) -> None:
    # the receiver takes the first POST and never answers it; it answers 200 to the next
    server = Receiver(lambda _: Answer(hold=server.release) if len(server.seen) == 1 else Answer(200)).start()
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", KILLED_SENDER, str(tmp_path), server.url("/hook"), SECRET],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            text=True,
        )
        try:
            assert process.stdout is not None
            lines = iter(process.stdout.readline, "")
            delivery = next(line.split()[1] for line in lines if line.startswith("DELIVERY "))
            wait_until(lambda: server.seen, 30, "the first process's attempt")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        assert process.returncode == -signal.SIGKILL
        assert [p.name.split(".")[0] for p in (tmp_path / CALLBACKS / SENDING).iterdir()] == [delivery]

        queue = make_queue(tmp_path, "127.0.0.1", clock=time.time)
        assert queue.step() == [] and len(server.seen) == 1, "the dead sender's lease still holds it"
        (record,) = queue.step(time.time() + LEASE_S + 1)
    finally:
        server.close()
    first, second = server.seen
    assert record.state == "delivered" and record.delivery == delivery
    assert first.headers["Heygemd-Delivery"] == second.headers["Heygemd-Delivery"] == delivery
    signed = second.headers["Heygemd-Signature"]
    assert documented_verifier()(SECRET.encode(), second.body, signed, now=time.time() + LEASE_S)
    assert queue.pending() == [] and list((tmp_path / CALLBACKS / SENDING).iterdir()) == []


def test_a_host_not_allowed_is_refused_at_submission() -> None:
    with pytest.raises(CallbackNotAllowed, match="notify.callback_hosts") as caught:
        check_callback_url("https://evil.example/hook", settings("hooks.example.com"))
    assert caught.value.code == "CALLBACK_NOT_ALLOWED" and "callback_hosts" in caught.value.hint
    check_callback_url("https://hooks.example.com/webhook-waiting/abc", settings("hooks.example.com"))
    with pytest.raises(CallbackNotAllowed, match="notify.signing_secret"):
        check_callback_url("https://hooks.example.com/hook", settings("hooks.example.com", secret=None))
    with pytest.raises(CallbackNotAllowed, match="http:// or https://"):
        check_callback_url("file:///etc/passwd", settings("hooks.example.com"))


def test_a_metadata_address_is_refused_even_when_a_network_allows_it(tmp_path: Path) -> None:
    with pytest.raises(CallbackNotAllowed, match="never sends to"):
        check_callback_url("http://169.254.169.254/latest/meta-data/", settings("169.254.0.0/16", "0.0.0.0/0"))
    # a name that resolves there when the delivery is sent (DNS repointed after the submission)
    with receiver() as server:
        queue = make_queue(tmp_path, "hooks.example.com", "0.0.0.0/0", resolver=lambda host, port: ["169.254.169.254"])
        check_callback_url(f"http://hooks.example.com:{server.port}/hook", settings("hooks.example.com"))
        queue.enqueue("lesson-01", f"http://hooks.example.com:{server.port}/hook", BODY)
        (record,) = queue.step(T0)
    assert record.state == "pending" and "169.254.169.254" in (record.last_error or "")
    assert server.seen == []


def test_a_name_repointed_to_loopback_is_not_sent_to_unless_its_network_is_listed(tmp_path: Path) -> None:
    with receiver() as server:
        url = f"http://hooks.example.com:{server.port}/hook"
        loopback = lambda host, port: ["127.0.0.1"]  # noqa: E731
        refused = make_queue(tmp_path / "a", "hooks.example.com", resolver=loopback)
        refused.enqueue("lesson-01", url, BODY)
        (record,) = refused.step(T0)
        assert record.state == "pending" and "loopback or private" in (record.last_error or "")
        assert server.seen == []
        allowed = make_queue(tmp_path / "b", "hooks.example.com", "127.0.0.0/8", resolver=loopback)
        allowed.enqueue("lesson-01", url, BODY)
        (record,) = allowed.step(T0)
    assert record.state == "delivered" and server.seen[0].headers["Host"] == f"hooks.example.com:{server.port}"


def test_pending_files_are_private_and_hold_no_secret(tmp_path: Path) -> None:
    queue = make_queue(tmp_path, "127.0.0.1")
    record = queue.enqueue("lesson-01", "http://127.0.0.1:9/hook?token=abc", BODY)
    assert (tmp_path / CALLBACKS).stat().st_mode & 0o777 == 0o700
    text = (tmp_path / CALLBACKS / PENDING / f"{record.delivery}.json").read_text(encoding="utf-8")
    assert SECRET not in text and json.loads(text)["body"] == BODY.decode()
