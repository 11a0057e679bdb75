"""Helpers for the web tests: settings over a temporary inbox/outbox, status files, a real ``heygemd web`` process."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from heygemd.daemon.status import AudioStatus, JobStatus, VideoStatus, utc_now, write_status
from heygemd.settings import Settings, load_settings
from tests.processes import HeygemdProcess, clean_env, heygemd_argv, wait_until

__all__ = [
    "ORIGIN",
    "TOKEN",
    "WebProcess",
    "clean_env",
    "finished_job",
    "heygemd_argv",
    "settings_for",
    "tree",
    "write_config",
]

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


def tree(root: Path) -> list[str]:
    """Every path under ``root``, relative, sorted (the cache of face tracks left out)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "cache" not in p.parts)


class WebProcess(HeygemdProcess):
    """``heygemd --config CFG web`` (or ``run`` with the web enabled) as a real process; ``url`` once ready."""

    def __init__(self, config: Path, command: str = "web", env: Mapping[str, str] | None = None) -> None:
        super().__init__(config, [command], config.parent / f"{command}.log", env=env)
        self.url = ""

    def wait_ready(self, timeout: float = 90.0) -> "WebProcess":
        def ready() -> str | None:
            if not self.running:
                raise AssertionError(f"heygemd exited with {self.proc.returncode}:\n{self.output()}")
            return next((e["url"] for e in self.events() if e.get("event") == "web.ready"), None)

        self.url = wait_until(ready, timeout, "web.ready in the log").rstrip("/")
        return self
