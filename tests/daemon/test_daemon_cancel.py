"""End to end: ``heygemd cancel`` against the real ``heygemd run`` process (real ffmpeg, mouthwarp on tiny media).

A job waiting in the inbox is cancelled at once and never starts; a job rendering stops at its next batch, its
ffmpeg processes gone, the finished video kept, no partial output left; the cancelled job is retried like a
failed one. Synchronisation by polling status.json and the logs, never by fixed sleeps.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from heygemd.cli import control_for
from heygemd.daemon.status import SCHEMA_PATH
from heygemd.names import is_heygemd_temp
from heygemd.settings import load_settings
from tests.daemon.daemon_process import JOB_TIMEOUT_S, Media, ffprobe, stop_daemon
from tests.pipeline.media import ffmpeg_children

pytestmark = pytest.mark.slow

SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def test_cancel_waiting_and_running_jobs_then_retry(daemon_factory, media: Media) -> None:
    d = daemon_factory("cancel")
    d.start().wait_ready()

    # -- waiting in the inbox (no .ready marker, settle time 600 s): cancelled at once, never started
    d.submit("waiting", {"voice.wav": media.speech, "a.mp4": media.face_a}, marker=False)
    answer = d.cancel("waiting")
    assert answer.returncode == 0, answer.stderr
    assert "waiting: cancelled" in answer.stdout
    status = d.status("waiting")
    assert status is not None and status["state"] == "cancelled", status
    jsonschema.validate(status, SCHEMA)
    assert [(v["input"], v["state"]) for v in status["videos"]] == [("a.mp4", "cancelled")]
    assert not (d.inbox / "waiting").exists()

    # -- rendering: the second video stops at its next batch. It is the large presenter: at 320x180 its render
    # (about 1.3 s here) could end between the status write that shows it rendering and the cancel check.
    d.submit("long", {"voice.wav": media.long_speech, "a.mp4": media.face_a, "b.mp4": media.face_large})

    def second_video_rendering() -> dict[str, Any] | None:
        status = d.status("long")
        if status and [v["state"] for v in status["videos"]] == ["done", "processing"]:
            if status["videos"][1]["frames_total"] and status["videos"][1]["frames_done"] > 0:  # rendering frames
                return status
        return None

    d.wait_for(second_video_rendering, JOB_TIMEOUT_S, "b.mp4 to be rendering")
    assert d.proc is not None
    # what `heygemd cancel` runs, in this process: a CLI's start-up on a loaded machine could outlast b's render
    # (the CLI itself is run for the waiting job above and the errors below)
    answer = control_for(load_settings(d.config)).cancel("long", "cli test")
    assert answer.state == "cancelling"
    status = d.wait_for(lambda: d.cancelled("long"), 30, "the job to be cancelled")
    jsonschema.validate(status, SCHEMA)
    a, b = status["videos"]
    assert a["state"] == "done" and a["output"] == "a.mp4"
    assert b["state"] == "cancelled" and b["output"] is None
    assert b["frames_total"] and b["frames_done"] < b["frames_total"], "stopped mid-video, not at its end"
    assert status["cancel"]["by"].startswith("cli "), status
    assert ffmpeg_children(d.proc.pid, ("ffmpeg", "ffprobe")) == [], "an ffmpeg of the cancelled render is left"
    out = d.outbox / "long"
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "a.mp4", "job.log", "status.json"]
    assert not any(is_heygemd_temp(p.name) for p in out.iterdir())
    assert float(ffprobe(out / "a.mp4")["format"]["duration"]) > 5.0
    archived = sorted(p.name for p in (d.state / "archive").glob("*/long/input/*"))
    assert archived == [".ready", "a.mp4", "b.mp4", "voice.wav"], "the inputs are archived for a retry"
    assert d.has_event("job.cancel_received", job_id="long") and d.has_event("job.cancelled", job_id="long")
    assert not d.has_event("job.started", job_id="waiting")
    log = (out / "job.log").read_text(encoding="utf-8")
    assert "job.cancel_received" in log and "job.cancelled" in log

    # -- finished or unknown: clear errors
    again = d.cancel("long")
    assert again.returncode == 1 and "[ALREADY_DONE]" in again.stderr and "'long' is already cancelled" in again.stderr
    assert "what to do:" in again.stderr
    unknown = d.cancel("nope")
    assert unknown.returncode == 1 and "[NO_SUCH_JOB]" in unknown.stderr

    # -- retried like a failed job: the video not done is rendered again, as a new job
    retried = d.command("retry", "long")
    assert retried.returncode == 0 and "long-retry" in retried.stdout, retried.stderr
    retry_id = "long-retry"
    retried = d.wait_finished(retry_id)
    assert retried["state"] == "done" and [v["input"] for v in retried["videos"]] == ["b.mp4"]
    assert (d.outbox / retry_id / "b.mp4").is_file()
    stop_daemon(d)


def test_a_cancel_while_the_daemon_is_down_is_done_when_it_starts(daemon_factory, media: Media) -> None:
    """A claimed job (its daemon stopped mid-video) gets the request; the next start finishes it as cancelled
    without rendering it again."""
    d = daemon_factory("down")
    d.start().wait_ready()
    d.submit("long", {"voice.wav": media.long_speech, "a.mp4": media.face_a})

    def rendering() -> bool:
        status = d.status("long")
        return bool(status and status["videos"] and status["videos"][0]["frames_done"] > 0)

    d.wait_for(rendering, JOB_TIMEOUT_S, "a.mp4 to be rendering")
    d.kill()
    answer = d.cancel("long")
    assert answer.returncode == 0 and "cancel requested" in answer.stdout, answer.stderr
    assert (d.state / "claimed" / "long" / "cancel.json").is_file()

    d.start().wait_ready()
    status = d.wait_for(lambda: d.cancelled("long"), JOB_TIMEOUT_S, "the job to be cancelled")
    assert [v["state"] for v in status["videos"]] == ["cancelled"]
    assert sorted(p.name for p in (d.outbox / "long").iterdir()) == ["job.log", "status.json"], "no partial output"
    assert not d.has_event("video.started")
    assert d.has_event("job.cancelled", job_id="long", started=False)
    stop_daemon(d)
