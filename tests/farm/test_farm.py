"""The farm end to end: a real redis-server, `heygemd run` as the intake and real `heygemd worker` processes
(engine mouthwarp, tiny media) on one shared inbox/outbox."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kombu import Connection

from heygemd.farm.broker import Broker, level_lists
from heygemd.farm.presence import farm_renderers
from heygemd.settings import load_settings
from tests.daemon.daemon_process import Media
from tests.farm.farm import Farm, RedisServer
from tests.pipeline.media import ffmpeg_children

pytestmark = pytest.mark.slow

FARM_JOB_TIMEOUT_S = 240.0  # several jobs on two workers sharing 2 busy cores


def submit_jobs(farm: Farm, media: Media, count: int) -> list[str]:
    names = [f"lesson-{i:02d}" for i in range(1, count + 1)]
    for name in names:
        farm.submit(name, {"speech.wav": media.speech, "alice.mp4": media.face_a})
    return names


def test_two_workers_share_six_jobs_each_rendered_once(farm_factory: Callable[..., Farm], media: Media) -> None:
    farm = farm_factory().start_all("w1", "w2")
    renderers = farm_renderers(load_settings(farm.config))()  # what the web server and `heygemd status` read
    assert [(r.name, r.engines) for r in renderers] == [("w1@test", ("mouthwarp",)), ("w2@test", ("mouthwarp",))]
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


def test_sigkilled_worker_job_completes_on_the_other_once(farm_factory: Callable[..., Farm], media: Media) -> None:
    farm = farm_factory().start_all("w1", "w2")
    farm.submit("long", {"speech.wav": media.long_speech, "alice.mp4": media.face_a, "bob.mp4": media.face_b})

    def second_video_rendering() -> dict | None:
        status = farm.status("long")
        if (
            status
            and [v["state"] for v in status["videos"]] == ["done", "processing"]
            and status["videos"][1]["frames_done"] > 0
        ):
            return status
        return None

    first = farm.wait_for(second_video_rendering, FARM_JOB_TIMEOUT_S, "the second video to be mid-render")
    victim = first["worker"].split("@")[0]
    survivor = "w2" if victim == "w1" else "w1"
    farm.kill_worker(victim)

    status = farm.wait_finished("long", FARM_JOB_TIMEOUT_S)
    assert status["state"] == "done", status
    assert status["worker"] == f"{survivor}@test"
    assert status["attempt"] == first["attempt"] + 1
    assert status["videos"][0]["finished"] == first["videos"][0]["finished"], "the finished video was kept"
    renders = farm.renders()
    assert renders == {("long", "alice.mp4"): 1, ("long", "bob.mp4"): 1}, renders
    assert farm.worker_has(survivor, "video.done", video="bob.mp4")
    assert not farm.worker_has(survivor, "video.done", video="alice.mp4")


def test_redis_restarted_mid_run_every_job_completes_once(
    farm_factory: Callable[..., Farm], media: Media, redis_server: RedisServer
) -> None:
    farm = farm_factory().start_all("w1", "w2")
    names = submit_jobs(farm, media, 4)
    farm.wait_for(
        lambda: any((farm.status(n) or {}).get("state") == "processing" for n in names),
        FARM_JOB_TIMEOUT_S,
        "a job to be processing",
    )

    redis_server.stop()  # without persistence: every queued task and lock is lost
    farm.wait_for(lambda: farm.has_event("queue.unreachable"), 60, "the intake to see the broker gone")
    farm.submit("while-down", {"speech.wav": media.speech, "alice.mp4": media.face_a})
    # a job that was running finishes meanwhile (its worker needs no broker to render)
    farm.wait_for(
        lambda: any((farm.status(n) or {}).get("state") == "done" for n in names),
        FARM_JOB_TIMEOUT_S,
        "a running job to finish while Redis is down",
    )
    assert (farm.inbox / "while-down").is_dir() and not farm.claimed("while-down"), (
        "nothing is claimed while the broker cannot queue it"
    )

    redis_server.start()
    farm.wait_for(lambda: farm.has_event("queue.reachable"), 60, "the intake to see the broker back")
    for name in [*names, "while-down"]:
        status = farm.wait_finished(name, FARM_JOB_TIMEOUT_S)
        assert status["state"] == "done", status
    assert farm.has_event("job.task_lost"), "the jobs queued when Redis went away were published again"
    renders = farm.renders()
    assert sorted(renders) == sorted((name, "alice.mp4") for name in [*names, "while-down"])
    assert set(renders.values()) == {1}, renders


def test_job_whose_task_was_dropped_is_republished(
    farm_factory: Callable[..., Farm], media: Media, redis_server: RedisServer
) -> None:
    farm = farm_factory()
    farm.start().wait_ready()  # no worker yet: the task waits in its queue
    farm.submit("dropped", {"speech.wav": media.speech, "alice.mp4": media.face_a})
    farm.wait_for(lambda: farm.has_event("job.published", job_id="dropped"), 60, "the job to be published")
    client = redis_server.client()

    def queued_ids() -> list[str]:
        return Broker(redis_server.url).queued_in_order("heygemd")

    assert queued_ids() == ["heygemd-job:dropped"]
    client.delete(*level_lists("heygemd"))  # the task is lost; claimed/ still holds the job
    farm.wait_for(lambda: farm.has_event("job.task_lost", job_id="dropped"), 60, "the intake to notice")

    def published() -> int:  # job.task_lost is logged just before the task is sent again
        return sum(1 for e in farm.events() if e.get("event") == "job.published" and e.get("job_id") == "dropped")

    farm.wait_for(lambda: published() == 2, 60, "the job to be published again")
    assert queued_ids() == ["heygemd-job:dropped"], "published again, once"

    farm.start_worker("w1")
    status = farm.wait_finished("dropped", FARM_JOB_TIMEOUT_S)
    assert status["state"] == "done", status
    assert farm.renders() == {("dropped", "alice.mp4"): 1}


def test_sigterm_on_a_worker_interrupts_the_video_and_requeues_the_job(
    farm_factory: Callable[..., Farm], media: Media, redis_server: RedisServer
) -> None:
    farm = farm_factory().start_all("w1")
    worker = farm.workers["w1"]
    farm.submit("long", {"speech.wav": media.long_speech, "alice.mp4": media.face_a, "bob.mp4": media.face_b})

    def second_video_rendering() -> dict | None:
        status = farm.status("long")
        if status and [v["state"] for v in status["videos"]] == ["done", "processing"]:
            return status
        return None

    first = farm.wait_for(second_video_rendering, FARM_JOB_TIMEOUT_S, "the second video to be rendering")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=90) == 0
    interrupted = farm.status("long")
    assert interrupted is not None and [v["state"] for v in interrupted["videos"]] == ["done", "pending"]
    assert farm.worker_has("w1", "job.interrupted")

    queued = Broker(redis_server.url).queued_in_order("heygemd")
    assert queued == ["heygemd-job:long"], "the worker put the task back itself (rejected, requeued)"
    farm.start_worker("w2")  # takes the requeued task and resumes the job
    status = farm.wait_finished("long", FARM_JOB_TIMEOUT_S)
    assert status["state"] == "done" and status["worker"] == "w2@test", status
    assert status["videos"][0]["finished"] == first["videos"][0]["finished"], "the finished video was kept"
    assert farm.renders() == {("long", "alice.mp4"): 1, ("long", "bob.mp4"): 1}


def test_a_running_jobs_task_is_not_redelivered_after_the_visibility_timeout(
    farm_factory: Callable[..., Farm], media: Media, redis_server: RedisServer
) -> None:
    """kombu's Redis transport hands an unacknowledged task to a consumer again once it is older than the
    visibility timeout, when some consumer sweeps (a busy solo worker does not: its loop runs the task). The
    running worker's heartbeat marks its task as delivered now, so the sweep of the idle worker leaves it alone."""
    visibility = 5.0  # 10 heartbeats: a loaded machine may delay a few
    farm = farm_factory(heartbeat_interval=0.5, visibility_timeout=visibility).start_all("w1", "w2")
    files = {"speech.wav": media.long_speech, "alice.mp4": media.face_a, "bob.mp4": media.face_b}
    farm.submit("long", files)
    client = redis_server.client()
    farm.wait_for(
        lambda: (farm.status("long") or {}).get("state") == "processing" and client.hlen("unacked") == 1,
        FARM_JOB_TIMEOUT_S,
        "the job running, its task unacknowledged",
    )
    # Hold the render (its ffmpeg processes stopped) while the worker's heartbeat thread goes on, so the job
    # outlasts the visibility timeout however fast this machine renders.
    busy = farm.workers[str((farm.status("long") or {})["worker"]).split("@")[0]]
    held: set[int] = set()
    since = time.time()

    def hold_for(seconds: float) -> bool:
        for pid in ffmpeg_children(busy.pid, names=("ffmpeg", "ffprobe")):
            os.kill(pid, signal.SIGSTOP)
            held.add(pid)
        return bool(held) and time.time() - since > seconds

    try:
        farm.wait_for(lambda: hold_for(2 * visibility), 60, "the job to outlast the visibility timeout")
        assert (farm.status("long") or {}).get("state") == "processing", "the job must run longer than this"
        # what an idle consumer's poll does (kombu sweeps every unacked_restore_interval x unacked_restore_throttle s)
        with Connection(redis_server.url, transport_options={"visibility_timeout": visibility}) as conn:
            conn.default_channel.qos.restore_visible(num=100)
    finally:
        for pid in held:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    status = farm.wait_finished("long", FARM_JOB_TIMEOUT_S)
    assert status["state"] == "done", status
    idle = "w2" if status["worker"] == "w1@test" else "w1"
    assert not farm.worker_has(idle, "job.duplicate_task"), "the idle worker was not handed the running job"
    assert farm.renders() == {("long", "alice.mp4"): 1, ("long", "bob.mp4"): 1}
    farm.wait_for(  # the worker acknowledges the task when its function returns, just after status.json is final
        lambda: client.llen("heygemd") == 0 and client.hlen("unacked") == 0, 30, "the task acknowledged, nothing left"
    )
    assert farm.renders() == {("long", "alice.mp4"): 1, ("long", "bob.mp4"): 1}, "and still rendered once"


