"""Render one video: audio features + presenter video + engine -> lip-synced mp4 (and a poster).

The only module that knows the order of the stages; everything it calls knows one stage. No daemon knowledge:
the CLI and the daemon's worker both call ``render_video``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from heygemd.engines.base import Engine, FaceBatch, PresenterEngine
from heygemd.errors import Interrupted, NoFace
from heygemd.pipeline import faces, presenter_cache, render
from heygemd.pipeline.audio import AudioFeatures
from heygemd.pipeline.encode import VideoWriter, write_poster
from heygemd.pipeline.frames import ScheduledFrames, read_frames
from heygemd.pipeline.probe import VideoInfo, probe_video
from heygemd.pipeline.timing import StageTimer
from heygemd.settings import EngineSettings, FacesSettings, LoopMode, VideoSettings

DETECT_SHARE = 0.3
"""Share of a video's progress bar given to face detection (the rest is rendering)."""


@dataclass(frozen=True)
class RenderOptions:
    """Everything that shapes one render besides its inputs."""

    video: VideoSettings = field(default_factory=VideoSettings)
    faces: FacesSettings = field(default_factory=FacesSettings)
    loop_mode: LoopMode | None = None
    """Overrides ``video.loop_mode`` (a job.toml option)."""
    crf: int | None = None
    """Overrides ``video.crf`` (a job.toml option)."""
    batch_size: int = EngineSettings.model_fields["batch_size"].default
    """Frames held at once for the engine; bounds memory whatever the video's length."""
    presenter_cache_gb: float = EngineSettings.model_fields["presenter_cache_gb"].default
    """Size limit of the per-presenter preparation cache (``engine.presenter_cache_gb``)."""


@dataclass(frozen=True)
class VideoProgress:
    stage: str
    """``detect`` or ``render``."""
    frames_done: int
    frames_total: int
    fraction: float
    """Overall progress of this video, 0..1."""


@dataclass(frozen=True)
class RenderResult:
    output: Path
    poster: Path | None
    frames: int
    fps: float
    face_ratio: float
    detector: str
    cached_faces: bool
    timings: dict[str, float]
    """Seconds per stage (decode, detect, prepare, infer, blend, encode) and ``total``."""
    cached_presenter: bool | None = None
    """For engines with a per-presenter preparation: True when it came from the cache (no VAE encoding)."""


ProgressCallback = Callable[[VideoProgress], None]


def poster_path_for(output: Path) -> Path:
    return output.with_suffix(".jpg")


