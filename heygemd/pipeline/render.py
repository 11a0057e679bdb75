"""Putting generated mouths back into frames: integer crop boxes, the lower-face mask, the feathered paste.

Every engine returns a whole face crop; only the lower face (mouth, lips, chin) may change. ``mouth_mask``
says where and how much: 1 on the mouth and chin, a soft ramp at the edges, and exactly 0 from the nose tip
upwards and on the crop's border, so ``paste`` never leaves a hard rectangle and never touches the eyes.
"""

from __future__ import annotations

import cv2
import numpy as np

FEATHER_FRACTION = 0.10
"""Default width of the mask's soft edge, as a fraction of the face width (jaw point 0 to 16)."""

MIN_FEATHER_PX = 2.0
"""The soft edge is never narrower than this many pixels (tiny faces)."""

JAW_POINTS = np.arange(2, 15)
"""iBUG indices of the jaw line that bounds the mask (2..14: below the cheekbones, round the chin)."""

NOSE_TIP = 30
LEFT_EYE = np.arange(36, 42)
RIGHT_EYE = np.arange(42, 48)
MOUTH = np.arange(48, 68)


def crop_box(frame_shape: tuple[int, ...], box: np.ndarray) -> tuple[int, int, int, int]:
    """Integer ``(x1, y1, x2, y2)`` covering the float box ``(x1, y1, x2, y2)``, clamped to the frame.

    The lower corner is floored and the upper one ceiled, so the crop contains the whole box; the result
    satisfies ``0 <= x1 <= x2 <= width`` and ``0 <= y1 <= y2 <= height`` (empty when the box lies outside).
    """
    height, width = int(frame_shape[0]), int(frame_shape[1])
    values = np.asarray(box, dtype=np.float64).reshape(-1)
    if values.size != 4 or not np.all(np.isfinite(values)):
        raise ValueError(f"box must be 4 finite numbers (x1, y1, x2, y2), got {box!r}")
    x1 = min(max(int(np.floor(values[0])), 0), width)
    y1 = min(max(int(np.floor(values[1])), 0), height)
    x2 = min(max(int(np.ceil(values[2])), x1), width)
    y2 = min(max(int(np.ceil(values[3])), y1), height)
    return x1, y1, x2, y2


def cut(frame: np.ndarray, ibox: tuple[int, int, int, int]) -> np.ndarray:
    """A contiguous copy of ``frame[y1:y2, x1:x2]``."""
    x1, y1, x2, y2 = ibox
    return np.ascontiguousarray(frame[y1:y2, x1:x2]).copy()


def face_width(landmarks: np.ndarray) -> float:
    """Distance between the outer jaw points 0 and 16: the face's width in pixels (at least 1)."""
    points = np.asarray(landmarks, dtype=np.float64)
    return max(float(np.linalg.norm(points[16] - points[0])), 1.0)


def face_down_axis(landmarks: np.ndarray) -> np.ndarray:
    """Unit vector pointing from forehead to chin, perpendicular to the line through the eye centres."""
    points = np.asarray(landmarks, dtype=np.float64)
    across = points[RIGHT_EYE].mean(axis=0) - points[LEFT_EYE].mean(axis=0)
    norm = float(np.linalg.norm(across))
    if norm < 1e-6:
        return np.array([0.0, 1.0])
    across /= norm
    down = np.array([-across[1], across[0]])
    return down if down[1] >= 0 else -down


def default_feather(landmarks: np.ndarray) -> float:
    """The mask's soft-edge width in pixels: ``FEATHER_FRACTION`` of the face width, at least ``MIN_FEATHER_PX``."""
    return max(FEATHER_FRACTION * face_width(landmarks), MIN_FEATHER_PX)


