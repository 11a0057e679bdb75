"""The one way tests run heygemd as a real process: its command line, a clean environment, a log file of JSON lines
read back as events, deadline polling, and a stop that never leaves a process behind.

The daemon (``tests/daemon/daemon_process.py``), the web server (``tests/web/webserver.py``) and the farm's workers
(``tests/farm/farm.py``) are each a :class:`HeygemdProcess` with their own folders and config.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

POLL_S = 0.05
INHERITED_FROM_SYSTEMD = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM")


def wait_until(
    predicate: Callable[[], T], timeout: float, what: str, *, diagnostics: Callable[[], str] | None = None
) -> T:
    """Poll ``predicate`` every 50 ms until it returns something truthy (returned), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{diagnostics()}" if diagnostics is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(POLL_S)


def heygemd_argv() -> list[str]:
    """The installed ``heygemd`` script next to this Python, else ``python -m heygemd``."""
    script = Path(sys.executable).parent / "heygemd"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "heygemd"]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any ``HEYGEMD_*`` setting or systemd variable, logging JSON lines,
    plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEYGEMD_") and k not in INHERITED_FROM_SYSTEMD}
    env["HEYGEMD_LOGGING__FORMAT"] = "json"
    env.update(extra or {})
    return env


def read_events(log: Path) -> list[dict[str, Any]]:
    """The JSON objects among the lines of ``log`` (none when it does not exist yet)."""
    if not log.is_file():
        return []
    events = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def has_event(events: Sequence[Mapping[str, Any]], name: str, **fields: Any) -> bool:
    return any(e.get("event") == name and all(e.get(k) == v for k, v in fields.items()) for e in events)


def log_tail(log: Path, last: int = 6000) -> str:
    """The end of ``log`` under a header naming it, for an assertion's message."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else "(no log)"
    return f"----- {log.name} (last {last} chars) -----\n{text[-last:]}"


class HeygemdProcess:
    """``heygemd --config CONFIG ARGS...`` in its own session, stdout and stderr into ``log``.

    ``wrapper``: a command line the heygemd one is appended to (e.g. to run it in a mount namespace).
    """

    def __init__(
        self,
        config: Path,
        args: Sequence[str],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                [*wrapper, *heygemd_argv(), "--config", str(config), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=config.parent,
                env=clean_env(env),
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.log)

    def has_event(self, name: str, **fields: Any) -> bool:
        return has_event(self.events(), name, **fields)

    def output(self, last: int = 6000) -> str:
        return log_tail(self.log, last)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it lingers past ``timeout`` s; reaped either way."""
        if self.running:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self, *, group: bool = False) -> None:
        """SIGKILL (if still running; ``group``: with its children, as a crash or the OOM killer would) and reap."""
        if self.running:
            if group:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.kill()
        self.proc.wait(timeout=30)


def run_on_full_disk(root: Path, folder: str, script: str) -> subprocess.CompletedProcess[str]:
    """``python -c script root`` with a real full filesystem: a 1 MiB tmpfs mounted on ``root/folder`` in a private
    mount namespace (``unshare -rm``); skips the test where no such namespace can be made. The repository is on
    ``PYTHONPATH``; the environment is :func:`clean_env`'s."""
    import pytest

    (root / folder).mkdir()
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here (unshare -rm: {probe.stderr.decode().strip()})")
    repo = Path(__file__).resolve().parents[1]
    shell = f'mount -t tmpfs -o size=1m tmpfs "$1/{folder}" && exec "{sys.executable}" -c "$2" "$1"'
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", shell, "sh", str(root), script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo,
        env=clean_env({"PYTHONPATH": str(repo)}),
    )