def render_video(
    video_path: Path,
    audio: AudioFeatures,
    output: Path,
    engine: Engine,
    detector: faces.FaceDetector,
    *,
    options: RenderOptions,
    cache_dir: Path,
    work_dir: Path,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RenderResult:
    """Lip-sync ``video_path`` to ``audio`` into ``output`` (written under a temporary name, renamed when complete).

    Raises a HeygemdError subclass naming the file for every known input problem, and Interrupted when
    ``should_stop`` turns true (the partial output is removed).
    """
    started = time.perf_counter()
    timer = StageTimer()
    report = on_progress or (lambda _p: None)
    stop = should_stop or (lambda: False)

    info = probe_video(video_path, still_fps=options.video.still_fps)
    n_out = audio.frame_count(info.fps)
    track_fp = _track_fingerprint(info, detector, options.faces)
    track, cached = _face_track(info, detector, options.faces, cache_dir, track_fp, timer, report, stop)
    if track.face_ratio < options.faces.min_face_ratio:
        raise NoFace(
            f"a face was found in {track.face_ratio:.0%} of the frames "
            f"(at least {options.faces.min_face_ratio:.0%} needed)",
            path=video_path,
        )
    boxes = _crop_boxes(engine, track)
    prep: presenter_cache.Preparation | None = None
    if engine.needs.presenter_prep and isinstance(engine, PresenterEngine):
        prep = _presenter_preparation(info, track, boxes, engine, options, cache_dir, track_fp, timer, stop)
    prompts = audio.prompts if engine.needs.audio != "mel" else None
    if engine.needs.audio != "mel" and prompts is None:
        raise ValueError(f"engine {engine.name} needs {engine.needs.audio} features; compute them with "
                         "LipSyncSession.audio")

    engine.prepare(audio.mel)
    poster_index = int(np.argmax(audio.loudness(info.fps))) if options.video.poster else -1
    poster = poster_path_for(output) if options.video.poster else None
    video_opts = options.video
    loop_mode = options.loop_mode or video_opts.loop_mode
    crf = options.crf if options.crf is not None else video_opts.crf

    work_dir.mkdir(parents=True, exist_ok=True)
    with (
        ScheduledFrames(info, n_out, loop_mode, work_dir, codec=video_opts.spool) as scheduled,
        timer.closing_in("encode", VideoWriter(
            output, info.width, info.height, info.fps, audio.path, audio.duration,
            crf=crf, preset=video_opts.preset, audio_bitrate=video_opts.audio_bitrate,
        )) as writer,
    ):
        done = 0
        poster_frame: np.ndarray | None = None
        for batch in _batches(timer.timed("decode", scheduled), options.batch_size):
            if stop():
                raise Interrupted("stopped while rendering", path=video_path)
            mels = audio.windows(info.fps, done, done + len(batch))  # per batch: memory stays flat for long audio
            rows = prompts.windows(info.fps, done, done + len(batch)) if prompts is not None else None
            frames = _lip_sync_batch(batch, track, boxes, mels, rows, prep, engine, timer)
            with timer.stage("encode"):
                for offset, frame in enumerate(frames):
                    writer.write(frame)
                    if done + offset == poster_index:
                        poster_frame = frame.copy()
            done += len(frames)
            report(VideoProgress("render", done, n_out, DETECT_SHARE + (1 - DETECT_SHARE) * done / n_out))
    if poster is not None and poster_frame is not None:  # only once the video itself is safely in place
        write_poster(poster_frame, poster)
    timings = dict(timer.seconds)
    timings["total"] = time.perf_counter() - started
    return RenderResult(
        output=output,
        poster=poster,
        frames=n_out,
        fps=info.fps,
        face_ratio=track.face_ratio,
        detector=track.detector,
        cached_faces=cached,
        timings=timings,
        cached_presenter=prep.cached if prep is not None else None,
    )


def _face_track(
    info: VideoInfo,
    detector: faces.FaceDetector,
    settings: FacesSettings,
    cache_dir: Path,
    fingerprint: str,
    timer: StageTimer,
    report: ProgressCallback,
    stop: Callable[[], bool],
) -> tuple[faces.FaceTrack, bool]:
    computed = False

    def progress(frames_done: int) -> None:
        if stop():
            raise Interrupted("stopped while detecting faces", path=info.path)
        total = max(info.frame_count, 1)
        report(VideoProgress("detect", frames_done, total, DETECT_SHARE * min(frames_done / total, 1.0)))

    def compute() -> faces.FaceTrack:
        nonlocal computed
        computed = True
        with contextlib.closing(read_frames(info)) as source, timer.stage("detect"):
            # closing(): an interruption mid-detection stops the decoding ffmpeg at once
            return faces.track_faces(
                timer.timed("decode", source),
                detector,
                pads=settings.pads,
                smooth_window=settings.smooth_window,
                max_gap_frames=settings.max_gap_frames,
                detect_max_side=settings.detect_max_side,
                progress=progress,
            )

    track = faces.cached_track(faces.video_content_key(info.path), cache_dir, fingerprint, compute)
    if computed:
        # detection time includes the decode pass it pulled frames from; keep the stages disjoint
        timer.seconds["detect"] -= timer.seconds["decode"]
    return track, not computed


def _track_fingerprint(info: VideoInfo, detector: faces.FaceDetector, settings: FacesSettings) -> str:
    return faces.track_fingerprint(
        detector.name, settings.pads, settings.smooth_window, settings.max_gap_frames, settings.detect_max_side,
        # the frames the track indexes: a different decode (size, rate, count) must not reuse it
        frames=[info.width, info.height, round(info.fps, 3), info.frame_count],
    )


def _crop_boxes(engine: Engine, track: faces.FaceTrack) -> np.ndarray:
    """(N, 4) float boxes the engine's crops are cut with (NaN rows where the track has no face)."""
    if engine.needs.crop == "track":
        return track.boxes
    width, height = track.frame_size
    boxes = np.full_like(track.boxes, np.nan)
    for i in np.flatnonzero(track.face_mask):
        if np.isfinite(track.landmarks[i]).all():
            boxes[i] = render.musetalk_box(track.landmarks[i], (height, width))
    return boxes


def _usable_box(frame: np.ndarray, box: np.ndarray) -> tuple[int, int, int, int] | None:
    """The integer crop box, or None when there is no box or it is too small to render (the frame passes through)."""
    if not np.isfinite(box).all():
        return None
    ibox = render.crop_box(frame.shape, box)
    x1, y1, x2, y2 = ibox
    return ibox if x2 - x1 >= 8 and y2 - y1 >= 8 else None


def _presenter_preparation(
    info: VideoInfo,
    track: faces.FaceTrack,
    boxes: np.ndarray,
    engine: PresenterEngine,
    options: RenderOptions,
    cache_dir: Path,
    track_fp: str,
    timer: StageTimer,
    stop: Callable[[], bool],
) -> presenter_cache.Preparation:
    """The engine's preparation of every source frame (zeros where there is no face), cached per video content."""
    fp = presenter_cache.fingerprint(engine=engine.prep_version, crop=engine.needs.crop, track=track_fp)

    def compute(out: np.ndarray) -> None:
        pending: list[tuple[int, np.ndarray]] = []

        def flush() -> None:
            if pending:
                with timer.stage("prepare"):
                    out[[i for i, _ in pending]] = engine.prepare_presenter([crop for _, crop in pending])
                pending.clear()

        with contextlib.closing(read_frames(info)) as source:
            for i, frame in enumerate(timer.timed("decode", source)):
                if stop():
                    raise Interrupted("stopped while preparing the presenter", path=info.path)
                ibox = _usable_box(frame, boxes[i]) if track.has_face(i) else None
                if ibox is not None:
                    pending.append((i, render.cut(frame, ibox)))
                if len(pending) >= options.batch_size:
                    flush()
        flush()

    shape = (len(track), *engine.prep_shape())
    limit = int(options.presenter_cache_gb * 1e9)
    return presenter_cache.cached_preparation(faces.video_content_key(info.path), cache_dir, fp, shape, compute, limit)


def _batches(items: Iterator[tuple[int, np.ndarray]], size: int) -> Iterator[list[tuple[int, np.ndarray]]]:
    batch: list[tuple[int, np.ndarray]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _lip_sync_batch(
    batch: list[tuple[int, np.ndarray]],
    track: faces.FaceTrack,
    boxes: np.ndarray,
    mels: np.ndarray,
    prompts: np.ndarray | None,
    prep: presenter_cache.Preparation | None,
    engine: Engine,
    timer: StageTimer,
) -> list[np.ndarray]:
    """Frames of ``batch`` with the engine's mouth pasted in where the track has a face; others pass through.

    ``mels`` (and ``prompts``, for engines that need them) hold the audio window of each output frame of the
    batch, in order; ``boxes`` the crop box of each source frame; ``prep`` the presenter's preparation.
    """
    frames = [frame for _, frame in batch]
    with timer.stage("blend"):
        jobs: list[tuple[int, tuple[int, int, int, int], np.ndarray]] = []
        sources: list[int] = []
        crops: list[np.ndarray] = []
        for offset, (source_index, frame) in enumerate(batch):
            if not track.has_face(source_index):
                continue
            ibox = _usable_box(frame, boxes[source_index])
            if ibox is None:
                continue
            x1, y1 = ibox[:2]
            landmarks = track.landmarks[source_index] - np.array([x1, y1], dtype=np.float32)
            jobs.append((offset, ibox, landmarks))
            sources.append(source_index)
            crops.append(render.cut(frame, ibox))
    if not jobs:
        return frames
    with timer.stage("blend"):
        masks = [render.mouth_mask(landmarks, crop.shape[:2]) for (_, _, landmarks), crop in zip(jobs, crops)]
    face_batch = FaceBatch(
        crops=crops,
        landmarks=[landmarks for _, _, landmarks in jobs],
        mels=np.stack([mels[offset] for offset, _, _ in jobs]),
        masks=masks,
        prompts=np.stack([prompts[offset] for offset, _, _ in jobs]) if prompts is not None else None,
        prepared=np.stack([prep.data[i] for i in sources]) if prep is not None else None,
    )
    with timer.stage("infer"):
        generated = engine.generate(face_batch)
    with timer.stage("blend"):
        for (offset, ibox, _), mouth, mask, crop in zip(jobs, generated, masks, crops, strict=True):
            if engine.needs.colour_match:
                mouth = render.match_colour(mouth, crop, mask)
            render.paste(frames[offset], ibox, mouth, mask)
    return frames
