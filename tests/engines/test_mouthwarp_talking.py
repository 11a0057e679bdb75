"""The weights-free engine on talking footage: the source's own mouth motion is replaced, not kept underneath.

The fixture is a presenter talking to recording A (the portrait made to speak by the engine itself), then
re-rendered through the whole pipeline (real ffmpeg, dlib track, paste) with recording B. heygemd's own
landmark pipeline measures the output's inner-lip gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from heygemd.engines.mouthwarp import MouthWarpEngine, articulate, warp_crop
from heygemd.pipeline import mouth
from heygemd.pipeline.engine_contract import FaceBatch
from heygemd.pipeline.face_detectors import DlibDetector
from heygemd.pipeline.run import RenderOptions, render_video
from tests.engines import talking

pytest.importorskip("dlib")


@dataclass(frozen=True)
class Redriven:
    source_gap: np.ndarray
    output_gap: np.ndarray
    loudness_a: np.ndarray
    loudness_b: np.ndarray


@pytest.fixture(scope="module")
def detector() -> DlibDetector:
    return DlibDetector()


@pytest.fixture(scope="module")
def redriven(tmp_path_factory: pytest.TempPathFactory, detector: DlibDetector) -> Redriven:
    tmp = tmp_path_factory.mktemp("talking")
    voice_a = talking.speech(tmp / "a.wav", talking.SCRIPT_A)
    voice_b = talking.speech(tmp / "b.wav", talking.SCRIPT_B)
    source = talking.encode(talking.talking_frames(detector, voice_a), tmp / "presenter.mp4")
    result = render_video(
        source,
        voice_b.features,
        tmp / "out.mp4",
        MouthWarpEngine(),
        detector,
        options=RenderOptions(),
        cache_dir=tmp / "cache",
        work_dir=tmp / "work",
    )
    n = min(voice_a.features.frame_count(talking.FPS), voice_b.features.frame_count(talking.FPS))
    return Redriven(
        source_gap=talking.inner_lip_gaps(source, detector)[:n],
        output_gap=talking.inner_lip_gaps(result.output, detector)[:n],
        loudness_a=voice_a.loudness(n),
        loudness_b=voice_b.loudness(n),
    )


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    both = np.isfinite(a) & np.isfinite(b)
    assert both.mean() > 0.95
    return float(np.corrcoef(a[both], b[both])[0, 1])


def test_the_fixture_talks_to_its_own_recording(redriven: Redriven) -> None:
    assert correlation(redriven.source_gap, redriven.loudness_a) > 0.8
    assert abs(correlation(redriven.loudness_a, redriven.loudness_b)) < 0.3  # two different rhythms


def test_the_output_mouth_follows_the_new_speech_not_the_old(redriven: Redriven) -> None:
    with_new = correlation(redriven.output_gap, redriven.loudness_b)
    with_old = correlation(redriven.output_gap, redriven.loudness_a)
    assert with_new > 0.75
    assert with_new - with_old > 0.4


def test_the_output_mouth_is_shut_where_the_new_speech_pauses(redriven: Redriven) -> None:
    rest = np.nanmin(redriven.source_gap)
    pause = (redriven.loudness_b == 0.0) & (redriven.loudness_a > 0.5)  # the old speech was loud here
    assert pause.sum() >= 5
    source_open = np.nanmedian(redriven.source_gap[pause]) - rest
    output_open = np.nanmedian(redriven.output_gap[pause]) - rest
    assert source_open > 0.08
    assert output_open < 0.4 * source_open


# --- single crops ---------------------------------------------------------------------------------------

SILENCE = np.full((80, 16), -4.0, dtype=np.float32)


@pytest.fixture(scope="module")
def portrait(detector: DlibDetector) -> tuple[np.ndarray, np.ndarray]:
    image = np.ascontiguousarray(talking.demo.portrait()[8:312, 80:400])
    box = max(detector.detect(image), key=lambda b: float((b[2] - b[0]) * (b[3] - b[1])))
    return image, detector.landmarks(image, box).astype(np.float32)


def test_a_closed_source_in_silence_stays_bit_for_bit_with_its_rest(portrait) -> None:
    image, points = portrait
    rest = mouth.rest_state(points[None])
    (out,) = MouthWarpEngine().generate(
        FaceBatch(crops=[image], landmarks=[points], mels=SILENCE[None], mouth_rest=rest)
    )
    assert np.array_equal(out, image)


def test_a_mouth_at_rest_moves_exactly_as_without_a_rest(portrait) -> None:
    image, points = portrait
    loud = np.full((80, 16), -4.0, dtype=np.float32)
    loud[5:60] = 0.3
    engine = MouthWarpEngine()
    plain = engine.generate(FaceBatch(crops=[image], landmarks=[points], mels=loud[None]))[0]
    rested = engine.generate(
        FaceBatch(crops=[image], landmarks=[points], mels=loud[None], mouth_rest=mouth.rest_state(points[None]))
    )[0]
    assert not np.array_equal(plain, image)
    assert np.array_equal(plain, rested)


def test_an_open_source_mouth_in_silence_is_closed_without_a_smear(portrait, detector) -> None:
    image, points = portrait
    rest = mouth.rest_state(points[None])
    loud = np.full((80, 16), -4.0, dtype=np.float32)
    loud[5:60] = 0.5
    opened = warp_crop(image, points, articulate(loud[None])[0]).image
    box = detector.detect(opened)[0]
    open_points = detector.landmarks(opened, box)
    closed = warp_crop(opened, open_points, articulate(SILENCE[None])[0], rest=rest).image
    closed_points = detector.landmarks(closed, box)
    assert mouth.measure(open_points).gap > rest.gap + 0.1
    assert mouth.measure(closed_points).gap < rest.gap + 0.05
    # The dark interior of the opened mouth is hidden, not squashed into a dark band between the lips.
    lips = np.zeros(image.shape[:2], dtype=bool)
    x0, y0 = np.floor(points[48:60].min(axis=0)).astype(int)
    x1, y1 = np.ceil(points[48:60].max(axis=0)).astype(int)
    lips[y0 : y1 + 1, x0 : x1 + 1] = True
    dark = lambda im: int((im[lips].astype(np.float64) @ [0.114, 0.587, 0.299] < 60).sum())  # noqa: E731
    assert dark(opened) > 4 * max(dark(image), 10)
    assert dark(closed) < 0.35 * dark(opened)  # a thin line of it may stay where the landmarks missed it
