"""The jobs' metrics from hand-made folders: status.json files in an outbox, a real claim, inbox folders, cache
files; counted once per finished video, never lower when a job goes away, read again only when a file changed."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from heygemd.daemon.claims import claim
from heygemd.daemon.readiness import Candidate
from heygemd.daemon.status import AudioStatus, ErrorStatus, JobStatus, VideoStatus, write_status
from heygemd.daemon.waiting import write_waiting
from heygemd.layout import STATUS_FILE
from heygemd.metrics.jobs import MAX_AGE_S, JobsCollector
from heygemd.settings import PathsSettings

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def done(name: str, total_s: float, finished_s: float, **cached: bool) -> VideoStatus:
    return VideoStatus(
        input=name, state="done", progress=1.0, finished=at(finished_s), timings={"total": total_s}, cached=cached
    )


def failed(name: str, code: str, finished_s: float) -> VideoStatus:
    return VideoStatus(
        input=name, state="failed", finished=at(finished_s), error=ErrorStatus(code=code, message=f"{name}: {code}")
    )


def job(outbox: Path, folder: str, state: str, videos: list[VideoStatus], **fields: object) -> Path:
    (outbox / folder).mkdir(parents=True, exist_ok=True)
    status = JobStatus(
        job_id=str(fields.pop("job_id", folder)),
        job_name=folder,
        state=state,  # type: ignore[arg-type]
        claimed=T0,
        engine=fields.pop("engine", "mouthwarp"),  # type: ignore[arg-type]
        audio=AudioStatus(file="lesson.wav", duration_s=fields.pop("audio_s", 12.0)),  # type: ignore[arg-type]
        videos=videos,
        **fields,  # type: ignore[arg-type]
    )
    return write_status(outbox / folder / STATUS_FILE, status)  # type: ignore[return-value]


class Scraper:
    """A registry with one JobsCollector over ``root``'s folders, on a clock the test moves."""

    def __init__(self, root: Path) -> None:
        self.paths = PathsSettings(inbox=root / "inbox", outbox=root / "outbox", models=root / "models")
        for folder in (self.paths.inbox, self.paths.outbox):
            folder.mkdir(parents=True, exist_ok=True)
        self.now = 0.0
        self.collector = JobsCollector(self.paths, clock=lambda: self.now)
        self.registry = CollectorRegistry()
        self.registry.register(self.collector)

    def later(self) -> "Scraper":
        self.now += MAX_AGE_S
        return self

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


@pytest.fixture
def scraper(tmp_path: Path) -> Scraper:
    return Scraper(tmp_path)


def test_states_inbox_claims_and_caches_from_the_folders(scraper: Scraper) -> None:
    outbox, inbox, paths = scraper.paths.outbox, scraper.paths.inbox, scraper.paths
    job(outbox, "a", "done", [done("anna.mp4", 3.0, 10)])
    job(outbox, "b", "partial", [done("anna.mp4", 3.0, 10), failed("bob.mp4", "NO_FACE", 11)])
    job(outbox, "c", "processing", [VideoStatus(input="anna.mp4", state="processing")])
    job(outbox, "d", "done", [done("anna.mp4", 3.0, 10)])
    (outbox / "empty").mkdir()  # an outbox folder being made: no status.json yet
    for name in ("claimed-one", "settling", "waiting"):
        (inbox / name).mkdir()
        (inbox / name / "lesson.wav").write_bytes(b"RIFF")
    claim(Candidate("claimed-one", inbox / "claimed-one"), paths.state_dir, outbox=outbox)
    write_waiting(paths.state_dir, {"waiting": ["bob.mp4: 0 bytes so far"]})
    (paths.cache_dir / "faces").mkdir(parents=True)
    (paths.cache_dir / "faces" / "k-1.npz").write_bytes(b"x" * 1000)
    (paths.cache_dir / "faces" / "k-2.npz").write_bytes(b"x" * 24)
    (paths.cache_dir / "presenter").mkdir()
    (paths.cache_dir / "presenter" / "k-1.npy").write_bytes(b"x" * 4096)
    os.symlink("/etc/hostname", paths.cache_dir / "presenter" / "planted.npy")  # never followed nor counted

    expected = {"queued": 3, "processing": 1, "done": 2, "partial": 1, "failed": 0, "cancelled": 0}
    assert {state: scraper.value("heygemd_jobs", state=state) for state in expected} == expected
    assert scraper.value("heygemd_inbox_jobs", phase="waiting") == 1
    assert scraper.value("heygemd_inbox_jobs", phase="settling") == 1
    assert scraper.value("heygemd_claimed_jobs") == 1
    assert scraper.value("heygemd_cache_bytes", cache="faces") == 1024
    assert scraper.value("heygemd_cache_bytes", cache="presenter") == 4096
    assert scraper.value("heygemd_status_files_unreadable") == 0


