"""Where the weights-free engine cannot make a credible mouth: checks on a video's face track.

The ``mouthwarp`` engine moves the pixels of the mouth it sees. It needs a mouth that is visible, seen
from the front and large enough to move. ``footage_warnings`` looks at a face track (landmarks and the
lip contrast measured with them) and returns one warning per problem found. The video still renders; the
warnings go to status.json with a hint to use an engine that draws the mouth itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from heygemd.errors import ErrorInfo
from heygemd.pipeline.faces import FaceTrack

HINT = (
    "The weights-free engine cannot draw a credible mouth in this footage; render it with engine "
    "'musetalk' or 'wav2lip': engine = \"wav2lip\" in the job's job.toml, or engine.name in the configuration."
)

COVERED_CONTRAST = 3.0
"""A frame's mouth counts as covered when its lips are redder than the skin around them by less than this
(``mouth.lip_contrast``, Cr units; uncovered lips measure about 7 to 25)."""
COVERED_SHARE = 0.2
"""Warn when the mouth is covered in at least this share of the frames where it was measured."""
PROFILE_BALANCE = 0.4
"""A frame is a profile view when the nose tip splits the face width (jaw points 0 to 16) more unevenly than
this: the shorter side under ``PROFILE_BALANCE`` times the longer one (a frontal face measures about 1; a
head turned by about 45 degrees, about 0.4)."""
PROFILE_SHARE = 0.2
"""Warn when at least this share of the frames with a face are profile views."""
MIN_MOUTH_PX = 20.0
"""Warn when the mouth (corner to corner) is narrower than this many pixels in most frames with a face."""

COVERED, PROFILE, TOO_SMALL = "MOUTH_COVERED", "PROFILE_VIEW", "FACE_TOO_SMALL"


def profile_balance(landmarks: np.ndarray) -> np.ndarray:
    """(N,) shorter / longer part of the face width on either side of the nose tip (NaN without landmarks)."""
    points = np.asarray(landmarks, dtype=np.float64)
    across = points[:, 16] - points[:, 0]
    across /= np.maximum(np.linalg.norm(across, axis=-1, keepdims=True), 1e-6)
    left = np.einsum("nk,nk->n", points[:, 30] - points[:, 0], across)
    right = np.einsum("nk,nk->n", points[:, 16] - points[:, 30], across)
    left, right = np.maximum(left, 0.0), np.maximum(right, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.minimum(left, right) / np.maximum(np.maximum(left, right), 1e-6)


def footage_warnings(track: FaceTrack, path: Path) -> list[ErrorInfo]:
    """The problems the weights-free engine has with the video at ``path`` (named in each message)."""
    warnings: list[ErrorInfo] = []
    faces = track.face_mask
    if not faces.any():
        return warnings
    marks = track.landmarks[faces].astype(np.float64)

    contrast = np.asarray(track.lip_contrast, dtype=np.float64)
    measured = contrast[np.isfinite(contrast)]
    if measured.size:
        covered = float(np.mean(measured < COVERED_CONTRAST))
        if covered >= COVERED_SHARE:
            warnings.append(
                ErrorInfo(
                    COVERED,
                    f"{path}: the mouth is hidden (a hand, a phone or a microphone in "
                    f"front of it?) in {covered:.0%} of the frames",
                    HINT,
                )
            )

    turned = float(np.mean(profile_balance(marks) < PROFILE_BALANCE))
    if turned >= PROFILE_SHARE:
        warnings.append(
            ErrorInfo(
                PROFILE, f"{path}: the face is turned to the side (profile view) in {turned:.0%} of the frames", HINT
            )
        )

    mouth_px = float(np.median(np.linalg.norm(marks[:, 54] - marks[:, 48], axis=-1)))
    if mouth_px < MIN_MOUTH_PX:
        warnings.append(
            ErrorInfo(
                TOO_SMALL,
                f"{path}: the face is too small for its mouth to be seen: the mouth "
                f"is about {mouth_px:.0f} px wide (at least {MIN_MOUTH_PX:.0f} px "
                f"needed)",
                HINT,
            )
        )
    return warnings
