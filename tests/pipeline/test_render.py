"""pipeline.render: crop boxes, the lower-face mask, the feathered paste (real dlib landmarks on the demo portrait)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from heygemd import demo
from heygemd.pipeline import render


@pytest.fixture(scope="module")
def face() -> tuple[np.ndarray, np.ndarray]:
    """(crop, landmarks in crop coordinates) of the portrait, cut like the pipeline does (box + margin)."""
    dlib = pytest.importorskip("dlib")
    models = Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0]) / "models"
    predictor = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
    image = demo.portrait()
    rgb = np.ascontiguousarray(image[:, :, ::-1])
    rect = max(dlib.get_frontal_face_detector()(rgb, 1), key=lambda r: r.width() * r.height())
    points = np.array([[p.x, p.y] for p in predictor(rgb, rect).parts()], dtype=np.float32)
    margin = 0.2 * rect.width()
    box = np.array([rect.left() - margin, rect.top() - margin, rect.right() + margin, rect.bottom() + margin])
    ibox = render.crop_box(image.shape, box)
    return render.cut(image, ibox), points - np.array(ibox[:2], dtype=np.float32)


def above_nose_line(points: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Pixels on the forehead side of the line through the nose tip parallel to the line between the eyes."""
    across = points[42:48].mean(axis=0) - points[36:42].mean(axis=0)
    down = np.array([-across[1], across[0]]) / np.linalg.norm(across)
    ys, xs = np.mgrid[0 : hw[0], 0 : hw[1]]
    return (xs - points[30, 0]) * down[0] + (ys - points[30, 1]) * down[1] < 0


def test_crop_box_clamps_to_the_frame_and_covers_the_box() -> None:
    assert render.crop_box((360, 640, 3), np.array([-5.5, -3.0, 700.0, 400.0])) == (0, 0, 640, 360)
    assert render.crop_box((360, 640, 3), np.array([10.2, 20.7, 50.1, 60.9])) == (10, 20, 51, 61)
    x1, y1, x2, y2 = render.crop_box((360, 640, 3), np.array([700.0, 10.0, 800.0, 50.0]))
    assert 0 <= x1 <= x2 <= 640 and x2 - x1 == 0
    with pytest.raises(ValueError):
        render.crop_box((360, 640, 3), np.array([np.nan, 0.0, 10.0, 10.0]))


def test_cut_is_a_copy_of_the_box() -> None:
    frame = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    crop = render.cut(frame, (5, 2, 15, 12))
    assert crop.shape == (10, 10, 3)
    assert np.array_equal(crop, frame[2:12, 5:15])
    crop[:] = 0
    assert frame[2:12, 5:15].any()


def test_mask_covers_the_mouth_and_leaves_eyes_and_forehead_alone(face) -> None:
    crop, points = face
    mask = render.mouth_mask(points, crop.shape[:2])
    assert mask.shape == crop.shape[:2] and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0

    mouth = points[60:68].mean(axis=0)
    assert mask[int(round(mouth[1])), int(round(mouth[0]))] > 0.99
    # Everything above the line through the nose tip, parallel to the eyes, is exactly 0.
    assert not mask[above_nose_line(points, crop.shape[:2])].any()
    well_above = int(np.floor(points[30, 1] - 0.1 * np.linalg.norm(points[8] - points[27])))
    assert not mask[:well_above].any()
    eyes = points[36:48]
    x0, y0 = np.floor(eyes.min(axis=0)).astype(int) - 3
    x1, y1 = np.ceil(eyes.max(axis=0)).astype(int) + 3
    assert not mask[max(y0, 0) : y1, max(x0, 0) : x1].any()
    # No hard rectangle: the crop's own border is 0.
    assert not mask[0].any() and not mask[-1].any() and not mask[:, 0].any() and not mask[:, -1].any()


def test_mask_is_smooth(face) -> None:
    crop, points = face
    mask = render.mouth_mask(points, crop.shape[:2])
    feather = render.default_feather(points)
    steps = max(np.abs(np.diff(mask, axis=0)).max(), np.abs(np.diff(mask, axis=1)).max())
    assert steps <= 2.0 / feather
    assert steps < 0.25
    soft = ((mask > 0) & (mask < 1)).sum()
    assert soft > 0


def test_wider_feather_gives_a_wider_soft_edge(face) -> None:
    crop, points = face
    narrow = render.mouth_mask(points, crop.shape[:2], feather=3.0)
    wide = render.mouth_mask(points, crop.shape[:2], feather=15.0)
    soft = lambda m: int(((m > 0) & (m < 1)).sum())  # noqa: E731
    assert soft(wide) > soft(narrow)
    mouth = np.round(points[60:68].mean(axis=0)).astype(int)
    assert narrow[mouth[1], mouth[0]] == 1.0 and wide[mouth[1], mouth[0]] == 1.0