def test_jobs_for_a_gpu_class_go_only_to_the_worker_of_that_class(
    farm_factory: Callable[..., Farm], media: Media
) -> None:
    farm = farm_factory()
    farm.start_worker("big", extra_env={"HEYGEMD_QUEUE__GPU_CLASS": "a100"})
    farm.start_all("small")  # no class: it stays idle while the class's second job waits for "big"
    names = ["a100-1", "a100-2"]
    for name in names:
        farm.submit(name, {"speech.wav": media.speech, "alice.mp4": media.face_a, "job.toml": b'gpu_class = "a100"\n'})
    for name in names:
        status = farm.wait_finished(name, FARM_JOB_TIMEOUT_S)
        assert status["state"] == "done" and status["worker"] == "big@test", status
        assert farm.has_event("job.published", job_id=name, queue="heygemd.gpu.a100")
    assert not farm.worker_has("small", "job.taken"), "a worker without the class took none of its jobs"
    assert farm.renders() == {(name, "alice.mp4"): 1 for name in names}


FULL_TMP_WRAPPER = ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$TMPDIR" && exec "$@"', "full"]
"""Runs a command with a 64 KiB temp filesystem of its own on $TMPDIR (a user and mount namespace)."""


def test_a_job_paused_by_a_full_disk_is_retried_by_another_worker_not_in_a_loop(
    farm_factory: Callable[..., Farm], media: Media, redis_server: RedisServer, tmp_path: Path
) -> None:
    full_tmp = tmp_path / "full-tmp"
    full_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(full_tmp)}
    if shutil.which("unshare") is None or subprocess.run([*FULL_TMP_WRAPPER, "true"], env=env).returncode != 0:
        pytest.skip("needs `unshare -rm` (user and mount namespaces) to give a worker a full temp filesystem")
    farm = farm_factory()
    farm.start_worker("full", extra_env={"TMPDIR": str(full_tmp)}, wrapper=FULL_TMP_WRAPPER)
    farm.start_all()
    # the audio is longer than the video: ping-pong spools frames to TMPDIR, which has no room
    farm.submit("pp", {"speech.wav": media.long_speech, "alice.mp4": media.face_a})
    farm.wait_for(lambda: farm.worker_has("full", "job.retry_later", job_id="pp"), FARM_JOB_TIMEOUT_S, "the pause")
    paused = farm.status("pp")
    assert paused is not None and paused["videos"][0]["state"] == "pending", paused
    assert paused["videos"][0]["error"]["code"] == "DISK_FULL", paused
    queued = Broker(redis_server.url).queued_in_order("heygemd")
    assert queued == ["heygemd-job:pp"], "queued again at once, for any worker"

    farm.start_worker("roomy")
    status = farm.wait_finished("pp", FARM_JOB_TIMEOUT_S)
    assert status["state"] == "done" and status["worker"] == "roomy@test", status
    assert status["attempt"] == paused["attempt"] + 1
    taken = [e for e in farm.worker_events("full") if e.get("event") == "job.taken"]
    assert len(taken) == 1, "the worker with the full disk did not take the job straight back"
    assert not farm.worker_has("full", "worker.resumed"), "it still takes no task (PAUSED_RETRY_SECONDS)"
    assert farm.renders() == {("pp", "alice.mp4"): 1}


