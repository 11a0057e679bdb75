"""The farm end to end: a real redis-server, `heygemd run` as the intake and real `heygemd worker` processes
(engine mouthwarp, tiny media) on one shared inbox/outbox."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from tests.daemon.daemon_process import Media
from tests.queue.farm import Farm, RedisServer

pytestmark = pytest.mark.slow

FARM_JOB_TIMEOUT_S = 240.0  # several jobs on two workers sharing 2 busy cores


def submit_jobs(farm: Farm, media: Media, count: int) -> list[str]:
    names = [f"lesson-{i:02d}" for i in range(1, count + 1)]
    for name in names:
        farm.submit(name, {"speech.wav": media.speech, "alice.mp4": media.face_a})
    return names


def test_two_workers_share_six_jobs_each_rendered_once(farm_factory: Callable[..., Farm], media: Media) -> None:
    farm = farm_factory()
    farm.start_worker("w1")
    farm.start_worker("w2")
    farm.start().wait_ready()
    farm.wait_workers_ready()
    names = submit_jobs(farm, media, 6)
    for name in names:
        status = farm.wait_finished(name, FARM_JOB_TIMEOUT_S)
        assert status["state"] == "done", status
        assert status["worker"] in ("w1@test", "w2@test")
        assert (farm.outbox / name / "alice.mp4").is_file()
    renders = farm.renders()
    assert sorted(renders) == sorted((name, "alice.mp4") for name in names)
    assert set(renders.values()) == {1}, renders
    ran_on = {farm.status(name)["worker"] for name in names}  # type: ignore[index]
    assert ran_on == {"w1@test", "w2@test"}, "both workers took jobs"
    assert farm.has_event("job.published", job_id=names[0])
