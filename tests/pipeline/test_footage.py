"""Where the weights-free engine cannot work: warnings from a real dlib face track of doctored portraits."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from heygemd import demo
from heygemd.pipeline import footage, mouth
from heygemd.pipeline.faces import FaceTrack, track_faces

dlib = pytest.importorskip("dlib")

VIDEO = Path("lesson-01/bob.mp4")


@pytest.fixture(scope="module")
def detector():
    from heygemd.pipeline.face_detectors import DlibDetector

    return DlibDetector()


@pytest.fixture(scope="module")
def portrait(detector) -> tuple[np.ndarray, np.ndarray]:
    """Head and shoulders of the demo portrait (320x304) and its landmarks."""
    image = np.ascontiguousarray(demo.portrait()[8:312, 80:400])
    box = max(detector.detect(image), key=lambda b: float((b[2] - b[0]) * (b[3] - b[1])))
    return image, detector.landmarks(image, box)


def hand_over_mouth(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A skin-coloured blob (the face's own cheek colour) over the mouth, as a hand held in front of it."""
    centre = points[48:68].mean(axis=0)
    width = float(np.linalg.norm(points[54] - points[48]))
    cheek = image[int(points[29, 1]), int(points[2, 0] + 0.3 * (points[29, 0] - points[2, 0]))].tolist()
    out = image.copy()
    cv2.ellipse(out, (int(centre[0]), int(centre[1])), (int(0.7 * width), int(0.35 * width)), -10, 0, 360, cheek, -1)
    return cv2.GaussianBlur(out, (3, 3), 0)


def phone_over_mouth(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A dark phone held against the mouth and cheek."""
    centre = points[48:68].mean(axis=0)
    width = float(np.linalg.norm(points[54] - points[48]))
    out = image.copy()
    cv2.rectangle(
        out,
        (int(centre[0] - 0.4 * width), int(points[33, 1])),
        (int(centre[0] + 1.2 * width), int(points[8, 1] + 0.3 * width)),
        (40, 40, 45),
        -1,
    )
    return out


def turned(image: np.ndarray, points: np.ndarray, squeeze: float = 0.35) -> np.ndarray:
    """The face's left half squeezed towards the nose, as a head turned to the side foreshortens it."""
    nose = float(points[30, 0])
    xs, ys = np.meshgrid(np.arange(image.shape[1], dtype=np.float32), np.arange(image.shape[0], dtype=np.float32))
    map_x = np.where(xs < nose, nose - (nose - xs) / squeeze, xs).astype(np.float32)
    return cv2.remap(image, map_x, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def codes(frames: list[np.ndarray], detector) -> list[str]:
    track = track_faces(iter(frames), detector)
    assert track.face_ratio > 0.9
    warnings = footage.footage_warnings(track, VIDEO)
    for warning in warnings:
        assert warning.message.startswith(f"{VIDEO}: ")
        assert "musetalk" in warning.hint and "wav2lip" in warning.hint
    return [w.code for w in warnings]


def test_a_clear_frontal_face_gets_no_warning(portrait, detector) -> None:
    image, _ = portrait
    assert codes([image] * 6, detector) == []


def test_a_hand_over_the_mouth(portrait, detector) -> None:
    image, points = portrait
    assert codes([hand_over_mouth(image, points)] * 6, detector) == [footage.COVERED]


def test_a_phone_in_front_of_the_mouth_for_part_of_the_video(portrait, detector) -> None:
    image, points = portrait
    frames = [image] * 6 + [phone_over_mouth(image, points)] * 4
    assert codes(frames, detector) == [footage.COVERED]


def test_a_face_turned_to_the_side(portrait, detector) -> None:
    image, points = portrait
    assert codes([turned(image, points)] * 6, detector) == [footage.PROFILE]


def test_a_face_too_small_for_its_mouth_to_be_seen(portrait, detector) -> None:
    image, _ = portrait
    small = cv2.resize(image, None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
    assert codes([small] * 6, detector) == [footage.TOO_SMALL]


def test_lip_contrast_is_kept_in_the_cached_track(portrait, detector, tmp_path) -> None:
    image, points = portrait
    track = track_faces(iter([image, phone_over_mouth(image, points)]), detector)
    assert track.lip_contrast[0] > footage.COVERED_CONTRAST > track.lip_contrast[1]
    assert track.lip_contrast[0] == pytest.approx(mouth.lip_contrast(image, track.landmarks[0]))
    track.save(tmp_path / "track.npz")
    loaded = FaceTrack.load(tmp_path / "track.npz")
    np.testing.assert_array_equal(loaded.lip_contrast, track.lip_contrast)


def test_the_weights_free_render_reports_warnings_and_still_renders(portrait, detector, tmp_path) -> None:
    from heygemd.engines.mouthwarp import MouthWarpEngine
    from heygemd.pipeline.audio import load_audio_features
    from heygemd.pipeline.run import RenderOptions, render_video
    from tests.engines.talking import encode

    image, points = portrait
    video = encode([phone_over_mouth(image, points)] * 25, tmp_path / "bob.mp4")
    speech = load_audio_features(demo.speech_wav(tmp_path / "hi.wav", sentences=("Hi.",), lead_seconds=0.1))
    result = render_video(
        video,
        speech,
        tmp_path / "out.mp4",
        MouthWarpEngine(),
        detector,
        options=RenderOptions(),
        cache_dir=tmp_path / "cache",
        work_dir=tmp_path / "work",
    )
    assert result.output.is_file() and result.frames > 0
    assert [w.code for w in result.warnings] == [footage.COVERED]
    assert result.warnings[0].message.startswith(f"{video}: ")


def test_the_warnings_follow_the_engines_declared_needs_not_its_name(portrait, detector, tmp_path) -> None:
    """The pipeline knows an engine by its contract: warnings come with ``needs.footage_warnings``, whatever the
    engine is called."""
    import dataclasses

    from heygemd.engines.mouthwarp import MouthWarpEngine
    from heygemd.pipeline.audio import load_audio_features
    from heygemd.pipeline.run import RenderOptions, render_video
    from tests.engines.talking import encode

    class Quiet(MouthWarpEngine):
        needs = dataclasses.replace(MouthWarpEngine.needs, footage_warnings=False)

    class Another(MouthWarpEngine):
        name = "another"

    image, points = portrait
    video = encode([phone_over_mouth(image, points)] * 10, tmp_path / "bob.mp4")
    speech = load_audio_features(demo.speech_wav(tmp_path / "hi.wav", sentences=("Hi.",), lead_seconds=0.1))
    codes = {}
    for engine in (Quiet(), Another()):
        result = render_video(
            video,
            speech,
            tmp_path / f"{type(engine).__name__}.mp4",
            engine,
            detector,
            options=RenderOptions(),
            cache_dir=tmp_path / "cache",
            work_dir=tmp_path / "work",
        )
        codes[type(engine).__name__] = [w.code for w in result.warnings]
    assert codes == {"Quiet": [], "Another": [footage.COVERED]}
