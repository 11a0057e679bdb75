"""Stalled uploads: media files that are not complete yet (0 bytes, zero-filled, an MP4 without its index, open for
writing) keep a settled job waiting, until intake.incomplete_timeout; real ffmpeg files, a real writer process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from heygemd.daemon.completeness import CompletenessCheck, content_problem, open_for_writing
from heygemd.daemon.readiness import Candidate, ReadinessTracker, ReadyReason
from heygemd.pipeline.probe import top_level_atoms
from tests.pipeline.media import ffmpeg, lavfi_clip, requires_ffmpeg, sine

pytestmark = requires_ffmpeg


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete H.264 MP4 written without +faststart: its index (moov) comes after the media data."""
    out = tmp_path_factory.mktemp("clip") / "clip.mp4"
    lavfi_clip(out, seconds=1)
    names = [name for name, _, _ in top_level_atoms(out)]
    assert names.index("moov") > names.index("mdat"), names
    return out


def moov_cut_off(clip: Path, out: Path) -> Path:
    """``clip`` up to (not including) its moov box: what an upload looks like before the last bytes arrive."""
    moov = next(offset for name, offset, _ in top_level_atoms(clip) if name == "moov")
    out.write_bytes(clip.read_bytes()[:moov])
    return out


def test_complete_media_pass(clip: Path, tmp_path: Path) -> None:
    assert content_problem(clip) is None
    assert content_problem(sine(tmp_path / "voice.wav", 0.5)) is None
    assert content_problem(sine(tmp_path / "voice.m4a", 0.5, "-c:a", "aac")) is None


def test_empty_zero_filled_and_unindexed_files_are_incomplete(clip: Path, tmp_path: Path) -> None:
    empty = tmp_path / "a.mp4"
    empty.touch()
    zeros = tmp_path / "b.mov"
    zeros.write_bytes(bytes(clip.stat().st_size))  # a Windows client sets the final size first, then fills in
    assert content_problem(empty) == "0 bytes so far"
    assert content_problem(zeros) == "only zeros so far"
    assert content_problem(moov_cut_off(clip, tmp_path / "c.mp4")) == "no index ('moov' box) yet"
    half = tmp_path / "d.mp4"
    half.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    assert "box needs" in (content_problem(half) or "")


def test_a_file_that_is_no_mp4_at_all_is_left_to_fail_as_not_media(tmp_path: Path) -> None:
    junk = tmp_path / "broken.mp4"
    junk.write_bytes(b"this is not a video at all")
    assert content_problem(junk) is None  # complete as far as an upload goes: it fails later with NOT_MEDIA


def test_write_lease_probe_sees_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "upload.mp4"
    path.write_bytes(b"x" * 100)
    assert open_for_writing(path) is False
    code = "import sys; f = open(sys.argv[1], 'ab'); print('open', flush=True); sys.stdin.read()"
    writer = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == b"open\n"  # the writer holds it open now
        assert open_for_writing(path) is True
    finally:
        assert writer.stdin is not None
        writer.stdin.close()
        writer.wait(10)
    assert open_for_writing(path) is False


def test_content_checks_run_once_per_unchanged_file(clip: Path, tmp_path: Path) -> None:
    calls: list[str] = []

    def content(path: Path) -> str | None:
        calls.append(path.name)
        return content_problem(path)

    job = tmp_path / "job"
    job.mkdir()
    (job / "a.mp4").write_bytes(clip.read_bytes())
    (job / "notes.txt").write_text("not media: never probed")
    check = CompletenessCheck(content=content, lease=None)
    entries = [("a.mp4", clip.stat().st_size, (job / "a.mp4").stat().st_mtime_ns), ("notes.txt", 3, 1)]
    assert check.incomplete(job, entries) == ()
    assert check.incomplete(job, entries) == ()
    assert calls == ["a.mp4"]


def _tracker(clock: FakeClock, timeout: float) -> ReadinessTracker:
    return ReadinessTracker(
        settle_seconds=10, completeness=CompletenessCheck(lease=None), incomplete_timeout=timeout, clock=clock
    )