def test_videos_failures_and_histograms_from_recorded_timings(scraper: Scraper) -> None:
    outbox = scraper.paths.outbox
    job(outbox, "a", "done", [done("anna.mp4", 0.4, 10, faces=True), done("bob.mp4", 5.0, 20, faces=False)])
    job(
        outbox,
        "b",
        "partial",
        [done("anna.mp4", 40.0, 30, faces=True, presenter=False), failed("bob.mp4", "NO_FACE", 31)],
        engine="musetalk",
        audio_s=75.0,
        first_frame=at(2.5),
    )
    job(outbox, "c", "failed", [], error=ErrorStatus(code="AUDIO_TOO_LONG", message="x"), finished=at(1))
    job(outbox, "d", "failed", [failed("x.mp4", "DECODE_FAILED", 5)], engine=None)

    assert scraper.value("heygemd_videos_rendered_total", engine="mouthwarp") == 2
    assert scraper.value("heygemd_videos_rendered_total", engine="musetalk") == 1
    assert scraper.value("heygemd_videos_failed_total", engine="musetalk", code="NO_FACE") == 1
    assert scraper.value("heygemd_videos_failed_total", engine="unknown", code="DECODE_FAILED") == 1
    assert scraper.value("heygemd_job_errors_total", code="AUDIO_TOO_LONG") == 1
    # render seconds: 0.4 in le=1, 5.0 exactly on a bound falls in le=5 (as `le` says), 40 in le=60
    render = {le: scraper.value("heygemd_render_seconds_bucket", engine="mouthwarp", le=le) for le in ("1.0", "5.0")}
    assert render == {"1.0": 1, "5.0": 2}
    assert scraper.value("heygemd_render_seconds_bucket", engine="mouthwarp", le="+Inf") == 2
    assert scraper.value("heygemd_render_seconds_sum", engine="mouthwarp") == pytest.approx(5.4)
    assert scraper.value("heygemd_render_seconds_bucket", engine="musetalk", le="30.0") == 0
    assert scraper.value("heygemd_render_seconds_bucket", engine="musetalk", le="60.0") == 1
    # output seconds: each done video is as long as the job's audio
    assert scraper.value("heygemd_output_seconds_sum", engine="mouthwarp") == 24.0
    assert scraper.value("heygemd_output_seconds_count", engine="mouthwarp") == 2
    assert scraper.value("heygemd_output_seconds_bucket", engine="musetalk", le="60.0") == 0
    assert scraper.value("heygemd_output_seconds_bucket", engine="musetalk", le="120.0") == 1
    # claim (T0) to first frame (T0 + 2.5 s)
    assert scraper.value("heygemd_first_frame_seconds_bucket", engine="musetalk", le="2.5") == 1
    assert scraper.value("heygemd_first_frame_seconds_bucket", engine="musetalk", le="1.0") == 0
    assert scraper.value("heygemd_first_frame_seconds_sum", engine="musetalk") == 2.5
    assert scraper.value("heygemd_first_frame_seconds_count", engine="mouthwarp") is None  # none recorded
    assert scraper.value("heygemd_cache_hits_total", cache="faces") == 2
    assert scraper.value("heygemd_cache_misses_total", cache="faces") == 1
    assert scraper.value("heygemd_cache_misses_total", cache="presenter") == 1
    assert scraper.value("heygemd_cache_hits_total", cache="presenter") == 0


def test_counts_only_grow_and_each_video_counts_once(scraper: Scraper) -> None:
    outbox = scraper.paths.outbox
    job(outbox, "a", "done", [done("anna.mp4", 3.0, 10)])
    job(outbox, "b", "processing", [done("anna.mp4", 3.0, 10), VideoStatus(input="bob.mp4", state="processing")])
    assert scraper.value("heygemd_videos_rendered_total", engine="mouthwarp") == 2

    shutil.rmtree(outbox / "a")  # deleted from the dashboard: what it counted stays counted
    job(outbox, "b", "done", [done("anna.mp4", 3.0, 10), done("bob.mp4", 4.0, 20)], attempt=2)  # bob finished
    scraper.later()
    assert scraper.value("heygemd_jobs", state="done") == 1
    assert scraper.value("heygemd_videos_rendered_total", engine="mouthwarp") == 3
    assert scraper.value("heygemd_render_seconds_count", engine="mouthwarp") == 3

    # a restart resumed the job and rendered anna again (its output had gone): a second render is counted
    job(outbox, "b", "done", [done("anna.mp4", 3.0, 50), done("bob.mp4", 4.0, 20)], attempt=3)
    scraper.later()
    assert scraper.value("heygemd_videos_rendered_total", engine="mouthwarp") == 4


