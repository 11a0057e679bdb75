"""Helpers for driving the real ``heygemd run`` process: a daemon handle, deadline polling, tiny generated media."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

POLL_S = 0.05
START_TIMEOUT_S = 90.0  # imports + engine/detector warm-up on a busy 2-core box
JOB_TIMEOUT_S = 90.0


# ---------------------------------------------------------------------------------------------- polling


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


# ---------------------------------------------------------------------------------------------- media


@dataclass(frozen=True)
class Media:
    speech: Path  # ~2.7 s of espeak speech
    long_speech: Path  # ~6.5 s: time to catch a render in progress
    face_a: Path  # 320x180, 1.0 s, 25 fps
    face_b: Path  # 320x180, 1.2 s (other content: its own face-track cache entry)
    face_large: Path  # 960x540, 1.2 s: its render (several seconds here) outlasts a status write and a cancel check


def ffprobe(path: Path) -> dict[str, Any]:
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "format=duration:stream=codec_type,codec_name,duration,r_frame_rate,nb_frames",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        check=True,
    )
    return json.loads(result.stdout)


# ---------------------------------------------------------------------------------------------- the daemon


def _heygemd_argv() -> list[str]:
    script = Path(sys.executable).parent / "heygemd"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "heygemd"]


class Daemon:
    """One daemon's folders and config under ``root``; :meth:`start` runs ``heygemd --config CFG run``.

    Every start gets its own log file (stdout+stderr, JSON lines). Restarts reuse inbox, outbox and state.
    """

    def __init__(
        self,
        root: Path,
        *,
        settle_seconds: float = 600.0,
        observer: str = "inotify",
        poll_interval: float = 0.2,
        rescan_interval: float = 1.0,
        batch_size: int = 8,
        incomplete_timeout: float = 1800.0,
    ) -> None:
        self.root = root
        self.inbox = root / "inbox"
        self.outbox = root / "outbox"
        self.state = self.inbox / ".heygemd"
        self.staging = root / "staging"
        self.config = root / "heygemd.toml"
        self.logs: list[Path] = []
        self.proc: subprocess.Popen[bytes] | None = None
        (root / "models").mkdir(parents=True, exist_ok=True)  # empty: engine auto never finds weights
        self.config.write_text(
            f"""
[paths]
inbox = "inbox"
outbox = "outbox"
models = "models"

[intake]
settle_seconds = {settle_seconds}
observer = "{observer}"
poll_interval = {poll_interval}
rescan_interval = {rescan_interval}
incomplete_timeout = {incomplete_timeout}

[engine]
name = "mouthwarp"
device = "cpu"
batch_size = {batch_size}

[video]
preset = "ultrafast"
""",
            encoding="utf-8",
        )

    # -- process

    def start(self, extra_env: Mapping[str, str] | None = None) -> "Daemon":
        assert self.proc is None or self.proc.poll() is not None, "daemon already running"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("HEYGEMD_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM")
        }
        env["HEYGEMD_LOGGING__FORMAT"] = "json"
        env.update(extra_env or {})
        log = self.root / f"daemon-{len(self.logs) + 1}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [*_heygemd_argv(), "--config", str(self.config), "run"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=env,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> "Daemon":
        self.wait_for(lambda: self.has_event("daemon.ready"), timeout, "daemon.ready in the log")
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL (if still running) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"daemon still running {timeout:.0f} s after the signal\n{self.diagnostics()}"
            ) from None

    # -- logs

    def events(self, run: int = -1) -> list[dict[str, Any]]:
        """The JSON log events of one start (default: the latest)."""
        if not self.logs or not self.logs[run].is_file():
            return []
        events = []
        for line in self.logs[run].read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def has_event(self, name: str, run: int = -1, **fields: Any) -> bool:
        return any(e.get("event") == name and all(e.get(k) == v for k, v in fields.items()) for e in self.events(run))

    def diagnostics(self) -> str:
        parts = []
        if self.proc is not None:
            parts.append(f"daemon pid {self.proc.pid} returncode {self.proc.poll()}")
        for log in self.logs:
            text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else "(no log)"
            parts.append(f"----- {log.name} (last 6000 chars) -----\n{text[-6000:]}")
        parts.append(
            "----- files -----\n"
            + "\n".join(str(p.relative_to(self.root)) for p in sorted(self.root.rglob("*")) if "cache" not in p.parts)
        )
        return "\n".join(parts)

    def wait_for(self, predicate: Callable[[], T], timeout: float, what: str, *, alive: bool = True) -> T:
        """wait_until, failing at once (with the log) when the daemon dies meanwhile (``alive``)."""

        def check() -> T:
            value = predicate()
            if not value and alive and not self.running:
                raise AssertionError(f"daemon exited while waiting for {what}\n{self.diagnostics()}")
            return value

        return wait_until(check, timeout, what, diagnostics=self.diagnostics)

    # -- jobs

    def submit(self, name: str, files: Mapping[str, Path | bytes], *, marker: bool = True) -> Path:
        """Build a job folder in staging (files copied, or bytes written; ``.ready`` last) and rename it into
        the inbox in one step, as a careful uploader would."""
        folder = self.staging / name
        folder.mkdir(parents=True)
        for fname, content in files.items():
            if isinstance(content, Path):
                shutil.copyfile(content, folder / fname)
            else:
                (folder / fname).write_bytes(content)
        if marker:
            (folder / ".ready").touch()
        self.inbox.mkdir(parents=True, exist_ok=True)
        target = self.inbox / name
        os.rename(folder, target)
        return target

    def status_path(self, job: str) -> Path:
        return self.outbox / job / "status.json"

    def status(self, job: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.status_path(job).read_bytes())
        except FileNotFoundError:
            return None

    def wait_finished(self, job: str, timeout: float = JOB_TIMEOUT_S) -> dict[str, Any]:
        """The job's status.json once it is finished and its inputs have left ``claimed/``."""

        def finished() -> dict[str, Any] | None:
            status = self.status(job)
            if (
                status
                and status["state"] in ("done", "partial", "failed")
                and status.get("finished")
                and not (self.state / "claimed" / job).exists()
            ):
                return status
            return None

        return self.wait_for(finished, timeout, f"job {job!r} to finish")

    def claimed(self, job: str) -> bool:
        return (self.state / "claimed" / job / "input").is_dir()

    def command(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``heygemd ARGS...`` as a user runs it, with this daemon's configuration (JSON log lines)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEYGEMD_")}
        env["HEYGEMD_LOGGING__FORMAT"] = "json"
        return subprocess.run(
            [*_heygemd_argv(), "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            env=env,
        )

    def cancel(self, job: str) -> subprocess.CompletedProcess[str]:
        """``heygemd cancel JOB`` as a user runs it, with this daemon's configuration."""
        return self.command("cancel", job)

    def cancelled(self, job: str) -> dict[str, Any] | None:
        """The job's status.json once it is cancelled and its inputs have left ``claimed/``."""
        status = self.status(job)
        if status and status["state"] == "cancelled" and not (self.state / "claimed" / job).exists():
            return status
        return None


def stop_daemon(daemon: Daemon) -> None:
    """Teardown for long-lived daemons: SIGTERM, then SIGKILL if it lingers."""
    if daemon.running:
        daemon.send(signal.SIGTERM)
        try:
            assert daemon.proc is not None
            daemon.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    daemon.kill()
