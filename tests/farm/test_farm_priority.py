"""Priorities on a farm, on a real redis-server: tasks go to Redis with kombu's priority levels, so workers take
the highest first, then the oldest, whichever published first; a waiting task's priority can change (its task is
queued again); the intake publishes nothing outside the hours or while paused."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from heygemd.daemon.claims import claim, claimed_jobs, read_claim
from heygemd.daemon.library import LibraryFile, PresenterStatus, read_library_status, scan_library
from heygemd.daemon.lifecycle import Sessions
from heygemd.daemon.preparation import LibraryKeeper, Preparer, Progress
from heygemd.daemon.readiness import Candidate
from heygemd.farm.app import make_app
from heygemd.farm.broker import Broker, broker_priority, level_lists
from heygemd.farm.library import FarmLibrary, presenter_task_id
from heygemd.farm.priority import requeuer
from heygemd.farm.publish import Publisher
from heygemd.settings import EngineSettings, IntakeSettings, QueueSettings, Settings
from tests.daemon.daemon_process import Media
from tests.farm.farm import Farm, RedisServer
from tests.farm.test_farm import FARM_JOB_TIMEOUT_S


def claimed_settings(tmp_path: Path, broker: str, jobs: dict[str, str | None]) -> Settings:
    inbox = tmp_path / "inbox"
    for name, priority in jobs.items():
        (inbox / name).mkdir(parents=True)
        (inbox / name / "speech.wav").write_bytes(b"RIFF")
        (inbox / name / "alice.mp4").write_bytes(b"\0" * 64)
        if priority is not None:
            (inbox / name / "job.toml").write_text(f'priority = "{priority}"\n', encoding="utf-8")
        claim(Candidate(name=name, path=inbox / name), inbox / ".heygemd", now=lambda: datetime.now(timezone.utc))
    paths = {"inbox": inbox, "outbox": tmp_path / "outbox", "models": tmp_path / "models"}
    return Settings(paths=paths, queue=QueueSettings(broker=broker))


def test_tasks_wait_in_priority_order_and_a_waiting_one_can_be_moved(tmp_path: Path, redis_server: RedisServer) -> None:
    settings = claimed_settings(tmp_path, redis_server.url, {"low": "low", "normal": None, "high": "high"})
    publisher = Publisher(settings)
    by_name = {job.job_id: job for job in claimed_jobs(settings.paths.state_dir)}
    for name in ("low", "normal", "high"):  # published oldest first: a plain queue would hand out low first
        assert publisher.publish(by_name[name])
    broker = Broker(redis_server.url)
    assert broker.queued_in_order("heygemd") == ["heygemd-job:high", "heygemd-job:normal", "heygemd-job:low"]
    client = redis_server.client()
    raw = client.lrange(level_lists("heygemd")[broker_priority(8)], 0, -1)
    assert [json.loads(m)["properties"]["priority"] for m in raw] == [1], "high is kombu's level 1 (0 comes first)"
    assert publisher.republish_lost(claimed_jobs(settings.paths.state_dir)) == []  # every level's tasks are seen

    move = requeuer(settings)
    assert move(by_name["low"], 9) is None
    assert broker.queued_in_order("heygemd") == ["heygemd-job:low", "heygemd-job:high", "heygemd-job:normal"]
    moved = read_claim(by_name["low"].path)
    assert moved is not None and moved.priority == 9 and (moved.host, moved.pid) == ("", 0)
    assert broker.acquire("normal", "a worker", 30)  # a worker holds the job: its place cannot change
    assert move(by_name["normal"], 9) == "a worker has taken it"
    assert broker.queued_in_order("heygemd")[-1] == "heygemd-job:normal"


def test_a_presenter_to_prepare_waits_behind_every_job_of_a_named_priority(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    settings = claimed_settings(tmp_path, redis_server.url, {"low": "low"})
    folder = settings.paths.presenters_dir
    folder.mkdir(parents=True)
    (folder / "anna.mp4").write_bytes(b"\0" * 64)
    library = FarmLibrary(settings, Broker(redis_server.url), make_app(settings.queue))
    assert library.publish(scan_library(folder, ready_marker=".ready")[0])  # sent first, a job after it
    (job,) = claimed_jobs(settings.paths.state_dir)
    assert Publisher(settings).publish(job)

    # jobs first: a free worker takes the job, then prepares the presenter
    assert Broker(redis_server.url).queued_in_order("heygemd") == ["heygemd-job:low", presenter_task_id("anna")]


class OnFirstPoll:
    """The real preparer, with ``action`` done at its first stop check (in the face tracking)."""

    def __init__(self, preparer: Preparer, action: Callable[[], object]) -> None:
        self.preparer, self.action = preparer, action
        self.done = False

    def __call__(self, found: LibraryFile, progress: Progress, should_stop: Callable[[], bool]) -> PresenterStatus:
        def stop() -> bool:
            if not self.done:
                self.done = True
                self.action()
            return should_stop()

        return self.preparer(found, progress, stop)


def test_a_worker_preparing_a_presenter_makes_way_for_a_job_task_that_waits(
    tmp_path: Path, redis_server: RedisServer, media: Media
) -> None:
    settings = claimed_settings(tmp_path, redis_server.url, {"lesson": None}).model_copy(
        update={"intake": IntakeSettings(poll_interval=0.01), "engine": EngineSettings(name="mouthwarp", device="cpu")}
    )
    settings.paths.presenters_dir.mkdir(parents=True)
    shutil.copyfile(media.face_a, settings.paths.presenters_dir / "anna.mp4")
    broker = Broker(redis_server.url)
    library = FarmLibrary(settings, broker, make_app(settings.queue))
    (job,) = claimed_jobs(settings.paths.state_dir)
    preparer = Preparer(settings, Sessions(settings))
    # the intake's scan makes the entry; then a job's task arrives while a worker prepares the presenter
    keeper = LibraryKeeper(settings, OnFirstPoll(preparer, lambda: Publisher(settings).publish(job)))
    keeper.scan()

    with capture_logs() as logs:
        assert library.prepare(keeper, "anna", lambda: False, ["heygemd"]) == "yielded"

    assert broker.queued_in_order("heygemd") == ["heygemd-job:lesson", presenter_task_id("anna")]  # the job first
    interrupted = [(e["presenter"], e["why"]) for e in logs if e["event"] == "presenter.interrupted"]
    assert interrupted == [("anna", "a job is ready: lesson")]
    entry = read_library_status(settings.paths.state_dir).entry("anna")
    assert entry is not None and (entry.state, entry.stage) == ("preparing", "queued")
    assert (entry.waiting_for or "").startswith("jobs first (a job is ready: lesson)")

    assert broker.remove_task("heygemd", "heygemd-job:lesson") == 1  # a worker took the job
    assert library.prepare(keeper, "anna", lambda: False, ["heygemd"]) == "prepared"  # the task sent again
    entry = read_library_status(settings.paths.state_dir).entry("anna")
    assert entry is not None and entry.state == "ready" and entry.waiting_for is None


@pytest.mark.slow
def test_three_queued_jobs_run_high_first_on_two_workers(
    farm_factory: Callable[..., Farm], media: Media, redis_server: RedisServer
) -> None:
    farm = farm_factory().start_all("w1", "w2")
    for blocker in ("busy-1", "busy-2"):  # one long job for each worker, so the next three wait in Redis
        farm.submit(blocker, {"speech.wav": media.long_speech, "face.mp4": media.face_large})
    farm.wait_for(
        lambda: all(farm.status(b) and farm.status(b)["state"] == "processing" for b in ("busy-1", "busy-2")),  # type: ignore[index]
        FARM_JOB_TIMEOUT_S,
        "both workers to be busy",
    )
    for name, priority in (("low", "low"), ("normal", "normal"), ("high", "high")):
        files: dict[str, Path | bytes] = {"speech.wav": media.speech, "alice.mp4": media.face_a}
        files["job.toml"] = f'priority = "{priority}"\n'.encode()
        farm.submit(name, files)
        farm.wait_for(lambda name=name: farm.has_event("job.published", job_id=name), 60, f"{name} published")
    queued = Broker(redis_server.url).queued_in_order("heygemd")
    assert queued == ["heygemd-job:high", "heygemd-job:normal", "heygemd-job:low"], "published low first"

    for name in ("busy-1", "busy-2", "low", "normal", "high"):
        assert farm.wait_finished(name, FARM_JOB_TIMEOUT_S)["state"] == "done"
    taken = sorted(
        (str(e["timestamp"]), str(e["job_id"]), worker)
        for worker in ("w1", "w2")
        for e in farm.worker_events(worker)
        if e.get("event") == "job.taken" and e.get("job_id") in ("low", "normal", "high")
    )
    assert [job for _t, job, _w in taken] == ["high", "normal", "low"], taken
    assert {farm.status(n)["priority"] for n in ("high",)} == {8}  # type: ignore[index]
    assert set(farm.renders().values()) == {1}


@pytest.mark.slow
def test_a_paused_intake_publishes_nothing_until_resumed(farm_factory: Callable[..., Farm], media: Media) -> None:
    farm = farm_factory()
    farm.start().wait_ready()  # the intake alone: what it publishes waits in Redis
    assert farm.command("pause").returncode == 0
    farm.submit("held", {"speech.wav": media.speech, "alice.mp4": media.face_a})

    def waits() -> bool:
        try:
            reason = json.loads((farm.state / "waiting.json").read_bytes())["jobs"].get("held", [""])[0]
        except FileNotFoundError:
            return False
        return str(reason).startswith("paused by cli ")

    farm.wait_for(waits, 60, "the job to wait for a resume")
    assert not farm.claimed("held") and not farm.has_event("job.published", job_id="held")
    assert farm.command("resume").returncode == 0
    farm.wait_for(lambda: farm.has_event("job.published", job_id="held"), 60, "the job to be published")
