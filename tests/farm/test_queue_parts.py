"""The farm's parts against a real redis-server: task ids, queues, path mapping, job locks, queued-task lookup,
the publisher's unreachable/reachable reports, `heygemd check`'s broker row and `heygemd status`'s worker column."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from heygemd.check import run_checks
from heygemd.daemon.claims import LEASE_SECONDS, ClaimRecord, claim, claimed_jobs, read_claim
from heygemd.daemon.jobs import load_options
from heygemd.daemon.readiness import Candidate
from heygemd.daemon.status import JobStatus
from heygemd.errors import JobError
from heygemd.farm.app import queue_for, task_id, worker_queues
from heygemd.farm.broker import Broker, shown_url
from heygemd.farm.ownership import lease_seconds
from heygemd.farm.publish import Publisher
from heygemd.farm.task import map_path
from heygemd.layout import CLAIM_FILE
from heygemd.settings import QueueSettings, Settings
from heygemd.status_view import format_status_detail, format_status_table
from tests.farm.farm import RedisServer, free_port
from tests.processes import heygemd_argv


def test_task_id_is_the_job_id_and_queues_follow_the_engine() -> None:
    q = QueueSettings(queue="lip")
    assert task_id("lesson-01") == task_id("lesson-01") == "heygemd-job:lesson-01"
    assert queue_for(q, None) == queue_for(q, "auto") == "lip"
    assert queue_for(q, "wav2lip") == "lip.wav2lip"
    assert worker_queues(q, "mouthwarp") == ["lip", "lip.mouthwarp"]
    assert worker_queues(QueueSettings(queue="lip", engines=["wav2lip", "mouthwarp"]), "mouthwarp") == [
        "lip",
        "lip.wav2lip",
        "lip.mouthwarp",
    ]


def test_gpu_class_queues_are_taken_only_by_workers_of_that_class(tmp_path: Path) -> None:
    q = QueueSettings(queue="lip")
    assert queue_for(q, None, "a100") == "lip.gpu.a100"
    assert queue_for(q, "musetalk", "a100") == "lip.musetalk.gpu.a100"
    assert queue_for(q, "auto", None) == "lip"
    assert worker_queues(QueueSettings(queue="lip", gpu_class="a100"), "musetalk") == [
        "lip",
        "lip.musetalk",
        "lip.gpu.a100",
        "lip.musetalk.gpu.a100",
    ]
    assert not any("gpu" in name for name in worker_queues(q, "musetalk")), "a worker without a class takes none"
    with pytest.raises(ValidationError):
        QueueSettings(gpu_class="A100 fast")  # it is part of a queue name
    toml = tmp_path / "job.toml"
    toml.write_text('gpu_class = "two words"\n', encoding="utf-8")
    with pytest.raises(JobError, match="gpu_class"):
        load_options(toml)


def test_paths_are_mapped_by_the_longest_prefix() -> None:
    mapping = {"/mnt/nas": "/srv/nas", "/mnt/nas/jobs": "/data/jobs"}
    assert map_path("/mnt/nas/inbox/.heygemd/claimed/a", mapping) == Path("/srv/nas/inbox/.heygemd/claimed/a")
    assert map_path("/mnt/nas/jobs/x", mapping) == Path("/data/jobs/x")
    assert map_path("/mnt/nasty/x", mapping) == Path("/mnt/nasty/x")
    assert map_path("/other/x", {}) == Path("/other/x")


def test_broker_url_password_is_hidden() -> None:
    assert shown_url("redis://:s3cret@queue-host:6379/0") == "redis://:***@queue-host:6379/0"
    assert shown_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_job_lock_one_owner_renewed_and_retaken(redis_server: RedisServer) -> None:
    broker = Broker(redis_server.url)
    assert broker.acquire("job", "w1", 30)
    assert not broker.acquire("job", "w2", 30)
    assert broker.renew("job", "w1", 30) and not broker.renew("job", "w2", 30)
    broker.release("job", "w2")  # not the owner: nothing happens
    assert broker.locked("job")
    broker.release("job", "w1")
    assert not broker.locked("job")
    assert broker.renew("job", "w1", 30), "a lock that vanished (Redis restarted) is taken again by its worker"


def _claimed(tmp_path: Path, name: str, job_toml: str | None = None) -> Settings:
    inbox = tmp_path / "inbox"
    (inbox / name).mkdir(parents=True)
    (inbox / name / "speech.wav").write_bytes(b"RIFF")
    (inbox / name / "alice.mp4").write_bytes(b"\0" * 64)
    if job_toml is not None:
        (inbox / name / "job.toml").write_text(job_toml, encoding="utf-8")
    claim(Candidate(name=name, path=inbox / name), inbox / ".heygemd", now=lambda: datetime.now(timezone.utc))
    return Settings(paths={"inbox": inbox, "outbox": tmp_path / "outbox"})


def test_publisher_publishes_once_per_task_id_and_disowns_the_claim(tmp_path: Path, redis_server: RedisServer) -> None:
    base = _claimed(tmp_path, "lesson")
    settings = base.model_copy(update={"queue": QueueSettings(broker=redis_server.url)})
    publisher = Publisher(settings)
    (job,) = claimed_jobs(settings.paths.state_dir)
    assert publisher.reachable()
    assert publisher.publish(job)
    claim_now = read_claim(job.path)
    assert claim_now is not None and (claim_now.host, claim_now.pid) == ("", 0), "no owner until a worker takes it"
    assert publisher.broker.queued_task_ids(["heygemd"]) == {"heygemd-job:lesson"}
    assert publisher.republish_lost(claimed_jobs(settings.paths.state_dir)) == []  # its task is queued


def test_a_job_whose_worker_on_another_host_went_silent_is_republished_after_the_farm_lease(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    base = _claimed(tmp_path, "lesson")
    settings = base.model_copy(update={"queue": QueueSettings(broker=redis_server.url)})
    (job,) = claimed_jobs(settings.paths.state_dir)
    other = ClaimRecord(job_id=job.job_id, name=job.name, claimed_at=job.claimed_at, host="gpu-host-7", pid=4242)
    (job.path / CLAIM_FILE).write_text(other.model_dump_json(), encoding="utf-8")
    publisher = Publisher(settings)
    lease = lease_seconds(settings.queue)
    assert settings.queue.heartbeat_interval < lease < LEASE_SECONDS
    for _ in range(3):  # its heartbeat is fresh: that worker is alive, however often the intake rescans
        assert publisher.republish_lost(claimed_jobs(settings.paths.state_dir)) == []
    silent = time.time() - lease - 5  # no heartbeat for longer than the farm's lease, far less than ten minutes
    os.utime(job.path / CLAIM_FILE, (silent, silent))
    assert publisher.republish_lost(claimed_jobs(settings.paths.state_dir)) == []  # first sighting: a suspect
    assert publisher.republish_lost(claimed_jobs(settings.paths.state_dir)) == ["lesson"]
    assert publisher.broker.queued_task_ids(["heygemd"]) == {"heygemd-job:lesson"}


def test_publisher_and_check_report_an_unreachable_broker(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = Settings(paths={"inbox": tmp_path / "in", "outbox": tmp_path / "out"}, queue=QueueSettings(broker=url))
    assert not Publisher(settings).reachable()
    (row,) = [c for c in run_checks(settings) if c.name == "broker"]
    assert not row.ok and url in row.detail and "redis-server" in row.fix
    assert all(c.name != "broker" for c in run_checks(settings.model_copy(update={"queue": QueueSettings()})))


def test_check_reports_a_reachable_broker(tmp_path: Path, redis_server: RedisServer) -> None:
    settings = Settings(
        paths={"inbox": tmp_path / "in", "outbox": tmp_path / "out"}, queue=QueueSettings(broker=redis_server.url)
    )
    (row,) = [c for c in run_checks(settings) if c.name == "broker"]
    assert row.ok, row


def test_status_shows_the_worker_and_device_of_farm_jobs() -> None:
    farm_job = JobStatus(job_id="a", job_name="a", worker="cuda-1@gpu-2", device="cuda:1")
    local_job = JobStatus(job_id="b", job_name="b")
    table = format_status_table([farm_job, local_job])
    assert "WORKER" in table and "cuda-1@gpu-2 (cuda:1)" in table
    assert "WORKER" not in format_status_table([local_job]), "a single host's table is as before"
    assert "worker    cuda-1@gpu-2  device cuda:1" in format_status_detail(farm_job)
    assert "worker " not in format_status_detail(local_job)


def test_worker_without_a_broker_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "heygemd.toml"
    config.write_text('[paths]\ninbox = "in"\noutbox = "out"\n[engine]\nname = "mouthwarp"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEYGEMD_")}
    done = subprocess.run(
        [*heygemd_argv(), "--config", str(config), "worker"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 1
    assert "queue.broker is not set" in done.stderr and "HEYGEMD_QUEUE__BROKER" in done.stderr


@pytest.mark.parametrize(
    ("job_toml", "queue", "elsewhere"),
    [
        ('engine = "wav2lip"\n', "heygemd.wav2lip", ["heygemd"]),  # not for workers without wav2lip
        ('engine = "musetalk"\ngpu_class = "a100"\n', "heygemd.musetalk.gpu.a100", ["heygemd", "heygemd.musetalk"]),
    ],
)
def test_a_job_asking_for_an_engine_or_a_gpu_class_goes_to_that_queue(
    tmp_path: Path, redis_server: RedisServer, job_toml: str, queue: str, elsewhere: list[str]
) -> None:
    base = _claimed(tmp_path, "lesson", job_toml)
    settings = base.model_copy(update={"queue": QueueSettings(broker=redis_server.url)})
    publisher = Publisher(settings)
    (job,) = claimed_jobs(settings.paths.state_dir)
    assert publisher.publish(job)
    assert publisher.broker.queued_task_ids([queue]) == {"heygemd-job:lesson"}
    assert publisher.broker.queued_task_ids(elsewhere) == set()
    assert publisher.republish_lost(claimed_jobs(settings.paths.state_dir)) == [], "its task is seen where it is"
