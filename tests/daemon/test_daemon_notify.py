"""The real daemon under a systemd-like supervisor: sd_notify datagrams on a socket we own, as systemd reads them.

READY=1 once the engine is warm and the watcher runs; STATUS= naming the current job; WATCHDOG=1 keeps coming
while a job renders; STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path

from tests.daemon.daemon_process import Media


class NotifySocket:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET; collects every message in order."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            with self._lock:
                self.messages.extend(data.decode().split("\n"))

    def seen(self, prefix: str) -> list[str]:
        with self._lock:
            return [m for m in self.messages if m.startswith(prefix)]

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self.sock.close()


def test_ready_status_watchdog_and_stopping(daemon_factory, media: Media, tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        d = daemon_factory("notify", settle_seconds=600.0)
        d.start(extra_env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"})
        d.wait_for(lambda: notify.seen("READY=1"), 60, "READY=1 on the notify socket")
        assert d.has_event("daemon.ready")

        d.submit("lesson 7", {"voice.wav": media.long_speech, "a.mp4": media.face_a})
        d.wait_for(lambda: [m for m in notify.seen("STATUS=") if "lesson 7" in m], 30, "STATUS= naming the job")
        pings_before = len(notify.seen("WATCHDOG=1"))
        status = d.wait_finished("lesson 7")
        assert status["state"] == "done"
        # WATCHDOG_USEC=1 s: pings every 0.5 s while the work loop reports progress, job included
        assert len(notify.seen("WATCHDOG=1")) > pings_before

        d.send(signal.SIGTERM)
        assert d.wait_exit(20) == 0
        stopping = notify.seen("STOPPING=1")
        # the first as soon as the loop sees the first SIGTERM (shutdown has begun), the last on the way out
        statuses = notify.seen("STATUS=")
        assert len(stopping) == 2 and statuses[-2].startswith("STATUS=stopping:") and statuses[-1] == "STATUS=stopped"
    finally:
        notify.close()


def test_a_job_waits_for_an_in_flight_file_and_says_so_once(daemon_factory, media: Media) -> None:
    d = daemon_factory("inflight", settle_seconds=600.0).start().wait_ready()
    job = d.submit(
        "lesson 8", {"voice.wav": media.speech, "a.mp4": media.face_a, "b.mp4.part": media.face_b}
    )  # .ready is there, b is not
    d.wait_for(lambda: d.has_event("job.waiting", job_name="lesson 8"), 30, "job.waiting in the log")
    assert (job / "a.mp4").is_file() and not d.claimed("lesson 8")
    (job / "b.mp4.part").rename(job / "b.mp4")  # the upload completes
    status = d.wait_finished("lesson 8")
    assert status["state"] == "done"
    assert sum(1 for e in d.events() if e.get("event") == "job.waiting") == 1
