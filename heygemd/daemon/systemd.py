"""sd_notify(3): tell systemd the daemon is ready, what it is doing, that it is alive, and that it stops.

Datagrams go to ``$NOTIFY_SOCKET`` (a path, or an abstract socket written ``@name``) over a plain AF_UNIX
socket, so no libsystemd is needed. Without ``$NOTIFY_SOCKET`` (a terminal, a container, tests) every call is
a no-op that returns False, so the same code runs everywhere. As sd_notify(3) recommends, a failed send is
not fatal: it is logged as ``systemd.notify_failed`` and the call returns False.

The watchdog (``WatchdogSec=`` in the unit) expects ``WATCHDOG=1`` at least every :func:`watchdog_interval`
seconds; ping at half that, from a thread that only pings while the work makes progress, so that a wedged
GPU call lets the watchdog fire.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger()


class Notifier:
    """Sends sd_notify messages to systemd; every method returns True when the message was sent."""

    def __init__(self, notify_socket: str | None = None) -> None:
        """``notify_socket``: the ``$NOTIFY_SOCKET`` value to use; default: the environment's, read now."""
        value = os.environ.get("NOTIFY_SOCKET") if notify_socket is None else notify_socket
        self._address = _socket_address(value or "")

    @property
    def enabled(self) -> bool:
        """Whether a usable ``$NOTIFY_SOCKET`` was given (i.e. running under systemd with Type=notify)."""
        return self._address is not None

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up finished (model warm); ``systemctl start`` returns now."""
        return self.notify("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """``STATUS=``: one line shown by ``systemctl status heygemd``."""
        return self.notify(*_status(text))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: keep-alive ping for ``WatchdogSec=``."""
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown has begun (send on the first SIGTERM)."""
        return self.notify("STOPPING=1", *_status(status))

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC=``: the current start/stop phase needs ``seconds`` more from now.

        Send it again before it runs out, e.g. at each step of a long model warm-up or drain.
        """
        if seconds < 0:
            raise ValueError(f"seconds must not be negative, got {seconds}")
        return self.notify(f"EXTEND_TIMEOUT_USEC={round(seconds * 1_000_000)}")

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments in one datagram; False when disabled or the send failed."""
        if self._address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, self._address)
        except OSError as exc:
            log.warning("systemd.notify_failed", message=assignments[0], error=str(exc))
            return False
        return True


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds within which systemd expects ``WATCHDOG=1`` (``$WATCHDOG_USEC``), or None when not watched.

    None too when ``$WATCHDOG_PID`` names another process (the variable was inherited, not meant for us).
    Ping at half the returned interval.
    """
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
        watched_pid = int(env["WATCHDOG_PID"]) if env.get("WATCHDOG_PID") else None
    except ValueError:
        return None
    if usec <= 0:
        return None
    if watched_pid is not None and watched_pid != (os.getpid() if pid is None else pid):
        return None
    return usec / 1_000_000


def _socket_address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace socket
    if value.startswith("/"):
        return value
    if value:  # e.g. vsock:CID:PORT (systemd >= 253, for VMs): not needed on a GPU host
        log.warning("systemd.notify_socket_unsupported", notify_socket=value)
    return None


def _status(text: str | None) -> list[str]:
    if text is None:
        return []
    return ["STATUS=" + " ".join(text.splitlines())]  # a single line


__all__ = ["Notifier", "watchdog_interval"]
