"""Cancelling on a farm: the request reaches the worker rendering the job (through the claim folder on the
shared inbox, not the broker), and a task still queued in Redis is skipped by the worker that takes it. Real
redis-server, real intake and worker processes, real ffmpeg."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.daemon.daemon_process import Media
from tests.pipeline.media import ffmpeg_children
from tests.queue.farm import Farm

pytestmark = pytest.mark.slow

FARM_JOB_TIMEOUT_S = 240.0


def test_a_worker_stops_the_job_it_renders_and_skips_a_queued_cancelled_task(
    farm_factory: Callable[..., Farm], media: Media
) -> None:
    farm = farm_factory()
    farm.start_worker("w1")
    farm.start().wait_ready()
    farm.wait_workers_ready()
    farm.submit("long", {"speech.wav": media.long_speech, "alice.mp4": media.face_a, "bob.mp4": media.face_b})

    def second_video_rendering() -> bool:
        status = farm.status("long")
        return bool(status and [v["state"] for v in status["videos"]] == ["done", "processing"])

    farm.wait_for(second_video_rendering, FARM_JOB_TIMEOUT_S, "bob.mp4 to be rendering on w1")
    farm.submit("next", {"speech.wav": media.speech, "alice.mp4": media.face_a})
    farm.wait_for(lambda: farm.has_event("job.published", job_id="next"), 60, "the next job's task in Redis")

    queued = farm.cancel("next")  # its task waits in Redis behind the job w1 renders
    assert queued.returncode == 0 and "next: cancel requested" in queued.stdout, queued.stderr
    running = farm.cancel("long")
    assert running.returncode == 0 and "long: cancel requested" in running.stdout, running.stderr

    long = farm.wait_for(lambda: farm.cancelled("long"), 60, "the rendering job to be cancelled")
    assert [v["state"] for v in long["videos"]] == ["done", "cancelled"] and long["worker"] == "w1@test"
    assert sorted(p.name for p in (farm.outbox / "long").iterdir()) == [
        "alice.jpg",
        "alice.mp4",
        "job.log",
        "status.json",
    ]
    assert farm.worker_has("w1", "job.cancel_received", job_id="long")

    skipped = farm.wait_for(lambda: farm.cancelled("next"), 60, "the queued job to be cancelled by w1")
    assert [v["state"] for v in skipped["videos"]] == ["cancelled"] and skipped["worker"] == "w1@test"
    assert farm.worker_has("w1", "job.cancelled", job_id="next", started=False)
    assert not farm.worker_has("w1", "job.started", job_id="next"), "the cancelled task was started"
    assert farm.renders() == {("long", "alice.mp4"): 1}
    assert ffmpeg_children(farm.workers["w1"].pid, ("ffmpeg", "ffprobe")) == []
    for job in ("long", "next"):
        assert list((farm.state / "archive").glob(f"*/{job}/input/speech.wav")), f"{job}'s inputs are archived"
    assert farm.workers["w1"].poll() is None, "the worker goes on serving"
