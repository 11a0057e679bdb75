"""Face detection, landmarks, tracking, gaps, smoothing and the track cache — with real dlib on real images.

The images are the public-domain astronaut portrait (heygemd.demo). At 640x360 the presenter frames show
the face around (231,79)-(355,203).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from heygemd.demo import portrait, presenter_frames
from heygemd.errors import CheckpointError, ConfigError
from heygemd.pipeline.face_detectors import FAN_WEIGHTS, S3FD_WEIGHTS
from heygemd.pipeline.faces import (
    DlibDetector,
    FaceTrack,
    TrackFileError,
    cache_path,
    cached_track,
    make_detector,
    track_faces,
    track_fingerprint,
    video_content_key,
)

REPO = Path(__file__).resolve().parents[2]
KNOWN_FACE = np.array([231, 79, 355, 203], dtype=np.float32)  # the face in presenter_frames at 640x360


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, float(w)) * max(0.0, float(h))
    area = lambda r: float((r[2] - r[0]) * (r[3] - r[1]))  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def jerk(boxes: np.ndarray) -> float:
    """Mean absolute second difference of box coordinates: how much the box shakes frame to frame."""
    return float(np.abs(np.diff(boxes, 2, axis=0)).mean())


def assert_sane_landmarks(points: np.ndarray, box: np.ndarray) -> None:
    assert points.shape == (68, 2) and points.dtype == np.float32
    w, h = box[2] - box[0], box[3] - box[1]
    # dlib's box ends near the chin, so allow the jaw line a little outside it.
    assert (points[:, 0] >= box[0] - 0.2 * w).all() and (points[:, 0] <= box[2] + 0.2 * w).all()
    assert (points[:, 1] >= box[1] - 0.2 * h).all() and (points[:, 1] <= box[3] + 0.2 * h).all()
    eyes_y = points[36:48, 1].mean()
    nose_y = points[27:36, 1].mean()
    mouth_y = points[48:68, 1].mean()
    assert eyes_y < nose_y < mouth_y
    left_eye_x, right_eye_x = points[36:42, 0].mean(), points[42:48, 0].mean()
    assert left_eye_x < points[48:68, 0].mean() < right_eye_x  # mouth centred between the eyes
    assert points[8, 1] > mouth_y  # chin below the mouth


@pytest.fixture(scope="module")
def detector() -> DlibDetector:
    return DlibDetector()


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    """36 presenter frames (1.44 s at 25 fps), 640x360."""
    return list(presenter_frames(36 / 25))


def cover_face(frame: np.ndarray) -> np.ndarray:
    """The frame with the face hidden behind a grey card (as if the presenter turned away or held up a page)."""
    out = frame.copy()
    out[40:260, 180:420] = 128
    return out


# ----------------------------------------------------------------------------------- detection, landmarks


def test_dlib_finds_the_presenter_face_with_sane_landmarks(detector, clip):
    boxes = detector.detect(clip[0])
    assert len(boxes) == 1
    assert iou(boxes[0], KNOWN_FACE) > 0.5
    assert_sane_landmarks(detector.landmarks(clip[0], boxes[0]), boxes[0])


def test_dlib_finds_the_face_in_the_full_portrait(detector):
    image = portrait()  # 512x512, face around x 170-300, y 40-220
    boxes = detector.detect(image)
    assert len(boxes) == 1
    cx, cy = (boxes[0][0] + boxes[0][2]) / 2, (boxes[0][1] + boxes[0][3]) / 2
    assert 170 < cx < 300 and 40 < cy < 220
    assert_sane_landmarks(detector.landmarks(image, boxes[0]), boxes[0])


def test_non_contiguous_frames_are_handled(detector, clip):
    view = np.ascontiguousarray(clip[0][:, :, ::-1])[:, :, ::-1]  # a BGR view with negative strides
    assert not view.flags.c_contiguous
    box = detector.detect(view)[0]
    np.testing.assert_allclose(detector.landmarks(view, box), detector.landmarks(clip[0], box))


# ----------------------------------------------------------------------------------------------- tracking


def test_track_covers_every_frame_with_padded_clamped_boxes(detector, clip):
    frames = clip[:20]
    done: list[int] = []
    track = track_faces(iter(frames), detector, pads=(0, 10, 0, 0), progress=done.append)
    bare = track_faces(iter(frames), detector, pads=(0, 0, 0, 0))
    assert len(track) == 20 and track.frame_size == (640, 360) and track.detector == "dlib-hog"
    assert track.face_ratio == 1.0 and track.missing_runs() == []
    assert track.boxes.dtype == np.float32 and track.landmarks.shape == (20, 68, 2)
    assert done and done[-1] == 20 and done == sorted(done)
    for i in range(20):
        assert iou(track.boxes[i], KNOWN_FACE) > 0.5
        assert_sane_landmarks(track.landmarks[i], bare.boxes[i])
    np.testing.assert_allclose(track.boxes[:, 3] - bare.boxes[:, 3], 10, atol=1e-3)  # the chin pad
    np.testing.assert_allclose(track.boxes[:, :3], bare.boxes[:, :3], atol=1e-3)

    # A pad larger than the room below the face is clamped to the frame.
    tall = track_faces(iter(frames[:3]), detector, pads=(500, 500, 0, 0), smooth_window=1)
    assert (tall.boxes[:, 1] == 0).all() and (tall.boxes[:, 3] == 360).all()


def test_detecting_every_third_frame_follows_the_per_frame_track(detector, clip):
    frames = clip[:24]
    every = track_faces(iter(frames), detector, detect_every=1)
    sparse = track_faces(iter(frames), detector, detect_every=3)
    assert sparse.face_ratio == 1.0
    assert np.abs(sparse.boxes - every.boxes).max() < 12  # dlib's boxes come in ~20 px size steps
    assert np.abs(sparse.landmarks - every.landmarks).mean() < 3


def test_detection_runs_on_a_downscaled_copy(detector, clip):
    big = [cv2.resize(f, (1280, 720)) for f in clip[:4]]
    track = track_faces(iter(big), detector, detect_max_side=640, smooth_window=1, pads=(0, 0, 0, 0))
    assert track.frame_size == (1280, 720) and track.face_ratio == 1.0
    assert iou(track.boxes[0] / 2, KNOWN_FACE) > 0.5  # boxes are scaled back to full resolution
    assert_sane_landmarks(track.landmarks[0], track.boxes[0])


def test_short_gaps_are_interpolated_and_long_gaps_pass_through(detector, clip):
    # faces: 3-11, 15-21, 29-33; covered: 0-2 (leading), 12-14 (short), 22-28 (long), 34-35 (trailing)
    covered = set(range(0, 3)) | set(range(12, 15)) | set(range(22, 29)) | {34, 35}
    frames = (cover_face(f) if i in covered else f for i, f in enumerate(clip))
    track = track_faces(frames, detector, max_gap_frames=4, pads=(0, 0, 0, 0))

    expected = np.array([i not in covered or 12 <= i <= 14 for i in range(36)])
    assert [track.has_face(i) for i in range(36)] == expected.tolist()
    assert track.face_ratio == pytest.approx(expected.mean())
    assert track.missing_runs() == [(0, 2), (22, 28), (34, 35)]
    assert np.isnan(track.landmarks[~expected]).all()
    assert np.isfinite(track.landmarks[expected]).all()

    # The short gap is a straight line between the faces around it (the box smoothing keeps it linear).
    for i in (12, 13, 14):
        t = (i - 11) / 4
        np.testing.assert_allclose(
            track.landmarks[i], (1 - t) * track.landmarks[11] + t * track.landmarks[15], atol=1e-3
        )
        assert (np.minimum(track.boxes[11], track.boxes[15]) - 1e-3 <= track.boxes[i]).all()
        assert (track.boxes[i] <= np.maximum(track.boxes[11], track.boxes[15]) + 1e-3).all()
    # Frames next to the long gap keep their own boxes (smoothing does not reach across it).
    for i in (21, 29):
        assert iou(track.boxes[i], KNOWN_FACE) > 0.5


def test_a_video_without_faces_gives_an_empty_track_not_an_error(detector, clip):
    track = track_faces((cover_face(f) for f in clip[:3]), detector)
    assert len(track) == 3 and track.face_ratio == 0.0
    assert np.isnan(track.boxes).all() and track.missing_runs() == [(0, 2)]
    empty = track_faces(iter([]), detector)
    assert len(empty) == 0 and empty.face_ratio == 0.0


def head() -> np.ndarray:
    """The astronaut's head and shoulders cut from the portrait (190x220)."""
    return portrait()[30:250, 130:320]


