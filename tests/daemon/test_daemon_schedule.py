"""The real daemon's intake: waiting jobs start highest priority first; outside the rendering hours a job waits and
says until when; `heygemd pause` holds across a restart until `heygemd resume`. (When the hours open, with the clock
injected: tests/daemon/test_intake_order.py.)"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from tests.daemon.daemon_process import Daemon, Media

pytestmark = pytest.mark.slow


def job_files(media: Media, priority: str | None) -> dict[str, object]:
    files: dict[str, object] = {"speech.wav": media.speech, "anna.mp4": media.face_a}
    if priority is not None:
        files["job.toml"] = f'priority = "{priority}"\n'.encode()
    return files


def claimed_order(daemon: Daemon) -> list[str]:
    return [str(e["job_id"]) for e in daemon.events() if e.get("event") == "job.claimed"]


def waiting(daemon: Daemon) -> dict[str, list[str]]:
    try:
        return json.loads((daemon.state / "waiting.json").read_bytes())["jobs"]
    except FileNotFoundError:
        return {}


def test_three_waiting_jobs_start_high_first_then_normal_then_low(
    daemon_factory: Callable[..., Daemon], media: Media
) -> None:
    daemon = daemon_factory()
    for age, (name, priority) in enumerate([("low-first", "low"), ("normal-second", None), ("high-last", "high")]):
        folder = daemon.submit(name, job_files(media, priority))  # type: ignore[arg-type]
        arrived = 1_700_000_000 + age * 60  # the low job arrived first: oldest-first would take it first
        os.utime(folder, (arrived, arrived))
    daemon.start().wait_ready()
    for name in ("low-first", "normal-second", "high-last"):
        daemon.wait_finished(name)
    assert claimed_order(daemon) == ["high-last", "normal-second", "low-first"]
    assert [daemon.status(n)["priority"] for n in ("high-last", "normal-second", "low-first")] == [8, 5, 2]  # type: ignore[index]
    table = daemon.command("status").stdout
    assert "PRIORITY" in table and "high" in table and "low" in table


def test_outside_the_hours_a_job_waits_and_says_until_when(daemon_factory: Callable[..., Daemon], media: Media) -> None:
    daemon = daemon_factory()
    opens = datetime.now().astimezone() + timedelta(hours=3)
    window = f"{opens:%H:%M}-{opens + timedelta(minutes=30):%H:%M}"
    text = daemon.config.read_text(encoding="utf-8").replace("[intake]\n", f'[intake]\nhours = ["{window}"]\n', 1)
    daemon.config.write_text(text, encoding="utf-8")
    daemon.start().wait_ready()
    daemon.submit("night-job", job_files(media, None))  # type: ignore[arg-type]
    reason = f"waits for {opens:%H:%M}"
    daemon.wait_for(lambda: waiting(daemon).get("night-job") == [reason], 60, "the job to wait for the hours")
    assert not daemon.claimed("night-job") and daemon.status("night-job") is None
    status = daemon.command("status")
    assert status.returncode == 0, status.stderr
    assert f"intake: outside the rendering hours ({window}): jobs {reason}" in status.stdout
    assert "night-job/" in status.stdout and reason in status.stdout
    assert daemon.command("status", "night-job").stdout.strip().endswith(reason)


def test_a_pause_holds_across_a_restart_until_resumed(daemon_factory: Callable[..., Daemon], media: Media) -> None:
    daemon = daemon_factory()
    daemon.start().wait_ready()
    paused = daemon.command("pause")
    assert paused.returncode == 0 and "intake: paused by cli " in paused.stdout, paused
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit(60) == 0
    daemon.submit("held", job_files(media, None))  # type: ignore[arg-type]
    daemon.start().wait_ready()
    daemon.wait_for(lambda: (waiting(daemon).get("held") or [""])[0].startswith("paused by cli "), 60, "the wait")
    assert not daemon.claimed("held")
    assert "intake: paused by cli " in daemon.command("status").stdout
    resumed = daemon.command("resume")
    assert resumed.returncode == 0 and resumed.stdout.startswith("intake: taking jobs"), resumed
    assert daemon.wait_finished("held")["state"] == "done"
    assert not (daemon.state / "paused.json").exists()
