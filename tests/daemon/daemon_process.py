"""Helpers for driving the real ``heygemd run`` process: a daemon handle, deadline polling, tiny generated media."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests.processes import (
    POLL_S,
    HeygemdProcess,
    clean_env,
    has_event,
    heygemd_argv,
    log_tail,
    read_events,
    wait_until,
)

__all__ = ["POLL_S", "Daemon", "Media", "ffprobe", "heygemd_argv", "stop_daemon", "wait_until"]

T = TypeVar("T")

START_TIMEOUT_S = 90.0  # imports + engine/detector warm-up on a busy 2-core box
JOB_TIMEOUT_S = 90.0


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
        self.process: HeygemdProcess | None = None
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
        assert not self.running, "daemon already running"
        log = self.root / f"daemon-{len(self.logs) + 1}.log"
        self.logs.append(log)
        self.process = HeygemdProcess(self.config, ["run"], log, env=extra_env)
        return self

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The latest start's process."""
        return self.process.proc if self.process is not None else None

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> "Daemon":
        self.wait_for(lambda: self.has_event("daemon.ready"), timeout, "daemon.ready in the log")
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL (if still running) and reap."""
        if self.process is not None:
            self.process.kill()

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
        return read_events(self.logs[run]) if self.logs else []

    def has_event(self, name: str, run: int = -1, **fields: Any) -> bool:
        return has_event(self.events(run), name, **fields)

    def diagnostics(self) -> str:
        parts = []
        if self.proc is not None:
            parts.append(f"daemon pid {self.proc.pid} returncode {self.proc.poll()}")
        parts += [log_tail(log) for log in self.logs]
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
        return subprocess.run(
            [*heygemd_argv(), "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            env=clean_env(),
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
    if daemon.process is not None:
        daemon.process.stop()