def two_presenters(left_width: int, right_width: int) -> np.ndarray:
    """A 640x360 grey frame with the head pasted twice: at x=20 and x=350, at the given widths."""
    canvas = np.full((360, 640, 3), 90, dtype=np.uint8)
    for x, width in ((20, left_width), (350, right_width)):
        height = round(width * 220 / 190)
        scaled = cv2.resize(head(), (width, height), interpolation=cv2.INTER_AREA)
        y = (360 - height) // 2
        canvas[y : y + height, x : x + width] = scaled
    return canvas


def test_the_larger_face_is_the_target_and_stays_it_when_the_other_grows(detector):
    # Right face grows from 140 px to 280 px wide while the left stays 220 px.
    widths = np.linspace(140, 280, 12).round().astype(int)
    frames = [two_presenters(220, int(w)) for w in widths]
    for f in (frames[0], frames[-1]):
        assert len(detector.detect(f)) == 2  # both faces are really there
    left = min(detector.detect(frames[0]), key=lambda b: b[0])
    track = track_faces(iter(frames), detector, detect_every=1, smooth_window=1, pads=(0, 0, 0, 0))
    assert track.face_ratio == 1.0
    for i in range(len(frames)):
        assert iou(track.boxes[i], left) > 0.7, f"frame {i} left the presenter"  # it does not move

    # Started on the last frame alone, the (now larger) right face is chosen.
    alone = track_faces(iter(frames[-1:]), detector)
    assert (alone.boxes[0, 0] + alone.boxes[0, 2]) / 2 > 320


