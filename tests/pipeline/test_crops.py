"""The crop rules: the landmarks an engine gets are where the face's points are in its crop, whichever rule cut it,
and a frame the rule cannot cut passes through."""

from __future__ import annotations

import numpy as np
import pytest

from heygemd.pipeline.crops import Crops
from heygemd.pipeline.engine_contract import CropRule, EngineNeeds
from heygemd.pipeline.faces import FaceTrack

WIDTH, HEIGHT = 640, 360


def face_landmarks(rng: np.random.Generator) -> np.ndarray:
    """68 points of a plausible frontal face around (320, 170): brows above the nose, the mouth below it."""
    points = np.empty((68, 2), np.float32)
    points[0:17] = np.stack([np.linspace(260, 380, 17), 150 + 60 * np.sin(np.linspace(0, np.pi, 17))], axis=1)
    points[17:22] = np.stack([np.linspace(270, 310, 5), np.full(5, 120)], axis=1)  # left brow
    points[22:27] = np.stack([np.linspace(330, 370, 5), np.full(5, 120)], axis=1)  # right brow
    points[27:36] = np.stack([np.full(9, 320), np.linspace(135, 175, 9)], axis=1)  # nose
    points[36:48] = rng.uniform([280, 130], [360, 140], (12, 2))  # eyes
    points[48:68] = np.stack([np.linspace(295, 345, 20), 200 + 5 * np.sin(np.linspace(0, 6, 20))], axis=1)
    return points


def track_of(landmarks: np.ndarray) -> FaceTrack:
    low, high = landmarks.min(axis=1), landmarks.max(axis=1)
    boxes = np.concatenate([low, high], axis=1).astype(np.float32)
    return FaceTrack(boxes=boxes, landmarks=landmarks.astype(np.float32), frame_size=(WIDTH, HEIGHT), detector="t")


@pytest.mark.parametrize("rule", ["track", "musetalk_v15", "latentsync_affine"])
def test_the_crops_landmarks_are_where_the_points_are_in_the_crop(rule: CropRule) -> None:
    rng = np.random.default_rng(0)
    marks = face_landmarks(rng)
    crops = Crops(EngineNeeds(crop=rule), track_of(marks[None]))
    for point in (30, 48, 57):  # the nose tip, a mouth corner, the lower lip
        frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        x, y = np.round(marks[point]).astype(int)
        frame[y - 2 : y + 3, x - 2 : x + 3] = 255
        cut = crops.cut(frame, 0)
        assert cut is not None and cut.landmarks.shape == (68, 2)
        bright = np.argwhere(cut.crop[..., 0] > 128)
        centre = bright.mean(axis=0)[::-1]  # (x, y)
        assert np.abs(centre - cut.landmarks[point]).max() < 2.5, (rule, point)
        assert (cut.mask is None) == (rule == "latentsync_affine")


def test_a_frame_without_a_face_or_landmarks_gets_no_crop() -> None:
    marks = face_landmarks(np.random.default_rng(1))
    landmarks = np.stack([marks, np.full_like(marks, np.nan)])
    track = track_of(landmarks)
    boxes = track.boxes.copy()
    boxes[1] = np.nan  # no face in frame 1
    track = FaceTrack(boxes=boxes, landmarks=track.landmarks, frame_size=track.frame_size, detector="t")
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for rule in ("track", "musetalk_v15", "latentsync_affine"):
        crops = Crops(EngineNeeds(crop=rule), track)  # type: ignore[arg-type]
        assert crops.usable(0) and crops.cut(frame, 0) is not None
        assert not crops.usable(1) and crops.cut(frame, 1) is None and crops.crop(frame, 1) is None