def test_celery_events_see_the_worker_and_its_task_while_it_renders(
    farm_factory: Callable[..., Farm], media: Media, redis_server: RedisServer, tmp_path: Path
) -> None:
    """What Flower reads: `celery events --dump` against the farm's broker shows the task started and the
    worker's heartbeat (active=1) while the job renders, although the solo worker's event loop is busy running it."""
    farm = farm_factory().start_all("w1")
    dump = tmp_path / "events.txt"
    with open(dump, "wb") as out:
        events = subprocess.Popen(
            [sys.executable, "-m", "celery", "--broker", redis_server.url, "events", "--dump"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    try:

        def dumped() -> str:
            return dump.read_text(encoding="utf-8", errors="replace")

        farm.wait_for(lambda: "w1@test" in dumped() and "heartbeat: active=0" in dumped(), 60, "an idle heartbeat")
        farm.submit("long", {"speech.wav": media.long_speech, "alice.mp4": media.face_a, "bob.mp4": media.face_b})
        farm.wait_for(lambda: (farm.status("long") or {}).get("state") == "processing", 120, "the job rendering")

        def seen_while_rendering() -> bool:
            text = dumped()
            state = (farm.status("long") or {}).get("state")
            assert state == "processing", f"the job ended ({state}) before its events came\n{text[-3000:]}"
            return "task started: heygemd.render_job(heygemd-job:long)" in text and "heartbeat: active=1" in text

        farm.wait_for(seen_while_rendering, 60, "the task's start and the worker's heartbeat during the job")
        assert farm.wait_finished("long", FARM_JOB_TIMEOUT_S)["state"] == "done"
    finally:
        os.killpg(events.pid, signal.SIGKILL)
        events.wait(timeout=30)
