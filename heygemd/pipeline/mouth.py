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
