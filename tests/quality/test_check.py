"""The check on real renders and real files (mouthwarp, dlib, ffmpeg): what is right passes, what is wrong is
flagged with its reason, and ``heygemd score`` says the same for any video."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from heygemd.quality.check import Rendering, check_render, score_file
from heygemd.quality.report import QualityReport
from heygemd.settings import QualitySettings
from tests.quality import media
from tests.quality.conftest import Material

pytestmark = pytest.mark.slow
THRESHOLDS = QualitySettings()
FPS = 25.0


def checked(render: media.Render, output: Path | None = None) -> QualityReport:
    """The daemon's check of ``output`` (default: the render's own), made from ``render``'s presenter and track."""
    return check_render(output or render.output, render.audio, Rendering.of(render.result), THRESHOLDS)


@pytest.fixture(scope="module")
def good_score(material: Material) -> QualityReport:
    return score_file(material.good.output, THRESHOLDS)


def test_a_good_render_is_not_flagged(material: Material) -> None:
    report = checked(material.good)
    assert not report.review, report.reasons
    # mouthwarp's mouth leads its sound by about 60 ms, as speech does
    assert report.av_offset_ms is not None and 20 <= report.av_offset_ms <= 100
    assert report.sync is not None and report.sync > 0.8
    assert report.frozen == 0.0 and report.face_coverage == 1.0
    assert report.silence_motion is not None and report.silence_motion < 0.3
    assert report.seam is not None and report.seam < 3.0


@pytest.mark.parametrize("shift_s", [0.4, -0.4])
def test_the_offset_of_a_shifted_sound_is_measured_within_a_frame(
    material: Material, good_score: QualityReport, shift_s: float
) -> None:
    shifted = media.mux(
        material.good.output, material.speech.path, material.root / f"shift{shift_s}.mp4", shift_s=shift_s
    )
    report = score_file(shifted, THRESHOLDS)
    assert report.av_offset_frames is not None and good_score.av_offset_frames is not None
    assert abs(report.av_offset_frames - good_score.av_offset_frames - shift_s * FPS) <= 1.0
    assert report.review and "AV_OFFSET" in report.codes()


def test_a_source_with_a_foreign_audio_is_flagged_weak_sync(material: Material) -> None:
    foreign = media.mux(material.talking_a, material.voice_b.wav, material.root / "foreign.mp4")
    report = score_file(foreign, THRESHOLDS)
    assert report.review and "WEAK_SYNC" in report.codes(), report


def test_a_render_with_a_colour_step_at_the_mask_is_flagged_seam(material: Material) -> None:
    report = checked(material.good, media.seamed(material.good, material.root / "seam.mp4", step=12.0))
    assert report.review and report.codes() == ["SEAM"], report


def test_a_render_whose_mouth_shakes_is_flagged_jitter(material: Material) -> None:
    report = checked(material.good, media.jittered(material.good, material.root / "jitter.mp4", shake=0.05))
    assert report.review and report.codes() == ["JITTER"], report


def score(heygemd_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(heygemd_bin), "score", *args], capture_output=True, text=True, timeout=300)


def test_score_prints_the_verdict_of_a_video_with_sound(heygemd_bin: Path, material: Material) -> None:
    proc = score(heygemd_bin, str(material.good.output))
    assert proc.returncode == 0, proc.stderr
    assert "video    good.mp4 (against its own sound)" in proc.stdout
    assert "verdict  ok" in proc.stdout
    offset = next(line for line in proc.stdout.splitlines() if line.startswith("av offset"))
    assert " ms (+" in offset, offset


def test_score_of_a_still_presenter_and_a_separate_speech_says_frozen(heygemd_bin: Path, material: Material) -> None:
    proc = score(heygemd_bin, str(material.presenter), "--audio", str(material.speech.path), "--json")
    assert proc.returncode == 0, proc.stderr
    report = QualityReport.model_validate(json.loads(proc.stdout))
    assert report.review and "FROZEN_MOUTH" in report.codes(), report
    assert report.frozen is not None and report.frozen > 0.9


def test_score_names_a_video_without_sound_and_what_to_do(heygemd_bin: Path, material: Material) -> None:
    proc = score(heygemd_bin, str(material.presenter))
    assert proc.returncode == 1
    assert "NO_AUDIO_STREAM" in proc.stderr and "presenter.mp4" in proc.stderr and "--audio" in proc.stderr
