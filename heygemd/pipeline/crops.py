"""The crop rules of ``EngineNeeds.crop``: where an engine's face crop is cut from a frame, and how the engine's
result goes back into it. ``run.py`` asks a ``Crops`` for both and never looks at the rule itself.

- ``track``: the tracked face box (padded, smoothed); ``musetalk_v15``: MuseTalk 1.5's box from the landmarks
  (``render.musetalk_box``). The result is pasted through ``render.mouth_mask`` (the feathered lower face),
  colour-matched to the crop inside it first when the engine asks for it (``EngineNeeds.colour_match``).
- ``latentsync_affine``: the 512x512 face aligned to LatentSync's template by a similarity transform
  (``align.alignment_matrices`` of the tracked landmarks, ``align.align_face``); pasted back with
  ``align.restore_face`` (the whole aligned rectangle with a feathered edge), no mouth mask and no colour match:
  the engine keeps the pixels outside the part it redraws itself (LatentSync's own mask).

A frame gets no crop (it passes through unchanged) when the track has no face there or the rule cannot cut one
(a box under 8 pixels, landmarks missing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heygemd.pipeline import align, render
from heygemd.pipeline.engine_contract import EngineNeeds
from heygemd.pipeline.faces import FaceTrack

MIN_BOX = 8
"""A box crop narrower or lower than this many pixels is not rendered (the frame passes through)."""


@dataclass(frozen=True, eq=False)
class Cut:
    """One frame's crop for the engine."""

    crop: np.ndarray
    """uint8 BGR (h, w, 3)."""
    landmarks: np.ndarray
    """(68, 2) float32 in crop pixel coordinates."""
    mask: np.ndarray | None
    """float32 (h, w) ``render.mouth_mask`` the result is pasted with (box rules); None for the aligned face."""
    box: tuple[int, int, int, int] | None
    """The integer box the crop was cut from (box rules); None for the aligned face."""


class Crops:
    """The crop rule of one engine applied to one video's face track."""

    def __init__(self, needs: EngineNeeds, track: FaceTrack):
        self.rule = needs.crop
        self.colour_match = needs.colour_match
        self.track = track
        width, height = track.frame_size
        self._frame_shape = (height, width, 3)
        self._boxes: np.ndarray | None = None
        self._matrices: np.ndarray | None = None
        if self.rule == "latentsync_affine":
            self._matrices = align.alignment_matrices(track.landmarks)
        else:
            self._boxes = self._box_rule_boxes()

    @property
    def version(self) -> str:
        """Names the rule and the arithmetic of its crops: part of the fingerprint of what is cached from them."""
        if self.rule == "latentsync_affine":
            return f"{self.rule}-{align.ALIGN_VERSION}"
        return self.rule

    def usable(self, source: int) -> bool:
        """Whether source frame ``source`` gets a crop (else it passes through)."""
        if not self.track.has_face(source):
            return False
        if self._matrices is not None:
            return bool(np.isfinite(self._matrices[source]).all())
        return self._box(source) is not None

    def crop(self, frame: np.ndarray, source: int) -> np.ndarray | None:
        """Only the crop of ``frame`` (source frame ``source``), or None when it passes through (what a
        presenter's preparation is made of)."""
        if not self.usable(source):
            return None
        if self._matrices is not None:
            return align.align_face(frame, self._matrices[source])
        box = self._box(source)
        assert box is not None  # usable
        return render.cut(frame, box)

    def cut(self, frame: np.ndarray, source: int) -> Cut | None:
        """The crop of ``frame`` (source frame ``source``) with its landmarks and paste mask, or None when it
        passes through."""
        crop = self.crop(frame, source)
        if crop is None:
            return None
        marks = self.track.landmarks[source]
        if self._matrices is not None:
            matrix = self._matrices[source]
            in_template = marks.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
            scale = np.array([align.CROP_SIZE / align.TEMPLATE_SIZE[0], align.CROP_SIZE / align.TEMPLATE_SIZE[1]])
            return Cut(crop, (in_template * scale).astype(np.float32), None, None)
        box = self._box(source)
        assert box is not None  # usable
        landmarks = marks - np.array(box[:2], dtype=np.float32)
        return Cut(crop, landmarks, render.mouth_mask(landmarks, crop.shape[:2]), box)

    def paste(self, frame: np.ndarray, source: int, cut: Cut, result: np.ndarray) -> None:
        """Put the engine's ``result`` for ``cut`` back into ``frame`` (in place)."""
        if self._matrices is not None:
            align.restore_face(frame, result, self._matrices[source])
            return
        assert cut.box is not None and cut.mask is not None  # a box rule's cut
        if self.colour_match:
            result = render.match_colour(result, cut.crop, cut.mask)
        render.paste(frame, cut.box, result, cut.mask)

    # ------------------------------------------------------------------ box rules

    def _box_rule_boxes(self) -> np.ndarray:
        """(N, 4) float boxes of the box rule (NaN rows where there is no face)."""
        if self.rule == "track":
            return self.track.boxes
        boxes = np.full_like(self.track.boxes, np.nan)
        for i in np.flatnonzero(self.track.face_mask):
            if np.isfinite(self.track.landmarks[i]).all():
                boxes[i] = render.musetalk_box(self.track.landmarks[i], self._frame_shape)
        return boxes

    def _box(self, source: int) -> tuple[int, int, int, int] | None:
        """The integer crop box of source frame ``source``, or None when there is none or it is too small."""
        assert self._boxes is not None
        box = self._boxes[source]
        if not np.isfinite(box).all():
            return None
        ibox = render.crop_box(self._frame_shape, box)
        x1, y1, x2, y2 = ibox
        return ibox if x2 - x1 >= MIN_BOX and y2 - y1 >= MIN_BOX else None
