"""heygemd.daemon.systemd: sd_notify messages over a real datagram socket, and the watchdog interval."""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from heygemd.daemon.systemd import Notifier, watchdog_interval


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """structlog's defaults before and after each test."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(name="listener")
def _listener() -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket playing systemd, and its path (short: AF_UNIX paths are limited to 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="hgn-") as tmp:
        path = str(Path(tmp) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(5)
            yield sock, path


def _received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (lambda n: n.ready(), "READY=1"),
        (lambda n: n.ready(status="model warm"), "READY=1\nSTATUS=model warm"),
        (lambda n: n.status("job lesson-01: video 2/5"), "STATUS=job lesson-01: video 2/5"),
        (lambda n: n.status("two\nlines"), "STATUS=two lines"),
        (lambda n: n.watchdog(), "WATCHDOG=1"),
        (lambda n: n.stopping(), "STOPPING=1"),
        (lambda n: n.stopping(status="finishing a.mp4"), "STOPPING=1\nSTATUS=finishing a.mp4"),
        (lambda n: n.extend_timeout(90), "EXTEND_TIMEOUT_USEC=90000000"),
        (lambda n: n.extend_timeout(0.5), "EXTEND_TIMEOUT_USEC=500000"),
    ],
)
def test_messages_arrive_on_notify_socket(
    listener: tuple[socket.socket, str], send: Callable[[Notifier], bool], expected: str
) -> None:
    """Each call sends exactly the sd_notify assignments systemd expects, in one datagram."""
    sock, path = listener
    notifier = Notifier(path)
    assert notifier.enabled
    assert send(notifier) is True
    assert _received(sock) == expected


def test_notify_socket_is_read_from_environment(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an argument the Notifier uses $NOTIFY_SOCKET, as systemd sets it."""
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert Notifier().watchdog()
    assert _received(sock) == "WATCHDOG=1"


def test_abstract_socket() -> None:
    """'@name' addresses a socket in the abstract namespace."""
    name = f"heygemd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier("@" + name).ready()
        assert _received(sock) == "READY=1"


def test_no_op_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside systemd every call does nothing and returns False."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert not any([notifier.ready(), notifier.status("x"), notifier.watchdog(), notifier.stopping()])
    assert not notifier.extend_timeout(10)


def test_send_failure_is_logged_not_raised(tmp_path: Path) -> None:
    """A socket that is gone makes the call return False and log systemd.notify_failed."""
    with capture_logs() as logs:
        assert Notifier(str(tmp_path / "gone")).ready() is False
    assert logs[0]["event"] == "systemd.notify_failed" and logs[0]["log_level"] == "warning"
    assert logs[0]["message"] == "READY=1"


def test_unsupported_socket_kind_disables_and_warns() -> None:
    """A vsock: address (VMs) is not supported: the notifier is disabled and says why."""
    with capture_logs() as logs:
        notifier = Notifier("vsock:2:1234")
    assert not notifier.enabled
    assert logs[0]["event"] == "systemd.notify_socket_unsupported"


def test_extend_timeout_rejects_negative() -> None:
    """A negative extension is a programming error."""
    with pytest.raises(ValueError):
        Notifier("").extend_timeout(-1)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "120000000"}, 120.0),
        ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(os.getpid())}, 120.0),
        ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "1500"}, 0.0015),
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "me"}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    """$WATCHDOG_USEC in seconds, only when $WATCHDOG_PID (if set) is this process."""
    assert watchdog_interval(environ) == expected


def test_watchdog_interval_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an argument the process environment is read."""
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 60.0
