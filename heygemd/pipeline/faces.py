"""Face tracks: the presenter's face box and 68 landmarks in every frame of one video, and their cache.

``track_faces`` streams over frames once (it keeps per-frame boxes and landmarks, never frames):

1. **Detect** on a copy downscaled so its longest side is at most ``detect_max_side`` (boxes are scaled
   back). Detection runs on every ``detect_every``-th frame (default 2) and on every frame while the target
   is missing; in between, the box is predicted from the last two detections (constant velocity) and only
   the landmarks are fitted. If a detection then finds the target gone, the predicted frames since the last
   detection count as missing too.
2. **Select, then track one target.** At the first frame with faces the target is the largest face (faces
   within 80 % of the largest area tie; the one nearest the frame centre wins), or with ``select`` the leftmost,
   rightmost or most central face among those at least a quarter of the largest's area. After that each detection
   frame takes the face overlapping the last target box most (IoU), or else the nearest one if it is close
   (within about one face size, growing with the frames since the target was seen) and of similar size;
   other faces are ignored, so a face that is only far away means "no target". After more than
   ``max_gap_frames`` without the target the track is re-acquired with the first-frame rule, among faces
   at least a quarter of the last target's area (a small background face never takes over).
3. **Landmarks** (68 points, iBUG layout) on every frame with a face, fitted on the full-resolution frame
   with the unpadded box; with them, how clearly the lips show (``mouth.lip_contrast``: a hand or a
   phone in front of the mouth hides them), for ``footage.footage_warnings``.
4. **Gaps.** A run of at most ``max_gap_frames`` frames without the target between two frames with it gets
   linearly interpolated boxes and landmarks; longer runs and runs at the start or end stay NaN (the
   renderer passes those frames through unchanged).
   Then every box is grown to contain its frame's 68 landmarks: dlib's HOG boxes stop above the chin, and the
   crop must hold the whole mouth, jaw and chin (S3FD boxes mostly contain them already).
5. **Smoothing.** Boxes get a centred moving average over ``smooth_window`` frames, within each run of
   frames with a face (never across a NaN gap); the window shrinks symmetrically at a run's ends so it stays
   centred. Landmarks get a centred quadratic Savitzky-Golay filter within each run of fitted frames
   (before step 4 bridges the gaps, so a bridge stays a straight line between filtered ends): over
   ``MOUTH_FILTER_FRAMES`` for the jaw line and the lips, which must keep the speech motion (at 25 fps it
   keeps 93 % of a 4 Hz syllable rhythm and cuts frame-to-frame jitter to about a third), and over
   ``HEAD_FILTER_FRAMES`` for the rest of the face, which only moves with the head. A quadratic fit follows
   a mouth that opens and closes without flattening its peaks as a moving average would, and being centred
   it adds no delay.
6. **Pads and clamp.** ``pads`` = (top, bottom, left, right) pixels are added to the smoothed box (as
   Wav2Lip's ``--pads``), then the box is clamped to the frame. With ``pad_reference_height`` set, pads are
   scaled by face height / ``pad_reference_height`` instead (so they mean the same at any resolution).

``FaceTrack`` holds the result; ``cached_track`` stores it under the cache folder, keyed by the video's
content (``video_content_key``) and the settings that shape it (``track_fingerprint``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import structlog

from heygemd.errors import ConfigError, HeygemdError
from heygemd.fsutil import InputFile, atomic_writer, open_regular, own_dir
from heygemd.pipeline import mouth
from heygemd.pipeline.face_detectors import (
    DetectorKind,
    DlibDetector,
    FaceDetector,
    S3FDDetector,
    make_detector,
    shape_predictor_path,
)
from heygemd.pipeline.ffmpeg_tools import open_input
from heygemd.settings import FaceChoice, FacesSettings

__all__ = [
    "DetectorKind",
    "DlibDetector",
    "FaceDetector",
    "FaceTrack",
    "S3FDDetector",
    "TrackFileError",
    "cached_track",
    "make_detector",
    "shape_predictor_path",
    "track_faces",
    "track_fingerprint",
    "video_content_key",
]

log = structlog.get_logger(__name__)

FOLDER = "faces"
"""Sub-folder of the cache directory holding the face tracks (the engines' preparations live in ``presenter/``)."""

TRACKER_VERSION = 3
"""Bumped when the tracking algorithm changes, so cached tracks of older versions are recomputed."""
CACHE_FORMAT = 2
"""Version of the .npz layout written by ``FaceTrack.save``."""
MOUTH_FILTER_FRAMES = 5
"""Window of the landmark filter for the jaw line (0-16) and the lips (48-67)."""
HEAD_FILTER_FRAMES = 9
"""Window of the landmark filter for the brows, nose and eyes."""
MOVING_POINTS = np.concatenate([np.arange(0, 17), np.arange(48, 68)])
"""Landmarks that move with speech (jaw line and lips)."""
PROGRESS_EVERY = 25
"""``track_faces`` reports progress every this many frames (and once at the end)."""


class TrackFileError(ValueError):
    """A saved face track cannot be read (truncated, not an .npz, wrong layout). Caches recompute on it."""


@dataclass(frozen=True, eq=False)
class FaceTrack:
    """The target face in every frame of one video.

    Row ``i`` belongs to frame ``i``. A row of NaN means the frame has no usable face and passes through.
    (``eq=False``: arrays have no single truth value; compare fields with numpy instead.)
    """

    boxes: np.ndarray
    """(N, 4) float32 ``x1, y1, x2, y2`` in frame pixels: padded, smoothed, clamped to the frame."""
    landmarks: np.ndarray
    """(N, 68, 2) float32 ``x, y`` in frame pixels, iBUG 68-point layout (mouth 48-67); not padded."""
    frame_size: tuple[int, int]
    """(width, height) of the frames."""
    detector: str
    """Name of the detector that made the track (``FaceDetector.name``)."""
    lip_contrast: np.ndarray | None = None
    """(N,) float32 ``mouth.lip_contrast`` of each frame whose landmarks were fitted on it (NaN elsewhere:
    no face, bridged gaps); None: not measured (all NaN)."""

    def __post_init__(self) -> None:
        n = len(self.boxes)
        if self.boxes.shape != (n, 4) or self.landmarks.shape != (n, 68, 2):
            raise ValueError(f"FaceTrack shapes disagree: boxes {self.boxes.shape}, landmarks {self.landmarks.shape}")
        if self.lip_contrast is None:
            object.__setattr__(self, "lip_contrast", np.full(n, np.nan, dtype=np.float32))
        elif np.shape(self.lip_contrast) != (n,):
            raise ValueError(f"FaceTrack lip_contrast has shape {np.shape(self.lip_contrast)}, expected ({n},)")

    def __len__(self) -> int:
        return len(self.boxes)

    def has_face(self, i: int) -> bool:
        """Whether frame ``i`` has a usable face (detected, predicted or interpolated)."""
        return bool(np.isfinite(self.boxes[i]).all())

    @property
    def face_mask(self) -> np.ndarray:
        """(N,) bool: which frames have a usable face."""
        return np.isfinite(self.boxes).all(axis=1)

    @property
    def face_ratio(self) -> float:
        """Frames with a usable face / all frames (0.0 for an empty track)."""
        return float(self.face_mask.mean()) if len(self) else 0.0

    @functools.cached_property
    def mouth_rest(self) -> mouth.MouthState | None:
        """The presenter's closed mouth over the whole track (``mouth.rest_state``); None without faces."""
        return mouth.rest_state(self.landmarks)

    def missing_runs(self) -> list[tuple[int, int]]:
        """Runs of frames without a face as ``(first, last)`` indices, inclusive (for messages and status)."""
        return [(a, b - 1) for a, b in _runs(~self.face_mask)]

    def save(self, path: Path) -> None:
        """Write the track to ``path`` (.npz) atomically (``fsutil.atomic_writer``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(path) as out:
            np.savez(
                out,
                version=np.int64(CACHE_FORMAT),
                boxes=self.boxes.astype(np.float32),
                landmarks=self.landmarks.astype(np.float32),
                frame_size=np.asarray(self.frame_size, dtype=np.int64),
                detector=np.str_(self.detector),
                lip_contrast=np.asarray(self.lip_contrast, dtype=np.float32),
            )

    @classmethod
    def load(cls, path: Path) -> FaceTrack:
        """Read a track written by ``save``. Raises TrackFileError when the file is unreadable or malformed."""
        try:
            # opened once, never through a link (the cache folder may be on the share)
            with os.fdopen(open_regular(path), "rb") as handle, np.load(handle, allow_pickle=False) as data:
                if int(data["version"]) != CACHE_FORMAT:
                    raise TrackFileError(f"{path}: face track version {int(data['version'])}, expected {CACHE_FORMAT}")
                size = data["frame_size"]
                return cls(
                    boxes=np.asarray(data["boxes"], dtype=np.float32),
                    landmarks=np.asarray(data["landmarks"], dtype=np.float32),
                    frame_size=(int(size[0]), int(size[1])),
                    detector=str(data["detector"]),
                    lip_contrast=np.asarray(data["lip_contrast"], dtype=np.float32),
                )
        except (OSError, EOFError, KeyError, IndexError, ValueError, zipfile.BadZipFile, HeygemdError) as exc:
            if isinstance(exc, TrackFileError):
                raise
            raise TrackFileError(f"{path}: not a readable face track ({type(exc).__name__}: {exc})") from exc


# --------------------------------------------------------------------------------------------- tracking


@dataclass
class _TrackerState:
    """What the streaming pass remembers between frames (boxes in full-resolution pixels)."""

    target: np.ndarray | None = None
    """Last box of the target (detected or predicted), unpadded; None before the first face."""
    target_area: float = 0.0
    """Area of the last detected target box (for re-acquisition after a long loss)."""
    detections: list[tuple[int, np.ndarray]] = field(default_factory=list)
    """The last two (frame index, box) detections of the target, for constant-velocity prediction."""
    missing: int = 0
    """Frames in a row without the target (including predicted frames turned missing)."""
    predicted: list[int] = field(default_factory=list)
    """Frames predicted since the last detection (turned missing if the next detection loses the target)."""


_DETECTED, _PREDICTED, _MISSING = 1, 2, 0


def track_faces(
    frames: Iterable[np.ndarray],
    detector: FaceDetector,
    *,
    pads: tuple[int, int, int, int] = FacesSettings.model_fields["pads"].default,
    smooth_window: int = FacesSettings.model_fields["smooth_window"].default,
    max_gap_frames: int = FacesSettings.model_fields["max_gap_frames"].default,
    detect_max_side: int = FacesSettings.model_fields["detect_max_side"].default,
    detect_every: int = 2,
    pad_reference_height: float | None = None,
    select: FaceChoice = FacesSettings.model_fields["select"].default,
    progress: Callable[[int], None] | None = None,
) -> FaceTrack:
    """Track the presenter's face through ``frames`` (BGR uint8, all the same size); see the module doc.

    A video without faces is not an error here: the track is all NaN and ``face_ratio`` is 0; the caller
    compares ``face_ratio`` with ``faces.min_face_ratio``. ``progress(frames_done)`` is called every
    ``PROGRESS_EVERY`` frames and at the end.
    """
    if detect_every < 1 or smooth_window < 1 or max_gap_frames < 0 or detect_max_side < 1:
        raise ValueError("detect_every, smooth_window and detect_max_side must be >= 1, max_gap_frames >= 0")
    state = _TrackerState()
    kinds: list[int] = []
    boxes: list[np.ndarray] = []
    marks: list[np.ndarray] = []
    contrast: list[float] = []
    nan_box = np.full(4, np.nan, dtype=np.float32)
    nan_marks = np.full((68, 2), np.nan, dtype=np.float32)
    frame_size: tuple[int, int] | None = None
    scale = 1.0

    for i, frame in enumerate(frames):
        if frame_size is None:
            frame_size = (int(frame.shape[1]), int(frame.shape[0]))
            scale = min(1.0, detect_max_side / max(frame_size))
        elif (frame.shape[1], frame.shape[0]) != frame_size:
            raise ValueError(
                f"frame {i} is {frame.shape[1]}x{frame.shape[0]}, expected {frame_size[0]}x{frame_size[1]}"
            )

        last_detection = state.detections[-1][0] if state.detections else None
        must_detect = (
            state.target is None or state.missing > 0 or last_detection is None or i - last_detection >= detect_every
        )
        if must_detect:
            chosen = _choose(_detect_scaled(detector, frame, scale), state, frame_size, max_gap_frames, select)
            if chosen is None:
                for j in state.predicted:  # the face may have left before this frame: don't trust predictions
                    kinds[j], boxes[j], marks[j], contrast[j] = _MISSING, nan_box, nan_marks, np.nan
                if state.predicted:
                    state.target = state.detections[-1][1]
                state.missing += 1 + len(state.predicted)
                state.predicted = []
                kinds.append(_MISSING)
                boxes.append(nan_box)
                marks.append(nan_marks)
                contrast.append(np.nan)
            else:
                state.target = chosen
                state.target_area = _area(chosen)
                state.detections = [*state.detections[-1:], (i, chosen)]
                state.missing = 0
                state.predicted = []
                kinds.append(_DETECTED)
                boxes.append(chosen)
                marks.append(detector.landmarks(frame, chosen).astype(np.float32))
                contrast.append(mouth.lip_contrast(frame, marks[-1]))
        else:
            predicted = _predict(state.detections, i, detect_every)
            state.target = predicted
            state.predicted.append(i)
            kinds.append(_PREDICTED)
            boxes.append(predicted)
            marks.append(detector.landmarks(frame, predicted).astype(np.float32))
            contrast.append(mouth.lip_contrast(frame, marks[-1]))
        if progress is not None and (i + 1) % PROGRESS_EVERY == 0:
            progress(i + 1)

    n = len(kinds)
    if progress is not None and n % PROGRESS_EVERY != 0:
        progress(n)
    if frame_size is None:
        return FaceTrack(np.zeros((0, 4), np.float32), np.zeros((0, 68, 2), np.float32), (0, 0), detector.name)

    kind = np.asarray(kinds, dtype=np.int8)
    raw_boxes = np.stack(boxes).astype(np.float32)
    raw_marks = np.stack(marks).astype(np.float32)
    raw_boxes = _interpolate_predicted(raw_boxes, kind)
    raw_marks = _filter_landmarks(raw_marks)  # the fitted points only: gaps are then bridged between filtered ends
    raw_boxes, raw_marks = _fill_short_gaps(raw_boxes, raw_marks, kind != _MISSING, max_gap_frames)
    raw_boxes = _cover_landmarks(raw_boxes, raw_marks)
    smoothed = _smooth(raw_boxes, smooth_window)
    final = _pad_and_clamp(smoothed, pads, frame_size, pad_reference_height)
    lost = ~np.isfinite(final).all(axis=1)
    raw_marks[lost] = np.nan
    lips = np.asarray(contrast, dtype=np.float32)
    lips[lost] = np.nan
    return FaceTrack(boxes=final, landmarks=raw_marks, frame_size=frame_size, detector=detector.name, lip_contrast=lips)


def _detect_scaled(detector: FaceDetector, frame: np.ndarray, scale: float) -> list[np.ndarray]:
    """Detect on a copy downscaled by ``scale``; boxes come back in full-resolution pixels."""
    if scale >= 1.0:
        return [np.asarray(b, dtype=np.float32) for b in detector.detect(frame)]
    small = cv2.resize(
        frame,
        (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale))),
        interpolation=cv2.INTER_AREA,
    )
    return [np.asarray(b, dtype=np.float32) / scale for b in detector.detect(small)]


def _area(box: np.ndarray) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], dtype=np.float64)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = float(max(0.0, w) * max(0.0, h))
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _select_initial(
    faces: list[np.ndarray], frame_size: tuple[int, int], min_area: float, select: FaceChoice = "largest"
) -> np.ndarray | None:
    """The face to follow: the largest (faces within 80 % of the largest area tie; nearest the frame centre wins),
    or the leftmost, rightmost or most central among the faces at least a quarter of the largest's area."""
    faces = [f for f in faces if _area(f) >= min_area and _area(f) > 0]
    if not faces:
        return None
    largest = max(_area(f) for f in faces)
    centre = np.array(frame_size, dtype=np.float64) / 2
    if select == "largest":
        tied = [f for f in faces if _area(f) >= 0.8 * largest]
        return min(tied, key=lambda f: float(np.linalg.norm(_centre(f) - centre)))
    candidates = [f for f in faces if _area(f) >= 0.25 * largest]
    if select == "left":
        return min(candidates, key=lambda f: float(_centre(f)[0]))
    if select == "right":
        return max(candidates, key=lambda f: float(_centre(f)[0]))
    return min(candidates, key=lambda f: float(np.linalg.norm(_centre(f) - centre)))


def _choose(
    faces: list[np.ndarray],
    state: _TrackerState,
    frame_size: tuple[int, int],
    max_gap_frames: int,
    select: FaceChoice = "largest",
) -> np.ndarray | None:
    """The target among this frame's faces, or None when it is not there."""
    if state.target is None:
        return _select_initial(faces, frame_size, 0.0, select)
    if state.missing > max_gap_frames:
        return _select_initial(faces, frame_size, 0.25 * state.target_area, select)
    if not faces:
        return None
    ref = state.target
    overlaps = [_iou(ref, f) for f in faces]
    best = int(np.argmax(overlaps))
    if overlaps[best] >= 0.1:
        return faces[best]
    size = float(np.sqrt(max(_area(ref), 1.0)))
    reach = size * min(1.5, 0.75 + 0.1 * state.missing)
    ref_area = max(_area(ref), 1.0)
    near = [
        (float(np.linalg.norm(_centre(f) - _centre(ref))), k)
        for k, f in enumerate(faces)
        if 0.4 <= _area(f) / ref_area <= 2.5
    ]
    near = [(d, k) for d, k in near if d <= reach]
    return faces[min(near)[1]] if near else None


def _predict(detections: list[tuple[int, np.ndarray]], i: int, detect_every: int) -> np.ndarray:
    """Box at frame ``i`` extrapolated from the last two detections (constant velocity) or held."""
    last_i, last = detections[-1]
    if len(detections) == 2:
        prev_i, prev = detections[0]
        if 0 < last_i - prev_i <= 2 * detect_every:
            return (last + (last - prev) * ((i - last_i) / (last_i - prev_i))).astype(np.float32)
    return last.copy()


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open ``(start, stop)`` runs where ``mask`` is True."""
    padded = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    # the padding makes every run start and stop inside ``padded``: the edges come in pairs
    return [(int(a), int(b)) for a, b in zip(edges[0::2], edges[1::2], strict=True)]


def _interpolate_predicted(boxes: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """Replace predicted boxes by linear interpolation between the detections around them."""
    out = boxes.copy()
    for start, stop in _runs(kind == _PREDICTED):
        if start > 0 and stop < len(kind) and kind[start - 1] == _DETECTED and kind[stop] == _DETECTED:
            out[start:stop] = _lerp(boxes[start - 1], boxes[stop], stop - start)
    return out


def _lerp(a: np.ndarray, b: np.ndarray, count: int) -> np.ndarray:
    """``count`` values strictly between ``a`` and ``b``, evenly spaced."""
    t = (np.arange(1, count + 1, dtype=np.float32) / (count + 1)).reshape((count,) + (1,) * a.ndim)
    return (a[None] * (1 - t) + b[None] * t).astype(np.float32)


def _fill_short_gaps(
    boxes: np.ndarray, marks: np.ndarray, has_face: np.ndarray, max_gap_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate runs of at most ``max_gap_frames`` missing frames between two frames with a face."""
    boxes, marks = boxes.copy(), marks.copy()
    for start, stop in _runs(~has_face):
        if start > 0 and stop < len(has_face) and stop - start <= max_gap_frames:
            boxes[start:stop] = _lerp(boxes[start - 1], boxes[stop], stop - start)
            marks[start:stop] = _lerp(marks[start - 1], marks[stop], stop - start)
    return boxes, marks


def _cover_landmarks(boxes: np.ndarray, marks: np.ndarray) -> np.ndarray:
    """Each box grown to the bounding box of its frame's landmarks (rows without landmarks unchanged)."""
    grown = boxes.copy()
    has = np.isfinite(marks).all(axis=(1, 2)) & np.isfinite(boxes).all(axis=1)
    if has.any():
        grown[has, 0] = np.minimum(boxes[has, 0], marks[has, :, 0].min(axis=1))
        grown[has, 1] = np.minimum(boxes[has, 1], marks[has, :, 1].min(axis=1))
        grown[has, 2] = np.maximum(boxes[has, 2], marks[has, :, 0].max(axis=1))
        grown[has, 3] = np.maximum(boxes[has, 3], marks[has, :, 1].max(axis=1))
    return grown


def _savgol_weights(half: int) -> np.ndarray:
    """(2*half+1,) weights of the centre value of a least-squares quadratic through 2*half+1 points."""
    k = np.arange(-half, half + 1, dtype=np.float64)
    return np.linalg.pinv(np.stack([np.ones_like(k), k, k * k], axis=1))[0]


def _savgol(values: np.ndarray, window: int) -> np.ndarray:
    """Centred quadratic Savitzky-Golay filter along axis 0 of finite ``values``; the window shrinks
    symmetrically at the ends (3 points or fewer: unchanged, a quadratic passes through them)."""
    out = values.astype(np.float64).copy()
    n, half = len(values), window // 2
    weights = {h: _savgol_weights(h) for h in range(2, half + 1)}
    for j in range(n):
        h = min(half, j, n - 1 - j)
        if h >= 2:
            out[j] = np.tensordot(weights[h], values[j - h : j + h + 1].astype(np.float64), axes=1)
    return out


def _filter_landmarks(marks: np.ndarray) -> np.ndarray:
    """Landmarks filtered in time within each run of finite frames (see the module doc, step 5)."""
    out = marks.copy()
    head = np.setdiff1d(np.arange(68), MOVING_POINTS)
    for start, stop in _runs(np.isfinite(marks).all(axis=(1, 2))):
        run = marks[start:stop]
        out[start:stop, MOVING_POINTS] = _savgol(run[:, MOVING_POINTS], MOUTH_FILTER_FRAMES)
        out[start:stop, head] = _savgol(run[:, head], HEAD_FILTER_FRAMES)
    return out


def _smooth(boxes: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average within each run of finite rows; the window shrinks symmetrically at run ends."""
    out = boxes.copy()
    half = window // 2
    if half == 0:
        return out
    for start, stop in _runs(np.isfinite(boxes).all(axis=1)):
        run = boxes[start:stop].astype(np.float64)
        cumulative = np.concatenate([np.zeros((1, 4)), np.cumsum(run, axis=0)])
        for j in range(stop - start):
            h = min(half, j, stop - start - 1 - j)
            out[start + j] = (cumulative[j + h + 1] - cumulative[j - h]) / (2 * h + 1)
    return out


def _pad_and_clamp(
    boxes: np.ndarray, pads: tuple[int, int, int, int], frame_size: tuple[int, int], pad_reference_height: float | None
) -> np.ndarray:
    """Add (top, bottom, left, right) pads, clamp to the frame; boxes under 2 px become NaN."""
    top, bottom, left, right = (float(p) for p in pads)
    factor = np.ones(len(boxes), dtype=np.float64)
    if pad_reference_height:
        factor = (boxes[:, 3] - boxes[:, 1]) / float(pad_reference_height)
    out = np.empty_like(boxes, dtype=np.float64)
    w, h = frame_size
    out[:, 0] = np.clip(boxes[:, 0] - left * factor, 0, w)
    out[:, 1] = np.clip(boxes[:, 1] - top * factor, 0, h)
    out[:, 2] = np.clip(boxes[:, 2] + right * factor, 0, w)
    out[:, 3] = np.clip(boxes[:, 3] + bottom * factor, 0, h)
    with np.errstate(invalid="ignore"):
        tiny = (out[:, 2] - out[:, 0] < 2) | (out[:, 3] - out[:, 1] < 2)
    out[tiny] = np.nan
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------- caching

KEY_CHUNK = 4 * 1024 * 1024


def video_content_key(source: Path | InputFile) -> str:
    """Content key of a video: sha256 of its size and its first, middle and last 4 MiB (whole file if smaller).

    Cheap on multi-GB files and stable across renames and copies, so a presenter video reused with a new
    audio finds its cached track. Returns 32 hex characters. An open ``InputFile`` is read through its
    descriptor. Raises OSError when the file cannot be read.
    """
    digest = hashlib.sha256()
    with open_input(source) as media:
        size = media.size()
        digest.update(b"heygemd-video-key-v1:" + str(size).encode() + b":")
        if size <= 3 * KEY_CHUNK:
            digest.update(media.read_at(0, size))
        else:
            for offset in (0, (size - KEY_CHUNK) // 2, size - KEY_CHUNK):
                digest.update(media.read_at(offset, KEY_CHUNK))
    return digest.hexdigest()[:32]


def track_fingerprint(
    detector_name: str,
    pads: tuple[int, int, int, int],
    smooth_window: int,
    max_gap_frames: int,
    detect_max_side: int,
    **extra: object,
) -> str:
    """16 hex characters naming everything that shapes a track, so changed settings recompute it.

    ``extra``: any further keyword that changes the result (e.g. ``detect_every``, ``pad_reference_height``);
    values must be JSON-representable. The tracker version is included.
    """
    spec = {
        "tracker": TRACKER_VERSION,
        "detector": detector_name,
        "pads": [int(p) for p in pads],
        "smooth_window": int(smooth_window),
        "max_gap_frames": int(max_gap_frames),
        "detect_max_side": int(detect_max_side),
        "extra": {k: extra[k] for k in sorted(extra)},
    }
    blob = json.dumps(spec, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_path(key: str, cache_dir: Path, fingerprint: str) -> Path:
    """Where ``cached_track`` keeps the track of video ``key`` made with ``fingerprint``."""
    return cache_dir / FOLDER / f"{key}-{fingerprint}.npz"


def cached_track(key: str, cache_dir: Path, fingerprint: str, compute: Callable[[], FaceTrack]) -> FaceTrack:
    """The cached track for ``key``/``fingerprint``, or ``compute()`` saved to the cache.

    A corrupt cache file is logged and recomputed. A cache that cannot be written (read-only folder, disk
    full, a link where its folder should be: ``fsutil.own_dir``) is logged and the computed track returned; the
    video does not fail for its cache.
    """
    path = cache_path(key, cache_dir, fingerprint)
    try:
        own_dir(cache_dir, path.parent.name)
    except (OSError, ConfigError) as exc:
        log.warning("face_cache_write_failed", path=str(path.parent), error=str(exc))
        return compute()
    if os.path.lexists(path):
        try:
            return FaceTrack.load(path)
        except TrackFileError as exc:
            log.warning("face_cache_corrupt", path=str(path), error=str(exc))
    track = compute()
    try:
        track.save(path)
    except OSError as exc:
        log.warning("face_cache_write_failed", path=str(path), error=str(exc))
    return track