def test_equal_faces_tie_break_to_the_frame_centre(detector):
    canvas = np.full((360, 640, 3), 90, dtype=np.uint8)
    face = cv2.resize(head(), (170, 197), interpolation=cv2.INTER_AREA)
    canvas[80:277, 10:180] = face  # far left
    canvas[80:277, 300:470] = face  # near the centre
    assert len(detector.detect(canvas)) == 2
    track = track_faces(iter([canvas]), detector)
    assert 300 <= (track.boxes[0, 0] + track.boxes[0, 2]) / 2 <= 470


def test_select_follows_the_face_asked_for_among_those_of_a_fair_size(detector):
    frame = two_presenters(220, 150)  # the larger on the left, a smaller (but not tiny) one on the right
    centre_x = {}
    for select in ("largest", "left", "right", "centre"):
        track = track_faces(iter([frame]), detector, select=select)
        centre_x[select] = (track.boxes[0, 0] + track.boxes[0, 2]) / 2
    assert centre_x["largest"] < 320 and centre_x["left"] < 320 and centre_x["right"] > 320
    assert centre_x["centre"] > 320  # the right face (x 350..500) is nearer the centre (320) than the left (20..240)
    tiny = two_presenters(220, 90)  # a face under a quarter of the largest's area is never chosen
    track = track_faces(iter([tiny]), detector, select="right")
    assert (track.boxes[0, 0] + track.boxes[0, 2]) / 2 < 320


