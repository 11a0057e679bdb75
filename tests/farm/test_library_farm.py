"""The presenter library in a real farm (redis-server, the intake, a worker, one shared inbox and library): the
intake sends a presenter copied into the library to a worker, which prepares it under its lock and records it in
presenters.json; a job of audio and job.toml naming it is linked at the claim and rendered by the worker, which
finds the face track the preparation left in the shared cache."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from tests.daemon.daemon_process import Media
from tests.farm.farm import Farm

pytestmark = pytest.mark.slow


def presenters(farm: Farm) -> dict[str, dict[str, Any]]:
    try:
        return {p["name"]: p for p in json.loads((farm.state / "presenters.json").read_bytes())["presenters"]}
    except (FileNotFoundError, ValueError):
        return {}


def test_a_worker_prepares_the_presenter_and_renders_the_job_naming_it(
    farm_factory: Callable[..., Farm], media: Media
) -> None:
    farm = farm_factory(settle_seconds=1.0)
    library = farm.root / "models" / "presenters"
    library.mkdir()
    shutil.copyfile(media.face_a, library / "anna.mp4")
    farm.start_worker("w1")
    farm.wait_workers_ready()
    farm.start().wait_ready()

    def prepared() -> dict[str, Any] | None:
        anna = presenters(farm).get("anna")
        return anna if anna and anna["state"] != "preparing" else None

    anna = farm.wait_for(prepared, 180, "anna prepared by the worker")
    assert anna["state"] == "ready" and anna["prepared_by"] == "w1@test", anna
    assert (farm.state / "posters" / anna["poster"]).is_file()
    assert farm.worker_has("w1", "presenter.ready", presenter="anna")
    assert farm.has_event("presenter.published", presenter="anna")

    farm.submit("lesson", {"lesson.wav": media.speech, "job.toml": b'presenters = ["anna", "zoe"]\n'})
    status = farm.wait_finished("lesson", timeout=180)
    assert status["state"] == "partial" and status["worker"] == "w1@test", status
    anna_video, zoe = status["videos"]
    assert (anna_video["presenter"], anna_video["state"], anna_video["face_track"]) == ("anna", "done", "cached")
    assert zoe["error"]["code"] == "NO_SUCH_PRESENTER"
