"""Helpers for the web tests: settings over a temporary inbox/outbox, status files, a real ``heygemd web`` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from heygemd.daemon.status import AudioStatus, JobStatus, VideoStatus, utc_now, write_status
from heygemd.settings import Settings, load_settings
from tests.daemon.daemon_process import wait_until

TOKEN = "test-token-0123456789"
ORIGIN = "http://localhost"
"""Where the test clients reach the app: a loopback name, as a browser on the server itself does."""


def write_config(root: Path, web: str = "", extra: str = "") -> Path:
    """A config under ``root`` with inbox/outbox/models folders; ``web`` is the body of its [web] section."""
    for name in ("inbox", "outbox", "models"):
        (root / name).mkdir(parents=True, exist_ok=True)
    config = root / "heygemd.toml"
    config.write_text(
        f'[paths]\ninbox = "inbox"\noutbox = "outbox"\nmodels = "models"\n{extra}\n[web]\n{web}\n', encoding="utf-8"
    )
    return config


def settings_for(root: Path, web: str = "") -> Settings:
    return load_settings(write_config(root, web))


def finished_job(
    outbox: Path,
    job_id: str,
    *,
    state: str = "done",
    files: Mapping[str, bytes] | None = None,
    claimed_minutes_ago: float = 0.0,
    videos: list[VideoStatus] | None = None,
) -> JobStatus:
    """An outbox folder as the worker leaves it: status.json, job.log and the given files."""
    from datetime import timedelta

    folder = outbox / job_id
    folder.mkdir(parents=True)
    default = {"anna.mp4": b"\x00\x00\x00\x18ftypmp42 not really", "anna.jpg": b"\xff\xd8jpg"}
    for name, data in (files or default).items():
        (folder / name).write_bytes(data)
    (folder / "job.log").write_text(f'{{"event": "job.started", "job_id": "{job_id}"}}\n', encoding="utf-8")
    claimed = utc_now() - timedelta(minutes=claimed_minutes_ago)
    status = JobStatus(
        job_id=job_id,
        job_name=job_id,
        state=state,
        claimed=claimed,
        created=claimed,
        started=claimed,  # type: ignore[arg-type]
        finished=claimed if state in ("done", "partial", "failed") else None,
        engine="mouthwarp",
        audio=AudioStatus(file="lesson.wav", duration_s=2.0),
        videos=videos
        if videos is not None
        else [VideoStatus(input="anna.mp4", state="done", progress=1.0, output="anna.mp4", poster="anna.jpg")],
        progress=1.0 if state != "processing" else 0.5,
    )
    return write_status(folder / "status.json", status)


def renderer_here(state_dir: Path, engines: tuple[str, ...] = ("mouthwarp",)) -> Path:
    """A renderer's heartbeat record, as `heygemd run` writes it, for this (live) test process; returns its file."""
    from heygemd.daemon.presence import PresenceFile, this_process

    presence = PresenceFile(state_dir, lambda: this_process("daemon", "heygemd run", engines, utc_now()))
    presence.announce()
    return presence.path


def tree(root: Path) -> list[str]:
    """Every path under ``root``, relative, sorted (the cache of face tracks left out)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "cache" not in p.parts)


def heygemd_argv() -> list[str]:
    script = Path(sys.executable).parent / "heygemd"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "heygemd"]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HEYGEMD_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM")
    }
    env["HEYGEMD_LOGGING__FORMAT"] = "json"
    env.update(extra or {})
    return env


class WebProcess:
    """``heygemd --config CFG web`` (or ``run`` with the web enabled) as a real process; ``url`` once ready."""

    def __init__(self, config: Path, command: str = "web", env: Mapping[str, str] | None = None) -> None:
        self.log = config.parent / f"{command}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [*heygemd_argv(), "--config", str(config), command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=config.parent,
                env=clean_env(env),
                start_new_session=True,
            )
        self.url = ""

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                found.append(event)
        return found

    def has_event(self, name: str) -> bool:
        return any(e.get("event") == name for e in self.events())

    def wait_ready(self, timeout: float = 90.0) -> "WebProcess":
        def ready() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"heygemd exited with {self.proc.returncode}:\n{self.log.read_text()}")
            return next((e["url"] for e in self.events() if e.get("event") == "web.ready"), None)

        self.url = wait_until(ready, timeout, "web.ready in the log").rstrip("/")
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