def test_a_far_away_other_face_is_not_taken_for_the_target(detector):
    # The big presenter on the left leaves the picture; only the small face on the right remains.
    with_both = two_presenters(220, 120)
    only_other = with_both.copy()
    only_other[:, :330] = 90
    frames = [with_both] * 4 + [only_other] * 3 + [with_both] * 3
    left = max(detector.detect(with_both), key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    marks = detector.landmarks(with_both, left)  # the track's boxes are grown to hold the landmarks
    left = np.array(
        [
            min(left[0], marks[:, 0].min()),
            min(left[1], marks[:, 1].min()),
            max(left[2], marks[:, 0].max()),
            max(left[3], marks[:, 1].max()),
        ]
    )
    track = track_faces(iter(frames), detector, detect_every=1, max_gap_frames=12, smooth_window=1, pads=(0, 0, 0, 0))
    assert track.face_ratio == 1.0  # frames 4-6 are a short gap: interpolated left boxes
    for i in range(len(frames)):
        assert iou(track.boxes[i], left) > 0.9, f"frame {i} left the presenter"


def test_boxes_hold_every_landmark_chin_included(detector, clip):
    """dlib's HOG box stops above the chin; the crop the engines get must hold the whole mouth and jaw."""
    track = track_faces(iter(clip[:20]), detector, smooth_window=1, detect_every=1, pads=(0, 0, 0, 0))
    raw_box = detector.detect(clip[0])[0]
    assert raw_box[3] < detector.landmarks(clip[0], raw_box)[8, 1]  # the raw box really misses the chin
    for box, marks in zip(track.boxes, track.landmarks, strict=True):
        assert (marks[:, 0] >= box[0] - 0.5).all() and (marks[:, 0] <= box[2] + 0.5).all()
        assert (marks[:, 1] >= box[1] - 0.5).all() and (marks[:, 1] <= box[3] + 0.5).all()


def test_smoothing_reduces_box_jitter(detector, clip):
    rng = np.random.default_rng(7)
    shifts = rng.uniform(-6, 6, size=(len(clip[:30]), 2))
    frames = [
        cv2.warpAffine(f, np.float32([[1, 0, dx], [0, 1, dy]]), (640, 360), borderMode=cv2.BORDER_REFLECT)
        for f, (dx, dy) in zip(clip[:30], shifts, strict=True)
    ]
    raw = track_faces(iter(frames), detector, smooth_window=1, detect_every=1, pads=(0, 0, 0, 0))
    smooth = track_faces(iter(frames), detector, smooth_window=7, detect_every=1, pads=(0, 0, 0, 0))
    assert jerk(smooth.boxes) < 0.4 * jerk(raw.boxes)
    # Still on the face: the smoothed box stays near the raw one on average.
    assert np.abs(smooth.boxes - raw.boxes).mean() < 8


# ------------------------------------------------------------------------------------------ files, cache


def small_track(n: int = 6, seed: int = 0) -> FaceTrack:
    rng = np.random.default_rng(seed)
    boxes = rng.uniform(0, 300, size=(n, 4)).astype(np.float32)
    landmarks = rng.uniform(0, 300, size=(n, 68, 2)).astype(np.float32)
    boxes[2] = np.nan
    landmarks[2] = np.nan
    return FaceTrack(boxes=boxes, landmarks=landmarks, frame_size=(640, 360), detector="dlib-hog")


def test_save_load_round_trip(tmp_path):
    track = small_track()
    path = tmp_path / "deep" / "track.npz"
    track.save(path)
    loaded = FaceTrack.load(path)
    np.testing.assert_array_equal(loaded.boxes, track.boxes)
    np.testing.assert_array_equal(loaded.landmarks, track.landmarks)
    assert loaded.frame_size == (640, 360) and loaded.detector == "dlib-hog"
    assert loaded.boxes.dtype == np.float32 and not loaded.has_face(2) and loaded.has_face(1)
    assert loaded.face_ratio == pytest.approx(5 / 6)
    assert [p.name for p in path.parent.iterdir()] == ["track.npz"]  # no temp file left behind


def test_load_rejects_a_damaged_file(tmp_path):
    path = tmp_path / "track.npz"
    small_track().save(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(TrackFileError, match="track.npz"):
        FaceTrack.load(path)


def test_cached_track_computes_once_and_recomputes_when_needed(tmp_path):
    calls: list[int] = []

    def compute() -> FaceTrack:
        calls.append(1)
        return small_track(seed=len(calls))

    first = cached_track("abc", tmp_path, "fp1", compute)
    again = cached_track("abc", tmp_path, "fp1", compute)
    assert len(calls) == 1
    np.testing.assert_array_equal(again.boxes, first.boxes)
    assert (tmp_path / "faces" / "abc-fp1.npz").is_file()

    cached_track("abc", tmp_path, "fp2", compute)  # other settings
    assert len(calls) == 2

    (tmp_path / "faces" / "abc-fp1.npz").write_bytes(b"not an npz")
    repaired = cached_track("abc", tmp_path, "fp1", compute)
    assert len(calls) == 3
    np.testing.assert_array_equal(FaceTrack.load(tmp_path / "faces" / "abc-fp1.npz").boxes, repaired.boxes)


def test_a_linked_face_cache_is_never_read_or_written_through(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    planted = small_track(seed=9)
    planted.save(elsewhere / "abc-fp1.npz")  # a track someone wants heygemd to use
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "faces").symlink_to(elsewhere)
    computed = small_track(seed=1)
    track = cached_track("abc", tmp_path / "cache", "fp1", lambda: computed)
    assert track is computed and [p.name for p in elsewhere.iterdir()] == ["abc-fp1.npz"]


def test_a_face_track_planted_as_a_link_in_the_cache_is_not_read_through(tmp_path):
    """A link put where a video's cached track goes (the cache on the share), to a track elsewhere: not read as
    the video's track; the computed one replaces the link, and the target stays as it was."""
    elsewhere = tmp_path / "elsewhere.npz"
    small_track(seed=9).save(elsewhere)
    path = cache_path("abc", tmp_path / "cache", "fp1")
    path.parent.mkdir(parents=True)
    path.symlink_to(elsewhere)
    computed = small_track(seed=1)
    track = cached_track("abc", tmp_path / "cache", "fp1", lambda: computed)
    assert track is computed and not path.is_symlink()
    np.testing.assert_array_equal(FaceTrack.load(elsewhere).boxes, small_track(seed=9).boxes)


def test_fingerprint_changes_with_every_setting():
    base = dict(detector_name="dlib-hog", pads=(0, 10, 0, 0), smooth_window=5, max_gap_frames=12, detect_max_side=640)
    reference = track_fingerprint(**base)
    assert reference == track_fingerprint(**base) and len(reference) == 16
    variants = [
        {**base, "detector_name": "s3fd+2dfan4"},
        {**base, "pads": (0, 12, 0, 0)},
        {**base, "smooth_window": 3},
        {**base, "max_gap_frames": 6},
        {**base, "detect_max_side": 480},
        {**base, "detect_every": 1},
    ]
    prints = {track_fingerprint(**v) for v in variants}
    assert reference not in prints and len(prints) == len(variants)


def test_video_content_key_follows_content_not_name(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, size=13 * 1024 * 1024, dtype=np.uint8).tobytes()
    a, b = tmp_path / "a.mp4", tmp_path / "renamed copy.mp4"
    a.write_bytes(data)
    b.write_bytes(data)
    assert video_content_key(a) == video_content_key(b)
    changed = bytearray(data)
    changed[len(data) // 2] ^= 0xFF  # inside the sampled middle 4 MiB
    b.write_bytes(bytes(changed))
    assert video_content_key(a) != video_content_key(b)
    small = tmp_path / "small.mp4"
    small.write_bytes(data[:1000])
    key = video_content_key(small)
    small.write_bytes(data[:999] + b"\x00" if data[999] else data[:999] + b"\x01")
    assert video_content_key(small) != key


# ------------------------------------------------------------------------------------ detector choice


def test_shape_predictor_is_found_without_importing_face_recognition_models_or_torch():
    code = (
        "import sys\n"
        "from heygemd.pipeline.faces import DlibDetector, shape_predictor_path\n"
        "assert shape_predictor_path().is_file()\n"
        "DlibDetector()\n"
        "assert 'face_recognition_models' not in sys.modules, 'package imported'\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_landmark_model_is_read_at_the_first_face_and_a_damaged_one_is_named(tmp_path, clip):
    """A cached face track never needs dlib's 70 MiB landmark model, so it is read at the first face, not at
    load; a missing file still fails at load, a damaged one at its first use, each naming the file."""
    with pytest.raises(CheckpointError) as missing:
        DlibDetector(predictor_path=tmp_path / "gone.dat")
    assert "gone.dat" in missing.value.message and "face-recognition-models" in missing.value.hint

    damaged = tmp_path / "shape_predictor_68_face_landmarks.dat"
    damaged.write_bytes(b"not a dlib model")
    detector = DlibDetector(predictor_path=damaged)
    assert not detector.loaded
    box = detector.detect(clip[0])[0]  # the HOG detector needs no file
    with pytest.raises(CheckpointError) as bad:
        detector.landmarks(clip[0], box)
    assert damaged.name in bad.value.message and "reinstall" in bad.value.hint

    good = DlibDetector()
    assert not good.loaded
    assert_sane_landmarks(good.landmarks(clip[0], box), box)
    assert good.loaded


def test_a_warm_session_rendering_a_cached_track_never_reads_the_landmark_model(tmp_path):
    from heygemd.demo import presenter_video, speech_wav
    from heygemd.lipsync import LipSyncSession
    from heygemd.settings import EngineSettings, PathsSettings, Settings

    settings = Settings(
        paths=PathsSettings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox", models=tmp_path / "models"),
        engine=EngineSettings(name="mouthwarp"),
    )
    presenter = presenter_video(tmp_path / "anna.mp4", seconds=0.5, size=(320, 180))
    speech = speech_wav(tmp_path / "one.wav", sentences=("One.",), pause_seconds=0.1, lead_seconds=0.1)
    first = LipSyncSession(settings)
    first.warm_up()
    assert not first.render(presenter, first.audio(speech), tmp_path / "out" / "a.mp4").cached_faces
    assert first.detector.loaded  # type: ignore[attr-defined]

    again = LipSyncSession(settings)  # a restarted daemon: same cache, fresh process state
    again.warm_up()
    result = again.render(presenter, again.audio(speech), tmp_path / "out" / "b.mp4")
    assert result.cached_faces and result.face_ratio == 1.0
    assert not again.detector.loaded  # type: ignore[attr-defined]


def test_make_detector_choices(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    assert isinstance(make_detector("auto", models, tmp_path / "cache"), DlibDetector)
    assert isinstance(make_detector("dlib", models, tmp_path / "cache"), DlibDetector)
    with pytest.raises(CheckpointError) as missing:
        make_detector("s3fd", models, tmp_path / "cache")
    assert S3FD_WEIGHTS in missing.value.message and "dlib" in missing.value.hint
    with pytest.raises(ConfigError):
        make_detector("retina", models, tmp_path / "cache")  # type: ignore[arg-type]


def test_damaged_s3fd_weights_raise_a_checkpoint_error(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / S3FD_WEIGHTS).write_bytes(b"this is not a torch checkpoint")
    before = os.environ.get("TORCH_HOME")
    with pytest.raises(CheckpointError) as bad:
        make_detector("auto", models, tmp_path / "cache", device="cpu")
    assert str(models) in bad.value.message and S3FD_WEIGHTS in bad.value.hint
    assert os.environ.get("TORCH_HOME") == before  # the private torch home was only borrowed


def real_models_dir() -> Path | None:
    for candidate in (os.environ.get("HEYGEMD_TEST_MODELS"), REPO / "models"):
        if candidate and (Path(candidate) / S3FD_WEIGHTS).is_file():
            return Path(candidate)
    return None


@pytest.mark.skipif(real_models_dir() is None, reason=f"{S3FD_WEIGHTS} not in models/ or $HEYGEMD_TEST_MODELS")
def test_real_s3fd_finds_the_presenter(tmp_path, clip):
    models = real_models_dir()
    assert models is not None
    s3fd = make_detector("s3fd", models, tmp_path / "cache", device="cpu")
    assert s3fd.name == ("s3fd+2dfan4" if (models / FAN_WEIGHTS).is_file() else "s3fd+dlib68")
    boxes = s3fd.detect(clip[0])
    assert len(boxes) >= 1 and iou(boxes[0], KNOWN_FACE) > 0.4
    assert_sane_landmarks(s3fd.landmarks(clip[0], boxes[0]), boxes[0])
    track = track_faces(iter(clip[:4]), s3fd)
    assert track.face_ratio == 1.0


def test_landmarks_follow_the_talking_mouth_with_less_jitter(tmp_path, monkeypatch) -> None:
    """The portrait made to speak by the engine: filtered points keep the mouth's motion and lose jitter."""
    from heygemd.pipeline import faces, mouth
    from tests.engines import talking

    detector = DlibDetector()
    voice = talking.speech(tmp_path / "a.wav", ("One, two, three, four.",))
    frames = talking.talking_frames(detector, voice)
    filtered = track_faces(iter(frames), detector)
    monkeypatch.setattr(faces, "_filter_landmarks", lambda marks: marks)
    raw = track_faces(iter(frames), detector)
    assert filtered.face_ratio == raw.face_ratio == 1.0

    moving = np.concatenate([np.arange(0, 17), np.arange(48, 68)])
    assert jerk(filtered.landmarks[:, moving].reshape(len(frames), -1)) < 0.8 * jerk(
        raw.landmarks[:, moving].reshape(len(frames), -1)
    )
    gap_filtered = mouth.measure_track(filtered.landmarks)[:, 0]
    gap_raw = mouth.measure_track(raw.landmarks)[:, 0]
    assert gap_filtered.std() > 0.85 * gap_raw.std()
    assert np.corrcoef(gap_filtered, gap_raw)[0, 1] > 0.95
    assert np.corrcoef(gap_filtered, voice.loudness(len(frames)))[0, 1] > 0.8
