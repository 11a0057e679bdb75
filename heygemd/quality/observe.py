"""What the check sees of a video: the face's landmarks fitted on its own frames, and the seam on a few of them.

The frames are read as the viewer will see them (the encoded file), but only the region the face moves in: ffmpeg
crops it before handing the frames over. Where the face is comes from a reference: for a render, the face track
heygemd made of the presenter (the frames above the nose never change, so its eyes place the face); for any other
file, a track made of the file itself (``track``). Landmarks are fitted with dlib's 68-point predictor on a box
placed from the reference's eyes, as dlib's detector would place it, so a render and its ``heygemd score`` see the
same mouths. No GPU, no weights beyond dlib's shape predictor.

The seam (``seam_step``) compares a band just inside the blend mask's edge with one just outside, in the output and
in the source frame it was made from: a few frames, spread over the first seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import IO

import cv2
import numpy as np

from heygemd.errors import DecodeError
from heygemd.pipeline.face_detectors import DlibDetector, DlibShapePredictor
from heygemd.pipeline.faces import FaceTrack, track_faces
from heygemd.pipeline.ffmpeg_argv import ffmpeg_command, raw_output
from heygemd.pipeline.ffmpeg_tools import ToolProcess, open_input
from heygemd.pipeline.frames import decode_filters, read_frames, video_input
from heygemd.pipeline.mouth import face_frame
from heygemd.pipeline.probe import VideoInfo
from heygemd.pipeline.render import default_feather, mouth_mask

BOX_SIDE = 2.1
"""dlib's detector box is a square about 2.1 eye distances wide ..."""
BOX_DROP = 0.5
"""... centred about half an eye distance below the eyes' midpoint (measured on the portrait at 4 scales)."""
REGION_MARGIN = 0.25
"""The region read from the video: the union of the face boxes, grown by this share of their size on each side
(the blend mask reaches past the box at the jaw)."""
FULL_FRAME_SHARE = 0.6
"""When the region would cover more than this share of the frame, whole frames are read."""
SEAM_SAMPLES = 6
"""Frames the seam is measured on ..."""
SEAM_SPAN_S = 1.0
"""... spread over the first second with a face (the source is decoded only that far): the seam is the
presenter's and the engine's, it hardly changes along a video."""
SEAM_BAND = (1.0, 2.0)
"""The inside band: pixels between 1 and 2 feather widths deep in the mask's region (the blend is full there) ..."""
SEAM_OUTSIDE = 0.5
"""... the outside band: pixels outside the region, at most this many feather widths from it."""
MIN_BAND_PIXELS = 20
READ_AHEAD_BYTES = 1 << 20
"""The pipe from the decoding ffmpeg holds up to this (two regions at least, within Linux's default limit)."""
PROGRESS_EVERY = 25
"""``observe`` reports progress every this many frames."""
TRACK_DETECT_EVERY = 5
"""A file without a render's track is tracked with detection on every 5th frame (landmarks on all)."""


@dataclass(frozen=True)
class Region:
    """A rectangle of the frame: ``x, y`` its top left corner, ``width, height`` its (even) size."""

    x: int
    y: int
    width: int
    height: int

    def cut(self, frame: np.ndarray) -> np.ndarray:
        return frame[self.y : self.y + self.height, self.x : self.x + self.width]


@dataclass(frozen=True)
class SourceFrames:
    """The frames an output was rendered from: the presenter video and which of its frames each output frame shows."""

    info: VideoInfo
    schedule: np.ndarray
    """(N,) source frame index of each output frame."""


@dataclass(frozen=True)
class Observation:
    landmarks: np.ndarray
    """(N, 68, 2) float64 landmarks fitted on each frame of the video (frame pixels); NaN where no face."""
    face_coverage: float
    """Share of the frames with a face in the reference."""
    seam: float | None
    """Median ``seam_step`` over the sampled frames; None when not measured (no source, no usable frame)."""


def detector_box(points: np.ndarray) -> np.ndarray:
    """float ``(x1, y1, x2, y2)``: the square box dlib's detector gives a face, from its 68 landmarks' eyes."""
    frame = face_frame(points)
    centre = frame.eyes + BOX_DROP * frame.scale * frame.down
    half = BOX_SIDE * frame.scale / 2
    return np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half])


