"""The worker's side of the check: what status.json records, what a video to review gets (flag or retry), and that
a check that fails never fails the video nor the job.

The sessions here "render" by copying a prepared file (a real video); the check on it is the real one.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog
import structlog.testing

from heygemd.daemon import claims, readiness, review
from heygemd.daemon.status import JobStatus
from heygemd.daemon.worker import JobContext, process_job
from heygemd.fsutil import InputFile, input_path
from heygemd.pipeline.audio import AudioFeatures, load_audio_features
from heygemd.pipeline.run import RenderResult
from heygemd.settings import QualitySettings
from tests.quality.conftest import Material

pytestmark = pytest.mark.slow


@dataclass
class _Engine:
    identity: str = "copy-1"


@dataclass
class CopyingSession:
    """Renders by copying ``made`` (or writing ``made`` when it is bytes) to the output."""

    made: Path | bytes
    engine_name: str = "first"
    others: tuple[str, ...] = ()
    rendered: list[str] = field(default_factory=list)
    engine: _Engine = field(default_factory=_Engine)

    def audio(self, source: Path | InputFile, **_: object) -> AudioFeatures:
        return load_audio_features(input_path(source))

    def render(self, video: InputFile, audio: AudioFeatures, output: Path, **_: object) -> RenderResult:
        if isinstance(self.made, bytes):
            output.write_bytes(self.made)
        else:
            shutil.copyfile(self.made, output)
        self.rendered.append(video.name)
        return RenderResult(output, None, 1, 25.0, 1.0, "stand-in", False, {"total": 0.1})

    def alternatives(self) -> tuple[str, ...]:
        return self.others

    def configure(self, overrides: object = None) -> dict[str, object]:
        return {}

    def release(self) -> None:
        pass


def run_job(
    tmp_path: Path, material: Material, sessions: dict[str | None, CopyingSession], **quality: object
) -> JobStatus:
    folder = tmp_path / "inbox" / "lesson"
    folder.mkdir(parents=True)
    shutil.copyfile(material.speech.path, folder / "voice.wav")
    for name in ("a.mp4", "b.mp4"):
        (folder / name).write_bytes(b"presenter")  # the copying sessions never read it
    claimed = claims.claim(readiness.Candidate("lesson", folder), tmp_path / "inbox" / ".heygemd")
    assert claimed is not None
    context = JobContext(
        session_for=lambda engine: sessions[engine],  # type: ignore[arg-type, return-value]
        quality=QualitySettings(**quality),  # type: ignore[arg-type]
    )
    status = process_job(claimed, tmp_path / "outbox", context).status
    assert status is not None
    return status


def test_a_video_to_review_is_flagged_and_stays_done(tmp_path: Path, material: Material) -> None:
    frozen = CopyingSession(material.presenter)  # a presenter whose mouth never moves to the speech
    status = run_job(tmp_path, material, {None: frozen})
    assert status.state == "done" and [v.state for v in status.videos] == ["done", "done"]
    for video in status.videos:
        assert video.quality is not None and video.quality.review, video
        assert "FROZEN_MOUTH" in video.quality.codes() and video.quality_error is None
        assert video.retry is None
    assert status.videos_to_review == 2


def test_retry_renders_with_another_engine_and_keeps_a_render_that_passes(tmp_path: Path, material: Material) -> None:
    first = CopyingSession(material.presenter, others=("second",))
    second = CopyingSession(material.good.output, engine_name="second")
    status = run_job(tmp_path, material, {None: first, "second": second}, on_review="retry")
    assert status.state == "done" and status.videos_to_review == 0
    for video in status.videos:
        assert video.retry is not None and video.retry.engine == "second" and video.retry.kept, video
        assert video.quality is not None and not video.quality.review and video.quality == video.retry.quality
        output = tmp_path / "outbox" / "lesson" / (video.output or "")
        assert output.read_bytes() == material.good.output.read_bytes()
    assert second.rendered == ["a.mp4", "b.mp4"]
    assert not [p.name for p in (tmp_path / "outbox" / "lesson").iterdir() if p.name.startswith(".")]


def test_a_retry_that_is_no_better_leaves_the_first_render(tmp_path: Path, material: Material) -> None:
    first = CopyingSession(material.presenter, others=("second",))
    second = CopyingSession(material.presenter, engine_name="second")
    status = run_job(tmp_path, material, {None: first, "second": second}, on_review="retry")
    video = status.videos[0]
    assert video.retry is not None and not video.retry.kept and video.retry.quality is not None
    assert video.quality is not None and video.quality.review and status.videos_to_review == 2
    assert (tmp_path / "outbox" / "lesson" / "a.mp4").read_bytes() == material.presenter.read_bytes()
    assert not [p.name for p in (tmp_path / "outbox" / "lesson").iterdir() if p.name.startswith(".")]


def test_without_another_engine_a_retry_is_only_a_flag(tmp_path: Path, material: Material) -> None:
    status = run_job(tmp_path, material, {None: CopyingSession(material.presenter)}, on_review="retry")
    assert status.state == "done" and status.videos_to_review == 2
    assert all(v.retry is None for v in status.videos)


def test_an_output_that_cannot_be_checked_is_done_with_the_reason(tmp_path: Path, material: Material) -> None:
    status = run_job(tmp_path, material, {None: CopyingSession(b"not a video")})
    assert status.state == "done" and status.videos_to_review == 0
    for video in status.videos:
        assert video.state == "done" and video.quality is None
        assert video.quality_error is not None and video.quality_error.code == "NOT_MEDIA", video
        assert video.quality_error.message.startswith(f"lesson/{video.output}: "), video.quality_error


def test_a_check_that_crashes_never_fails_the_video_or_the_job(
    tmp_path: Path, material: Material, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def crashing(output: Path, *_: object, **__: object) -> None:
        calls.append(output)
        raise ZeroDivisionError("a bug in the check")

    monkeypatch.setattr(review, "check_render", crashing)
    session = CopyingSession(material.good.output)
    with structlog.testing.capture_logs() as logged:
        status = run_job(tmp_path, material, {None: session})
    assert len(calls) == 2 and session.rendered == ["a.mp4", "b.mp4"], "the next video was still rendered"
    assert status.state == "done"
    for video in status.videos:
        assert video.state == "done" and video.quality is None and video.quality_error is not None
        assert video.quality_error.code == "INTERNAL" and "a bug in the check" in video.quality_error.message
    events = [entry["event"] for entry in logged]
    assert events.count("check.crashed") == 2 and "job.done" in events


def test_the_check_can_be_turned_off(tmp_path: Path, material: Material) -> None:
    status = run_job(tmp_path, material, {None: CopyingSession(material.presenter)}, enabled=False)
    assert all(v.quality is None and v.quality_error is None for v in status.videos)