def mouth_mask(landmarks: np.ndarray, crop_hw: tuple[int, int], feather: float | None = None) -> np.ndarray:
    """float32 ``(h, w)`` weights in [0, 1]: where an engine may change the crop.

    The region is the lower face: the jaw line (points 2..14), pushed ``feather`` pixels outwards so a
    dropping chin stays inside, closed by a straight line through the nose tip (point 30) perpendicular to
    the face's vertical axis. Inside, the weight rises from 0 at the region's edge to 1 at ``feather`` pixels
    depth (a smoothstep of the distance to the edge; default width ``default_feather``). The crop's border
    counts as an edge, so the weight is 0 on the outermost pixels, and exactly 0 everywhere above the nose
    line (eyes, nose bridge, forehead).
    """
    h, w = int(crop_hw[0]), int(crop_hw[1])
    mask = np.zeros((h, w), dtype=np.float32)
    if h < 3 or w < 3:
        return mask
    points = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
    width = default_feather(points) if feather is None else max(float(feather), 1e-3)
    down = face_down_axis(points)
    nose = points[NOSE_TIP]

    centre = points[MOUTH].mean(axis=0)
    jaw = points[JAW_POINTS]
    outward = jaw - centre
    outward /= np.maximum(np.linalg.norm(outward, axis=1, keepdims=True), 1e-6)
    jaw = jaw + outward * width

    def onto_nose_line(p: np.ndarray) -> np.ndarray:
        return p - float((p - nose) @ down) * down

    polygon = np.vstack([onto_nose_line(jaw[0]), jaw, onto_nose_line(jaw[-1])])
    region = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(region, [np.round(polygon * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)

    # Nothing at or above the nose line, nothing on the crop's border.
    ys, xs = np.mgrid[0:h, 0:w]
    below = (xs - nose[0]) * down[0] + (ys - nose[1]) * down[1] > 0
    region &= below.astype(np.uint8)
    region[0, :] = 0
    region[-1, :] = 0
    region[:, 0] = 0
    region[:, -1] = 0
    if not region.any():
        return mask
    depth = cv2.distanceTransform(region, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    ramp = np.clip(depth / np.float32(width), 0.0, 1.0)
    mask[:] = ramp * ramp * (3.0 - 2.0 * ramp)
    return mask


def paste(frame: np.ndarray, ibox: tuple[int, int, int, int], generated_crop: np.ndarray, mask: np.ndarray) -> None:
    """Blend ``generated_crop`` into ``frame[y1:y2, x1:x2]`` in place: ``mask*generated + (1-mask)*original``.

    Rounded to uint8. Pixels where ``mask`` is 0 are left untouched (bit for bit); where it is 1 the
    generated pixel is taken exactly. ``generated_crop`` must have the crop's shape, ``mask`` its (h, w).
    """
    x1, y1, x2, y2 = ibox
    region = frame[y1:y2, x1:x2]
    if generated_crop.shape != region.shape:
        raise ValueError(f"generated crop {generated_crop.shape} does not match the box {region.shape}")
    if mask.shape != region.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match the box {region.shape[:2]}")
    rows, cols = np.nonzero(mask > 0)
    if rows.size == 0:
        return
    weight = np.clip(mask[rows, cols], 0.0, 1.0).astype(np.float32)
    weight = weight[:, None] if region.ndim == 3 else weight
    original = region[rows, cols].astype(np.float32)
    new = generated_crop[rows, cols].astype(np.float32)
    blended = original + weight * (new - original)
    region[rows, cols] = np.clip(np.rint(blended), 0, 255).astype(frame.dtype)


MUSETALK_BOTTOM_MARGIN = 10
"""MuseTalk 1.5 extends its landmark box this many pixels downwards (scripts/inference.py ``extra_margin``)."""


def musetalk_box(landmarks: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
    """MuseTalk 1.5's face box (musetalk/utils/preprocessing.py ``get_landmark_and_bbox`` + the v1.5 margin).

    From the 68 landmarks in frame pixels: x from the leftmost to the rightmost point; the bottom at the lowest
    point plus ``MUSETALK_BOTTOM_MARGIN``; the top as far above point 29 (nose bridge) as the lowest point is
    below it, so the box's vertical centre sits on point 29 before the margin. Clamped to the frame on every
    side (the reference clamps only the bottom: a box past the right edge stretched its face). Float
    ``(x1, y1, x2, y2)``; ``crop_box`` makes it integer.
    """
    height, width = int(frame_shape[0]), int(frame_shape[1])
    points = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
    bridge = points[29, 1]
    lowest = float(points[:, 1].max())
    top = max(0.0, bridge - (lowest - bridge))
    x1 = min(max(float(points[:, 0].min()), 0.0), width)
    x2 = min(max(float(points[:, 0].max()), x1), width)
    y2 = min(lowest + MUSETALK_BOTTOM_MARGIN, height)
    return np.array([x1, min(top, y2), x2, y2], dtype=np.float32)


COLOUR_GAIN_LIMITS = (0.7, 1.4)
"""Bounds of the per-channel contrast gain of ``match_colour`` (a wide-open mouth must not be flattened)."""


def match_colour(generated: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``generated`` with its colours matched to ``original`` where ``mask`` weighs, so no box or seam shows.

    In Lab, per channel: the mask-weighted mean of the generated crop is moved to the original's, and its
    spread scaled to the original's (gain bounded by ``COLOUR_GAIN_LIMITS``). uint8 BGR, same shape.
    """
    weight = np.clip(mask.astype(np.float64), 0.0, 1.0)
    total = float(weight.sum())
    if total < 1.0:
        return generated
    gen = cv2.cvtColor(generated, cv2.COLOR_BGR2LAB).astype(np.float64)
    ref = cv2.cvtColor(original, cv2.COLOR_BGR2LAB).astype(np.float64)
    out = np.empty_like(gen)
    for c in range(3):
        g, r = gen[..., c], ref[..., c]
        g_mean = float((g * weight).sum() / total)
        r_mean = float((r * weight).sum() / total)
        g_std = float(np.sqrt(((g - g_mean) ** 2 * weight).sum() / total))
        r_std = float(np.sqrt(((r - r_mean) ** 2 * weight).sum() / total))
        gain = float(np.clip(r_std / g_std, *COLOUR_GAIN_LIMITS)) if g_std > 1e-6 else 1.0
        out[..., c] = (g - g_mean) * gain + r_mean
    lab = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