def test_videos_the_check_flagged_are_counted_to_review(scraper: Scraper) -> None:
    from heygemd.quality.report import QualityReason, QualityReport

    flagged = QualityReport(review=True, reasons=[QualityReason(code="WEAK_SYNC", explanation="the mouth drifts")])
    job(
        scraper.paths.outbox,
        "a",
        "done",
        [done("anna.mp4", 3.0, 10).model_copy(update={"quality": flagged}), done("bob.mp4", 3.0, 11)],
    )
    assert scraper.value("heygemd_videos_rendered_total", engine="mouthwarp") == 2
    assert scraper.value("heygemd_videos_to_review_total", engine="mouthwarp") == 1


def test_a_look_answers_scrapes_until_it_is_max_age_old(scraper: Scraper) -> None:
    outbox = scraper.paths.outbox
    assert scraper.value("heygemd_jobs", state="done") == 0
    job(outbox, "a", "done", [done("anna.mp4", 3.0, 10)])
    scraper.now += MAX_AGE_S - 0.1
    assert scraper.value("heygemd_jobs", state="done") == 0, "the look of a moment ago still answers"
    scraper.now += 0.1
    assert scraper.value("heygemd_jobs", state="done") == 1


def test_a_status_file_is_read_again_only_when_it_changed(scraper: Scraper) -> None:
    path = job(scraper.paths.outbox, "a", "done", [done("anna.mp4", 3.0, 10)])
    path = scraper.paths.outbox / "a" / STATUS_FILE
    assert scraper.value("heygemd_videos_rendered_total", engine="mouthwarp") == 1
    before = os.stat(path)
    with open(path, "r+b") as fh:  # the same inode, size and mtime, other bytes: not read again
        fh.write(b"#" * before.st_size)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    scraper.later()
    assert scraper.value("heygemd_status_files_unreadable") == 0
    assert scraper.value("heygemd_jobs", state="done") == 1
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1))  # changed: read, found unreadable
    scraper.later()
    assert scraper.value("heygemd_status_files_unreadable") == 1
    assert scraper.value("heygemd_jobs", state="done") == 1, "the last good reading stands"
    assert scraper.value("heygemd_videos_rendered_total", engine="mouthwarp") == 1


def test_links_and_foreign_files_in_the_outbox_are_never_read(scraper: Scraper, tmp_path: Path) -> None:
    outbox = scraper.paths.outbox
    elsewhere = tmp_path / "elsewhere"
    job(elsewhere, "x", "done", [done("anna.mp4", 3.0, 10)])
    os.symlink(elsewhere / "x", outbox / "linked-folder")
    (outbox / "linked-file").mkdir()
    os.symlink(elsewhere / "x" / STATUS_FILE, outbox / "linked-file" / STATUS_FILE)
    (outbox / "fifo").mkdir()
    os.mkfifo(outbox / "fifo" / STATUS_FILE)
    (outbox / "foreign").mkdir()
    (outbox / "foreign" / STATUS_FILE).write_text('{"hello": "world"}', encoding="utf-8")
    assert scraper.value("heygemd_videos_rendered_total", engine="mouthwarp") is None
    assert scraper.value("heygemd_jobs", state="done") == 0
    assert scraper.value("heygemd_status_files_unreadable") == 1  # the foreign file; links and the FIFO are skipped


def test_missing_folders_give_zeros(tmp_path: Path) -> None:
    collector = JobsCollector(PathsSettings(inbox=tmp_path / "no-inbox", outbox=tmp_path / "no-outbox"))
    registry = CollectorRegistry()
    registry.register(collector)
    assert registry.get_sample_value("heygemd_jobs", {"state": "queued"}) == 0
    assert registry.get_sample_value("heygemd_claimed_jobs") == 0
    assert registry.get_sample_value("heygemd_cache_bytes", {"cache": "faces"}) == 0