def face_region(references: np.ndarray, frame_size: tuple[int, int]) -> Region:
    """The part of ``frame_size`` (width, height) frames the faces of ``references`` (N, 68, 2) stay in."""
    width, height = frame_size
    whole = Region(0, 0, width, height)
    rows = references[np.isfinite(references).all(axis=(1, 2))]
    if len(rows) == 0:
        return whole
    boxes = np.stack([detector_box(points) for points in rows])
    x1, y1 = boxes[:, 0].min(), boxes[:, 1].min()
    x2, y2 = boxes[:, 2].max(), boxes[:, 3].max()
    grow_x, grow_y = REGION_MARGIN * (x2 - x1), REGION_MARGIN * (y2 - y1)
    left = int(np.clip(np.floor(x1 - grow_x), 0, width)) // 2 * 2
    top = int(np.clip(np.floor(y1 - grow_y), 0, height)) // 2 * 2
    right = int(np.clip(np.ceil(x2 + grow_x), left, width))
    bottom = int(np.clip(np.ceil(y2 + grow_y), top, height))
    region = Region(left, top, (right - left) // 2 * 2, (bottom - top) // 2 * 2)
    if region.width < 16 or region.height < 16 or region.width * region.height > FULL_FRAME_SHARE * width * height:
        return whole
    return region


def read_region(info: VideoInfo, region: Region) -> Generator[np.ndarray, None, None]:
    """The ``region`` of each of ``info.frame_count`` frames, BGR uint8, as ``frames.read_frames`` would cut it from
    the whole frame (the same decode filters, then ffmpeg's crop). Fewer frames than expected end the iteration
    (a shortfall is the caller's to judge); a failing ffmpeg raises DecodeError."""
    chain = f"{decode_filters(info)},crop={region.width}:{region.height}:{region.x}:{region.y},format=bgr24"
    output = ["-map", f"0:{info.stream_index}", "-an", "-sn", "-dn", "-vf", chain, "-frames:v", str(info.frame_count)]
    size = region.width * region.height * 3
    with open_input(info.source) as media:
        argv = ffmpeg_command([video_input(info, media)], [*output, *raw_output("bgr24")])
        proc = ToolProcess(argv, stdout=True, pass_fds=media.pass_fds)
    try:
        _widen(proc.stdout, min(READ_AHEAD_BYTES, max(2 * size, 1 << 16)))
        for _ in range(info.frame_count):
            data = proc.stdout.read(size)
            if len(data) < size:
                break
            yield np.frombuffer(data, dtype=np.uint8).reshape(region.height, region.width, 3)
        if proc.wait(timeout=60) != 0:
            raise DecodeError(f"ffmpeg failed while the video was checked: {proc.stderr_tail()}", path=info.path)
    finally:
        proc.kill()


def _widen(pipe: IO[bytes], size: int) -> None:
    """Let ffmpeg decode ahead while the landmarks of the frame before are fitted: a pipe of ``size`` bytes (Linux
    gives 64 KiB, less than one region of a 720p face). Where the system refuses (``fs.pipe-max-size``), the pipe
    stays as it is: the check is then only slower."""
    try:
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, size)
    except OSError:
        pass


@functools.lru_cache(maxsize=1)
def shape_predictor() -> DlibShapePredictor:
    """dlib's 68-point predictor, shared by every check of the process (read at its first face)."""
    return DlibShapePredictor()


@functools.lru_cache(maxsize=1)
def face_detector() -> DlibDetector:
    """dlib's detector for files without a render's track (``track``)."""
    return DlibDetector()


def track(info: VideoInfo) -> FaceTrack:
    """The face track of a file heygemd did not render, made with dlib on its own frames."""
    with contextlib.closing(read_frames(info)) as frames:
        return track_faces(frames, face_detector(), detect_every=TRACK_DETECT_EVERY)


def references_of(track: FaceTrack, schedule: np.ndarray | None = None) -> np.ndarray:
    """(N, 68, 2) reference landmarks of each frame: the track's (through ``schedule``, the source frame of each
    output frame), NaN where the track has no face."""
    index = np.arange(len(track)) if schedule is None else np.asarray(schedule, dtype=np.int64)
    references = track.landmarks[index].astype(np.float64)
    references[~track.face_mask[index]] = np.nan
    return references