def test_a_presenter_at_zero_bytes_waits_past_the_settle_time_until_complete(clip: Path, tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = _tracker(clock, timeout=1800)
    job = Candidate("lesson-01", tmp_path / "lesson-01")
    job.path.mkdir()
    sine(job.path / "voice.wav", 0.5)
    (job.path / "bob.mp4").touch()  # smbclient keeps it at 0 bytes for the whole upload
    assert tracker.observe(job).reason is ReadyReason.SETTLING
    clock.t += 600  # far longer than the settle time
    verdict = tracker.observe(job)
    assert verdict.reason is ReadyReason.INCOMPLETE and not verdict.ready
    assert verdict.incomplete == ("bob.mp4: 0 bytes so far",)
    assert tracker.next_deadline() == pytest.approx(1200)
    (job.path / "bob.mp4").write_bytes(clip.read_bytes())  # then written at once
    assert tracker.observe(job).reason is ReadyReason.SETTLING  # a change: settle again
    clock.t += 10
    assert tracker.observe(job).reason is ReadyReason.SETTLED


def test_an_mp4_without_its_index_is_taken_after_the_timeout(clip: Path, tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = _tracker(clock, timeout=120)
    job = Candidate("lesson-02", tmp_path / "lesson-02")
    job.path.mkdir()
    sine(job.path / "voice.wav", 0.5)
    moov_cut_off(clip, job.path / "anna.mp4")
    assert tracker.observe(job).reason is ReadyReason.SETTLING
    clock.t += 10
    verdict = tracker.observe(job)
    assert verdict.reason is ReadyReason.INCOMPLETE and verdict.incomplete == ("anna.mp4: no index ('moov' box) yet",)
    clock.t += 109
    assert not tracker.observe(job).ready
    clock.t += 1
    verdict = tracker.observe(job)
    assert verdict.reason is ReadyReason.TIMED_OUT and verdict.ready  # taken: anna.mp4 fails with its own error


def test_a_ready_job_is_taken_at_once_and_a_broken_file_then_fails_with_its_own_error(
    clip: Path, tmp_path: Path
) -> None:
    tracker = _tracker(FakeClock(), timeout=1800)
    job = Candidate("lesson-03", tmp_path / "lesson-03")
    job.path.mkdir()
    sine(job.path / "voice.wav", 0.5)
    moov_cut_off(clip, job.path / "anna.mp4")
    (job.path / "bob.mp4").touch()
    (job.path / ".ready").touch()  # the uploader says the copy is complete: heygemd does not second-guess it
    verdict = tracker.observe(job)
    assert verdict.reason is ReadyReason.MARKER and verdict.ready


def test_a_complete_file_that_ffprobe_reads_is_complete_whatever_it_starts_or_lasts(tmp_path: Path) -> None:
    cover = tmp_path / "cover.png"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x64", "-frames:v", "1", str(cover))
    picture = tmp_path / "picture.mp4"  # its only stream is an attached picture: no duration at all
    ffmpeg("-i", str(cover), "-map", "0", "-c:v", "mjpeg", "-disposition:v:0", "attached_pic", str(picture))
    mp3 = sine(tmp_path / "plain.mp3", 1.0)
    padded = tmp_path / "padded.mp3"  # leading zero padding, which MP3 decoders skip
    padded.write_bytes(bytes(8192) + mp3.read_bytes())
    assert content_problem(picture) is None
    assert content_problem(padded) is None
    zeros = tmp_path / "zeros.mp3"  # preallocated, not filled in yet: nothing ffprobe can read
    zeros.write_bytes(bytes(padded.stat().st_size))
    assert content_problem(zeros) == "only zeros so far"


def test_a_media_file_swapped_for_a_fifo_while_it_is_checked_never_blocks_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # someone on the share replaces a file by a FIFO right after the scan saw a regular file of 100 bytes there
    fifo = tmp_path / "anna.mp4"
    os.mkfifo(fifo)
    monkeypatch.setattr(os.path, "getsize", lambda _path: 100)
    result: list[str | None] = []
    checking = threading.Thread(target=lambda: result.append(content_problem(fifo)), daemon=True)
    checking.start()
    checking.join(10)
    if checking.is_alive():  # blocked opening the FIFO: a writer lets it go
        with open(fifo, "wb"):
            pass
    assert result == [None]  # not a copy in progress: the job (or the library) refuses it as NOT_A_FILE