def test_mask_follows_a_tilted_face(face) -> None:
    crop, points = face
    h, w = crop.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), 25.0, 1.0)
    tilted = points @ turn[:, :2].T + turn[:, 2]
    mask = render.mouth_mask(tilted, (h, w))
    mouth = tilted[60:68].mean(axis=0)
    assert mask[int(round(mouth[1])), int(round(mouth[0]))] > 0.99
    assert not mask[above_nose_line(tilted, (h, w))].any()
    for eye in (tilted[36:42].mean(axis=0), tilted[42:48].mean(axis=0)):
        x, y = np.round(eye).astype(int)
        assert not mask[max(y - 4, 0) : y + 5, max(x - 4, 0) : x + 5].any()


def test_paste_blends_only_inside_the_mask(face) -> None:
    crop, points = face
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, size=(crop.shape[0] + 40, crop.shape[1] + 60, 3), dtype=np.uint8)
    ibox = (30, 20, 30 + crop.shape[1], 20 + crop.shape[0])
    generated = rng.integers(0, 256, size=crop.shape, dtype=np.uint8)
    mask = render.mouth_mask(points, crop.shape[:2])
    before = frame.copy()

    render.paste(frame, ibox, generated, mask)

    x1, y1, x2, y2 = ibox
    outside = np.ones(frame.shape[:2], dtype=bool)
    outside[y1:y2, x1:x2] = mask == 0
    assert np.array_equal(frame[outside], before[outside])
    region, original = frame[y1:y2, x1:x2], before[y1:y2, x1:x2]
    full = mask == 1.0
    assert full.any() and np.array_equal(region[full], generated[full])
    partial = (mask > 0) & (mask < 1)
    expected = original.astype(np.float32) + mask[..., None] * (generated.astype(np.float32) - original)
    assert np.abs(region[partial].astype(np.float32) - expected[partial]).max() <= 0.5 + 1e-3


def test_paste_rejects_a_crop_of_the_wrong_size() -> None:
    frame = np.zeros((50, 50, 3), dtype=np.uint8)
    with pytest.raises(ValueError):
        render.paste(frame, (0, 0, 20, 20), np.zeros((21, 20, 3), np.uint8), np.ones((20, 20), np.float32))
    with pytest.raises(ValueError):
        render.paste(frame, (0, 0, 20, 20), np.zeros((20, 20, 3), np.uint8), np.ones((19, 20), np.float32))


# ---------------------------------------------------------------- MuseTalk's crop box and the colour match


def _face_marks(x0: float, y0: float, scale: float = 1.0) -> np.ndarray:
    """A synthetic 68-point layout: jaw 0..16 on an arc, point 29 on the nose bridge, chin (8) lowest."""
    marks = np.zeros((68, 2), np.float32)
    angles = np.linspace(np.pi, 0, 17)
    marks[:17, 0] = x0 + 50 * scale * np.cos(angles)
    marks[:17, 1] = y0 + 40 * scale * np.sin(angles) + 10 * scale
    marks[17:, 0] = x0
    marks[17:, 1] = y0
    marks[29] = (x0, y0)
    return marks


def test_musetalk_box_follows_the_v15_rule() -> None:
    from heygemd.pipeline.render import musetalk_box

    marks = _face_marks(200, 150)
    x1, y1, x2, y2 = musetalk_box(marks, (480, 640))
    lowest = marks[:, 1].max()
    assert (x1, x2) == (marks[:, 0].min(), marks[:, 0].max())
    assert y2 == lowest + 10  # extended 10 px down
    assert abs(y1 - (150 - (lowest - 150))) < 1e-4  # centred on point 29 before the margin


def test_musetalk_box_is_clamped_on_every_side() -> None:
    from heygemd.pipeline.render import musetalk_box

    marks = _face_marks(615, 20)  # past the right edge, top above the frame
    x1, y1, x2, y2 = musetalk_box(marks, (70, 640))
    assert x2 == 640 and y1 == 0 and y2 == 70 and 0 <= x1 < x2


def test_match_colour_removes_a_colour_cast_inside_the_mask() -> None:
    from heygemd.pipeline.render import match_colour

    rng = np.random.default_rng(0)
    original = np.clip(rng.normal(140, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
    cast = np.clip(original.astype(int) + np.array([30, -20, 10]), 0, 255).astype(np.uint8)
    mask = np.zeros((64, 64), np.float32)
    mask[16:48, 16:48] = 1.0
    fixed = match_colour(cast, original, mask)
    before = np.abs(cast[16:48, 16:48].astype(int) - original[16:48, 16:48]).mean()
    after = np.abs(fixed[16:48, 16:48].astype(int) - original[16:48, 16:48]).mean()
    assert before > 15 and after < 4
    assert fixed.shape == cast.shape and fixed.dtype == np.uint8