def observe(
    info: VideoInfo,
    references: np.ndarray,
    *,
    source: SourceFrames | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Observation:
    """Fit the landmarks of every frame of ``info`` that has a face in ``references`` (N, 68, 2; rows past the
    file's frames are ignored, frames past the rows have no face), and measure the seam against ``source`` when
    given. ``progress(frames_done, frames_total)`` is called every ``PROGRESS_EVERY`` frames; what it raises stops
    the check (and its ffmpeg)."""
    fit = shape_predictor()
    n = info.frame_count
    references = np.asarray(references, dtype=np.float64)
    if len(references) < n:  # a file a frame or two longer than what its reference knows: no face there
        references = np.concatenate([references, np.full((n - len(references), 68, 2), np.nan)])
    references = references[:n]
    has_face = np.isfinite(references).all(axis=(1, 2))
    region = face_region(references, (info.width, info.height))
    offset = np.array([region.x, region.y], dtype=np.float64)
    samples = seam_samples(has_face, info.fps) if source is not None else []
    source_windows = _source_windows(source, samples, region) if source is not None else {}

    landmarks = np.full((n, 68, 2), np.nan)
    steps: list[float] = []
    with contextlib.closing(read_region(info, region)) as crops:  # an error or a stop kills the decoder at once
        for i, crop in enumerate(crops):
            if progress is not None and i % PROGRESS_EVERY == 0:
                progress(i, n)
            if not has_face[i]:
                continue
            box = detector_box(references[i]) - np.tile(offset, 2)
            landmarks[i] = np.asarray(fit(crop, box), dtype=np.float64) + offset
            if i in source_windows:
                step = seam_step(crop, source_windows[i], references[i] - offset)
                if step is not None:
                    steps.append(step)
    coverage = float(has_face.mean()) if n else 0.0
    return Observation(landmarks=landmarks, face_coverage=coverage, seam=float(np.median(steps)) if steps else None)


def seam_samples(has_face: np.ndarray, fps: float) -> list[int]:
    """Up to ``SEAM_SAMPLES`` frames with a face, evenly spread over the first ``SEAM_SPAN_S`` seconds that have one."""
    with_face = np.flatnonzero(has_face)
    if len(with_face) == 0:
        return []
    span = with_face[with_face < with_face[0] + SEAM_SPAN_S * fps]
    picks = np.linspace(0, len(span) - 1, num=min(SEAM_SAMPLES, len(span))).round().astype(np.int64)
    return sorted({int(span[k]) for k in picks})


def _source_windows(source: SourceFrames, samples: Sequence[int], region: Region) -> dict[int, np.ndarray]:
    """The ``region`` of the source frame of each sampled output frame, keyed by the output frame (the source is
    read as the output is, ``read_region``, and only as far as the last frame needed)."""
    wanted: dict[int, list[int]] = {}
    for i in samples:
        if i < len(source.schedule):
            wanted.setdefault(int(source.schedule[i]), []).append(i)
    windows: dict[int, np.ndarray] = {}
    if not wanted:
        return windows
    with contextlib.closing(read_region(source.info, region)) as frames:
        for index, crop in enumerate(frames):
            for i in wanted.get(index, []):
                windows[i] = crop
            if index >= max(wanted):
                break
    return windows


def seam_step(output: np.ndarray, source: np.ndarray, landmarks: np.ndarray) -> float | None:
    """The colour step across the blend mask's edge that ``output`` has beyond ``source`` (two BGR windows of the
    same place; ``landmarks`` (68, 2) of the face in window pixels), in OpenCV's 8-bit Lab units: the distance
    between the median colour change (output - source) in a band just inside the mask's edge and the one in a band
    just outside. None when a band has too few pixels (the face at the window's edge)."""
    if output.shape != source.shape or not np.isfinite(landmarks).all():
        return None
    height, width = output.shape[:2]
    weights = mouth_mask(landmarks, (height, width))
    region = (weights > 0).astype(np.uint8)
    if not region.any():
        return None
    feather = default_feather(landmarks)
    depth = cv2.distanceTransform(region, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(1 - region, cv2.DIST_L2, 3)
    inner = (depth >= SEAM_BAND[0] * feather) & (depth <= SEAM_BAND[1] * feather)
    outer = (region == 0) & (outside <= SEAM_OUTSIDE * feather)
    if inner.sum() < MIN_BAND_PIXELS or outer.sum() < MIN_BAND_PIXELS:
        return None
    bands = inner | outer
    change = _lab(output[bands]) - _lab(source[bands])  # only the bands' pixels are converted
    step = np.median(change[inner[bands]], axis=0) - np.median(change[outer[bands]], axis=0)
    return float(np.linalg.norm(step))


def _lab(pixels: np.ndarray) -> np.ndarray:
    """(K, 3) BGR uint8 pixels in OpenCV's 8-bit Lab, as float64."""
    return cv2.cvtColor(pixels.reshape(-1, 1, 3), cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(np.float64)
