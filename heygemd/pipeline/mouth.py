"""The mouth's state in a frame, measured from its 68 landmarks, and the presenter's rest (closed) state.

Three numbers describe how a mouth is set: the inner-lip gap, how far the chin has dropped and how wide
the lips are. Each is measured in the face's own frame (the axis through the eye centres and the one
perpendicular to it, pointing to the chin) and divided by the distance between the eye centres, so head
tilt, distance to the camera and resolution do not change it, and the mouth's own motion does not change
the scale it is measured by.

``rest_state`` derives, from a whole face track, the state of this presenter's closed mouth: the gap of
the frames where the mouth is most closed, and the chin drop and lip width of those frames. An engine
that *sets* the mouth for new audio (rather than adding to what the frame shows) first takes the frame
from its current state back to this rest state.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

LEFT_EYE = np.arange(36, 42)
RIGHT_EYE = np.arange(42, 48)
CHIN = 8
INNER_PAIRS = np.array([[61, 67], [62, 66], [63, 65]])
"""Inner-lip point pairs (upper, lower) whose distance is the gap: left, middle, right."""

CLOSED_QUANTILE = 0.15
"""The rest gap is this quantile of a track's gaps: the frames where the mouth is most closed."""
CLOSED_MARGIN = 0.03
"""Frames whose gap is within this (share of the eye distance) of the rest gap count as closed."""


@dataclass(frozen=True)
class MouthState:
    """How one mouth is set, in eye distances (see the module doc)."""

    gap: float
    """Mean inner-lip gap (pairs 61-67, 62-66, 63-65) along the face's down axis."""
    jaw: float
    """Chin (point 8) below the eye centres, along the face's down axis."""
    width: float
    """Distance between the mouth corners 48 and 54."""


@dataclass(frozen=True)
class FaceFrame:
    """The face's own axes and scale in one image, from the eyes."""

    across: np.ndarray
    """(2,) unit vector from the left eye centre to the right one."""
    down: np.ndarray
    """(2,) unit vector perpendicular to ``across``, pointing to the chin."""
    eyes: np.ndarray
    """(2,) midpoint of the eye centres."""
    scale: float
    """Distance between the eye centres in pixels (at least 1e-6)."""


def face_frame(landmarks: np.ndarray) -> FaceFrame:
    """The axes and scale of the face whose 68 landmarks are ``landmarks`` (pixels)."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
    left, right = points[LEFT_EYE].mean(axis=0), points[RIGHT_EYE].mean(axis=0)
    across = right - left
    scale = max(float(np.linalg.norm(across)), 1e-6)
    across = across / scale
    down = np.array([-across[1], across[0]])
    if down[1] < 0:
        down = -down
    return FaceFrame(across=across, down=down, eyes=(left + right) / 2.0, scale=scale)


def measure(landmarks: np.ndarray) -> MouthState:
    """The mouth state of one set of 68 landmarks (NaN fields when the landmarks are not finite)."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
    frame = face_frame(points)
    gap = float(np.mean((points[INNER_PAIRS[:, 1]] - points[INNER_PAIRS[:, 0]]) @ frame.down))
    jaw = float((points[CHIN] - frame.eyes) @ frame.down)
    width = float(np.linalg.norm(points[54] - points[48]))
    return MouthState(gap=gap / frame.scale, jaw=jaw / frame.scale, width=width / frame.scale)


def measure_track(landmarks: np.ndarray) -> np.ndarray:
    """(N, 3) float64 ``gap, jaw, width`` of each of (N, 68, 2) landmarks; NaN rows where not finite."""
    points = np.asarray(landmarks, dtype=np.float64)
    out = np.full((len(points), 3), np.nan)
    for i, row in enumerate(points):
        if np.isfinite(row).all():
            state = measure(row)
            out[i] = (state.gap, state.jaw, state.width)
    return out


def rest_state(landmarks: np.ndarray) -> MouthState | None:
    """The presenter's closed mouth from a track's (N, 68, 2) landmarks; None when no frame has a face.

    The rest gap is the ``CLOSED_QUANTILE`` of the gaps (never below 0); the chin drop and lip width are
    the medians over the frames whose gap is within ``CLOSED_MARGIN`` of it. A still presenter's rest is
    exactly its one state, so a closed, unmoving mouth needs no correction.
    """
    states = measure_track(landmarks)
    states = states[np.isfinite(states).all(axis=1)]
    if len(states) == 0:
        return None
    gap = float(np.quantile(states[:, 0], CLOSED_QUANTILE, method="lower"))
    closed = states[states[:, 0] <= gap + CLOSED_MARGIN]
    return MouthState(gap=max(gap, 0.0), jaw=float(np.median(closed[:, 1])), width=float(np.median(closed[:, 2])))


OUTER_LIP = np.arange(48, 60)
INNER_LIP = np.arange(60, 68)


def _fill(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool mask of the polygon ``points`` (pixels of an array of ``shape``)."""
    canvas = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(canvas, [np.round(points * 4.0).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=2)
    return canvas.astype(bool)


def lip_contrast(frame: np.ndarray, landmarks: np.ndarray) -> float:
    """How much redder the lips are than the skin around them: median Cr (YCrCb, 0..255) of the lips minus
    that of a band of skin around them, within a box of 0.35 mouth widths around the outer lip.

    Lips show clearly (about 8 to 25 on uncovered faces); a hand, a phone or a microphone in front of the
    mouth brings it near 0 or below. NaN when the landmarks are not finite or the box is off the frame.
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
    if not np.isfinite(points).all():
        return float("nan")
    outer = points[OUTER_LIP]
    pad = 0.35 * float(np.linalg.norm(points[54] - points[48])) + 2.0
    h, w = frame.shape[:2]
    x0, y0 = (int(np.clip(np.floor(v), 0, m)) for v, m in zip(outer.min(axis=0) - pad, (w, h), strict=True))
    x1, y1 = (int(np.clip(np.ceil(v) + 1, 0, m)) for v, m in zip(outer.max(axis=0) + pad, (w, h), strict=True))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return float("nan")
    stride = max(int(pad) // 10, 1)  # ~30 samples across the mouth are plenty for two medians
    roi = np.ascontiguousarray(frame[y0:y1:stride, x0:x1:stride])
    local = (points - np.array([x0, y0])) / stride
    mouth_area = _fill(local[OUTER_LIP], roi.shape[:2])
    lips = mouth_area & ~_fill(local[INNER_LIP], roi.shape[:2])
    skin = ~cv2.dilate(mouth_area.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if lips.sum() < 4 or skin.sum() < 4:
        return float("nan")
    cr = cv2.cvtColor(roi, cv2.COLOR_BGR2YCrCb)[..., 1].astype(np.float64)
    return float(np.median(cr[lips]) - np.median(cr[skin]))
