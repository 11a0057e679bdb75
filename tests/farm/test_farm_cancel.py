"""Cancelling on a farm: the request reaches the worker rendering the job (through the claim folder on the
shared inbox, not the broker); a job whose task still waits in Redis is cancelled at once (under its lock) and the
worker that takes the task drops it. Real redis-server, real intake and worker processes, real ffmpeg."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from heygemd.cli import control_for
from heygemd.farm.ownership import disown
from heygemd.settings import load_settings
from tests.daemon.daemon_process import Media
from tests.farm.farm import Farm, RedisServer
from tests.pipeline.media import ffmpeg_children

pytestmark = pytest.mark.slow

FARM_JOB_TIMEOUT_S = 240.0


def test_a_worker_stops_the_job_it_renders_and_drops_a_cancelled_queued_task(
    farm_factory: Callable[..., Farm], media: Media
) -> None:
    farm = farm_factory().start_all("w1")
    presenters = {
        "alice.mp4": media.face_a,
        "bob.mp4": media.face_b,
        "carol.mp4": media.face_a,
        "dave.mp4": media.face_b,
    }
    farm.submit("long", {"speech.wav": media.long_speech, **presenters})  # w1 is busy for four videos

    def second_video_rendering() -> bool:
        status = farm.status("long")
        return bool(status and [v["state"] for v in status["videos"]][:2] == ["done", "processing"])

    farm.wait_for(second_video_rendering, FARM_JOB_TIMEOUT_S, "bob.mp4 to be rendering on w1")
    farm.submit("next", {"speech.wav": media.speech, "alice.mp4": media.face_a})
    farm.wait_for(lambda: farm.has_event("job.published", job_id="next"), 60, "the next job's task in Redis")
    queued = farm.cancel("next")  # its task waits in Redis while w1 renders: cancelled at once
    assert queued.returncode == 0 and "next: cancelled" in queued.stdout, queued.stderr
    skipped = farm.cancelled("next")
    assert skipped is not None and [v["state"] for v in skipped["videos"]] == ["cancelled"]
    assert (farm.status("long") or {}).get("state") == "processing", "w1 was still busy: the task was queued"

    # what `heygemd cancel` runs, in this process: a CLI's start-up on a loaded machine is slow
    running = control_for(load_settings(farm.config)).cancel("long", "test")
    assert running.state == "cancelling"
    long = farm.wait_for(lambda: farm.cancelled("long"), 60, "the rendering job to be cancelled")
    states = [v["state"] for v in long["videos"]]
    assert states[0] == "done" and states[-1] == "cancelled" and set(states) == {"done", "cancelled"}, states
    assert long["worker"] == "w1@test"
    done = [v["input"] for v in long["videos"] if v["state"] == "done"]
    kept = sorted(p.name for p in (farm.outbox / "long").iterdir())
    assert kept == sorted(["job.log", "status.json", *done, *(n.replace(".mp4", ".jpg") for n in done)])
    assert farm.worker_has("w1", "job.cancel_received", job_id="long")

    farm.wait_for(
        lambda: farm.worker_has("w1", "job.duplicate_task", job_id="next", why="the job is finished"),
        60,
        "w1 to drop the cancelled job's task",
    )
    assert not farm.worker_has("w1", "job.started", job_id="next"), "the cancelled task was started"
    assert farm.renders() == {("long", name): 1 for name in done}
    assert ffmpeg_children(farm.workers["w1"].pid, ("ffmpeg", "ffprobe")) == []
    for job in ("long", "next"):
        assert list((farm.state / "archive").glob(f"*/{job}/input/speech.wav")), f"{job}'s inputs are archived"
    assert farm.workers["w1"].poll() is None, "the worker goes on serving"


def test_a_queued_job_whose_lock_a_worker_holds_is_left_to_that_worker(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The canceller finishes a queued farm job only under the job's lock; while a worker holds it (it is about to
    run the job, or runs it) the request file is the worker's to act on."""
    from heygemd.daemon import claims, readiness
    from heygemd.daemon.cancel import read_request
    from heygemd.farm.broker import Broker
    from tests.web.webserver import write_config

    settings = load_settings(write_config(tmp_path, extra=f'[queue]\nbroker = "{redis_server.url}"\n'))
    folder = settings.paths.inbox / "queued"
    folder.mkdir()
    (folder / "speech.wav").write_bytes(b"x")
    claimed = claims.claim(readiness.Candidate("queued", folder), settings.paths.state_dir)
    assert claimed is not None
    disown(claimed)  # as the intake leaves it once published
    broker = Broker(redis_server.url)
    assert broker.acquire("queued", "w9@elsewhere 1", 60)

    answer = control_for(settings).cancel("queued", "test")
    assert answer.state == "cancelling" and read_request(claimed.path) is not None
    assert claimed.folder.is_dir() and broker.locked("queued")

    broker.release("queued", "w9@elsewhere 1")
    again = control_for(settings).cancel("queued", "test")
    assert again.state == "cancelled" and again.status is not None and again.status.state == "cancelled"
    assert not claimed.path.exists() and not broker.locked("queued"), "finished, its lock given back"
