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
from typing import NamedTuple

import numpy as np

from heygemd.errors import DecodeError, ErrorInfo, Interrupted, NoFace
from heygemd.fsutil import InputFile
from heygemd.names import POSTER_SUFFIX
from heygemd.pipeline import faces, footage, presenter_cache
from heygemd.pipeline.audio import AudioFeatures
from heygemd.pipeline.crops import Crops, Cut
from heygemd.pipeline.encode import VideoWriter, write_poster
from heygemd.pipeline.engine_contract import Engine, FaceBatch, PresenterEngine
from heygemd.pipeline.frames import ScheduledFrames, read_frames
from heygemd.pipeline.hw_codecs import choose_decoder, choose_encoder
from heygemd.pipeline.probe import VideoInfo, probe_video
from heygemd.pipeline.stages import Stage, run_stages
from heygemd.pipeline.timing import StageTimer
from heygemd.settings import EngineSettings, FacesSettings, LoopMode, VideoSettings

DETECT_SHARE = 0.3
"""Share of a video's progress bar given to face detection (the rest is rendering)."""
BATCH_BYTES = 32 << 20
"""Frame memory of one render batch at most (720p: 12 frames, 1080p: 5), so the frames in flight stay bounded by
bytes, whatever the resolution; see ``batch_frames``."""
QUEUE_DEPTH = 1
"""Batches waiting between two neighbouring stages; with one in work in each of the five stages, at most about
nine batches (``batch_frames`` frames each) are in memory."""


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
    """``detect`` or ``render`` (``prepare`` and ``poster`` in :func:`prepare_presenter`)."""
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
    warnings: tuple[ErrorInfo, ...] = ()
    """Problems that did not stop the render (``footage.footage_warnings``, for an engine whose needs ask for them)."""
    encoder: str = "libx264"
    """The video encoder used: libx264 or h264_nvenc (``video.encoder``)."""
    decoder: str = "cpu"
    """The video decoder used for rendering: cpu or nvdec (``video.decoder``)."""
    source: VideoInfo | None = None
    """The presenter video as the render read it."""
    track: faces.FaceTrack | None = None
    """The presenter's face track the render used (its frames, not the output's; the quality check reuses it)."""
    loop_mode: LoopMode = VideoSettings.model_fields["loop_mode"].default
    """How the presenter's frames were scheduled to the output's length (``frames.frame_schedule``)."""

    @property
    def caches(self) -> dict[str, bool]:
        """Per cache this render looked in (the folder's name), whether it held the preparation: the face track
        always, the engine's per-presenter preparation for engines that have one."""
        found = {faces.FOLDER: self.cached_faces}
        if self.cached_presenter is not None:
            found[presenter_cache.FOLDER] = self.cached_presenter
        return found


ProgressCallback = Callable[[VideoProgress], None]


def poster_path_for(output: Path) -> Path:
    return output.with_suffix(POSTER_SUFFIX)


def render_video(
    video: Path | InputFile,
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
    before_publish: Callable[[], None] | None = None,
) -> RenderResult:
    """Lip-sync ``video`` to ``audio`` into ``output`` (written under a temporary name, renamed when complete).

    ``video`` and ``audio.source``, when open ``InputFile``s, are read through their descriptors only (probe,
    detection, decoding, muxing), whatever their names point to meanwhile; paths are opened at each step.
    Raises a HeygemdError subclass naming the file for every known input problem, and Interrupted when
    ``should_stop`` turns true (the partial output is removed). ``before_publish`` is called once every frame of
    ``video`` was read and rendered, before the output is put in place: what it raises fails the render, and no
    output appears.
    """
    started = time.perf_counter()
    timer = StageTimer()
    report = on_progress or (lambda _p: None)
    stop = should_stop or (lambda: False)

    info, content_key, track_fp, track, cached = _tracked_presenter(
        video, detector, options, cache_dir, timer, report, stop
    )
    n_out = audio.frame_count(info.fps)
    crops = Crops(engine.needs, track)
    prep: presenter_cache.Preparation | None = None
    if engine.needs.presenter_prep and isinstance(engine, PresenterEngine):
        prep = _presenter_preparation(info, crops, engine, options, cache_dir, content_key, track_fp, timer, stop)
    prompts = audio.prompts if engine.needs.audio != "mel" else None
    if engine.needs.audio != "mel" and prompts is None:
        raise ValueError(
            f"engine {engine.name} needs {engine.needs.audio} features; compute them with LipSyncSession.audio"
        )

    warnings = footage.footage_warnings(track, info.path) if engine.needs.footage_warnings else []
    engine.prepare(audio.mel)
    poster_index = int(np.argmax(audio.loudness(info.fps))) if options.video.poster else -1
    poster = poster_path_for(output) if options.video.poster else None
    video_opts = options.video
    loop_mode = options.loop_mode or video_opts.loop_mode
    crf = options.crf if options.crf is not None else video_opts.crf
    decoder = choose_decoder(video_opts.decoder)
    encoder = choose_encoder(video_opts.encoder)

    work_dir.mkdir(parents=True, exist_ok=True)
    frames_per_batch = batch_frames(engine, options.batch_size, info.frame_bytes)
    poster_frame: np.ndarray | None = None
    with (
        ScheduledFrames(info, n_out, loop_mode, work_dir, codec=video_opts.spool, decoder=decoder) as scheduled,
        timer.closing_in(
            "encode",
            VideoWriter(
                output,
                info.width,
                info.height,
                info.fps,
                audio.source,
                audio.duration,
                crf=crf,
                preset=video_opts.preset,
                audio_bitrate=video_opts.audio_bitrate,
                encoder=encoder,
            ),
        ) as writer,
    ):

        def cut(batch: _Batch) -> _Batch:
            with timer.stage("faces"):
                mels = audio.windows(info.fps, batch.start, batch.stop)  # per batch: flat memory for long audio
                rows = prompts.windows(info.fps, batch.start, batch.stop) if prompts is not None else None
                return _cut_faces(batch, track, crops, mels, rows, prep)

        def infer(batch: _Batch) -> _Batch:
            if batch.faces is not None:
                with timer.stage("infer"):
                    batch.mouths = engine.generate(batch.faces)
            return batch

        def blend(batch: _Batch) -> _Batch:
            with timer.stage("blend"):
                _paste_mouths(batch, crops)
            return batch

        def encode(batch: _Batch) -> None:
            nonlocal poster_frame
            if stop():
                raise Interrupted("stopped while rendering", path=info.path)
            with timer.stage("encode"):
                for offset, frame in enumerate(batch.frames):
                    writer.write(frame)
                    if batch.start + offset == poster_index:
                        poster_frame = frame.copy()
            report(VideoProgress("render", batch.stop, n_out, DETECT_SHARE + (1 - DETECT_SHARE) * batch.stop / n_out))

        # Decode, faces, infer and blend each run in a thread of their own; encode (the writer's pipe, progress
        # and interruption) in this one. An error in any stops all of them before the with-block closes the
        # decoder and removes the partial output.
        run_stages(
            _batches(timer.timed("decode", scheduled), frames_per_batch, engine.needs.window, crops.usable),
            [Stage("faces", cut), Stage("infer", infer), Stage("blend", blend)],
            encode,
            depth=QUEUE_DEPTH,
            source_name="decode",
        )
        if before_publish is not None:
            before_publish()
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
        warnings=tuple(warnings),
        encoder=encoder,
        decoder=decoder,
        source=info,
        track=track,
        loop_mode=loop_mode,
    )


@dataclass(frozen=True)
class PresenterPrep:
    """What :func:`prepare_presenter` made of a presenter: everything a render derives from the video alone."""

    info: VideoInfo
    track: faces.FaceTrack
    cached_faces: bool
    """The face track came from the cache (no detection ran)."""
    preparations: dict[str, presenter_cache.Preparation]
    """Per engine with a per-presenter preparation (its name), that preparation."""
    warnings: tuple[ErrorInfo, ...]
    """What ``footage.footage_warnings`` finds in the track (a covered mouth, a profile view, a small face)."""
    poster: Path | None
    timings: dict[str, float]
    """Seconds per stage (decode, detect, prepare, poster) and ``total``."""


def prepare_presenter(
    video: InputFile,
    engines: list[Engine],
    detector: faces.FaceDetector,
    *,
    options: RenderOptions,
    cache_dir: Path,
    poster: Path | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PresenterPrep:
    """Do once, ahead of any audio, what a render of ``video`` would derive from the presenter alone: probe it,
    track its face (cached as a render caches it), each of ``engines``' per-presenter preparations (cached the
    same way, so a render with any audio finds them), and, with ``poster``, a poster JPEG there (a frame with the
    face, from early in the video). The same errors as a render: NoFace, PictureTooLarge, DecodeError, ...;
    Interrupted when ``should_stop`` turns true. Progress goes 0..DETECT_SHARE while the face is tracked, then in
    equal steps per preparation."""
    started = time.perf_counter()
    timer = StageTimer()
    report = on_progress or (lambda _p: None)
    stop = should_stop or (lambda: False)
    info, content_key, track_fp, track, cached = _tracked_presenter(
        video, detector, options, cache_dir, timer, report, stop
    )
    preparing = [e for e in engines if e.needs.presenter_prep and isinstance(e, PresenterEngine)]
    steps = len(preparing) + (poster is not None)
    preparations: dict[str, presenter_cache.Preparation] = {}
    for done, engine in enumerate(preparing):
        report(VideoProgress("prepare", done, steps, DETECT_SHARE + (1 - DETECT_SHARE) * done / steps))
        assert isinstance(engine, PresenterEngine)
        preparations[engine.name] = _presenter_preparation(
            info, Crops(engine.needs, track), engine, options, cache_dir, content_key, track_fp, timer, stop
        )
    if poster is not None:
        report(VideoProgress("poster", steps - 1, steps, DETECT_SHARE + (1 - DETECT_SHARE) * (steps - 1) / steps))
        with timer.stage("poster"):
            write_poster(_poster_frame(info, track, stop), poster)
    timings = dict(timer.seconds)
    timings["total"] = time.perf_counter() - started
    return PresenterPrep(
        info=info,
        track=track,
        cached_faces=cached,
        preparations=preparations,
        warnings=tuple(footage.footage_warnings(track, info.path)),
        poster=poster,
        timings=timings,
    )


def _poster_frame(info: VideoInfo, track: faces.FaceTrack, stop: Callable[[], bool]) -> np.ndarray:
    """A frame of the presenter with the face: the first one with a face from a tenth into the video (at most two
    seconds in: little is decoded for it), else the first with a face."""
    with_face = np.flatnonzero(track.face_mask)
    start = min(len(track) // 10, round(2 * info.fps))
    later = with_face[with_face >= start]
    wanted = int(later[0]) if later.size else int(with_face[0]) if with_face.size else 0
    with contextlib.closing(read_frames(info)) as source:
        for i, frame in enumerate(source):
            if stop():
                raise Interrupted("stopped while making the poster", path=info.path)
            if i == wanted:
                return frame
    raise DecodeError(f"frame {wanted} could not be decoded for the poster", path=info.path)


class _TrackedPresenter(NamedTuple):
    info: VideoInfo
    content_key: str
    """The video's content key (``faces.video_content_key``): the caches' key."""
    track_fp: str
    """What the face track depends on besides the content (``_track_fingerprint``)."""
    track: faces.FaceTrack
    cached: bool
    """Whether the face track came from the cache."""


def _tracked_presenter(
    video: Path | InputFile,
    detector: faces.FaceDetector,
    options: RenderOptions,
    cache_dir: Path,
    timer: StageTimer,
    report: ProgressCallback,
    stop: Callable[[], bool],
) -> _TrackedPresenter:
    """What a render and a presenter's preparation both start with: ``video`` probed, its face tracked (cached per
    content) and found in enough of its frames (NoFace)."""
    info = probe_video(
        video,
        still_fps=options.video.still_fps,
        max_pixels=options.video.max_presenter_pixels,
        max_seconds=options.video.max_presenter_seconds,
    )
    content_key = faces.video_content_key(info.source)
    track_fp = _track_fingerprint(info, detector, options.faces)
    track, cached = _face_track(info, detector, options.faces, cache_dir, content_key, track_fp, timer, report, stop)
    _require_face(track, info, options.faces)
    return _TrackedPresenter(info, content_key, track_fp, track, cached)


def _require_face(track: faces.FaceTrack, info: VideoInfo, settings: FacesSettings) -> None:
    """NoFace when the face was found in fewer frames than ``faces.min_face_ratio`` (a photo: none at all)."""
    if track.face_ratio < settings.min_face_ratio:
        if info.is_still:
            raise NoFace("no face was found in the photo", path=info.path, hint=NoFace.photo_hint)
        raise NoFace(
            f"a face was found in {track.face_ratio:.0%} of the frames (at least {settings.min_face_ratio:.0%} needed)",
            path=info.path,
        )


def batch_frames(engine: Engine, batch_size: int, frame_bytes: int) -> int:
    """Frames per render batch: ``engine.batch_size`` (the setting) at most, no more than the engine takes in one
    pass (``Engine.batch_size``; Wav2Lip on the CPU: ``wav2lip.CPU_SUB_BATCH``; more frames per batch would only
    wait in memory, not go faster), and no more than ``BATCH_BYTES`` of frames; at least one. For an engine with
    windows (``EngineNeeds.window``): whole windows, at least one, even past ``BATCH_BYTES``."""
    frames = max(1, min(batch_size, engine.batch_size, BATCH_BYTES // max(1, frame_bytes)))
    window = engine.needs.window
    return max(window, frames // window * window)


def _face_track(
    info: VideoInfo,
    detector: faces.FaceDetector,
    settings: FacesSettings,
    cache_dir: Path,
    content_key: str,
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
                select=settings.select,
                progress=progress,
            )

    track = faces.cached_track(content_key, cache_dir, fingerprint, compute)
    if computed:
        # detection time includes the decode pass it pulled frames from; keep the stages disjoint
        timer.seconds["detect"] -= timer.seconds["decode"]
    return track, not computed


def _track_fingerprint(info: VideoInfo, detector: faces.FaceDetector, settings: FacesSettings) -> str:
    return faces.track_fingerprint(
        detector.name,
        settings.pads,
        settings.smooth_window,
        settings.max_gap_frames,
        settings.detect_max_side,
        # the frames the track indexes: a different decode (size, rate, count) must not reuse it
        frames=[info.width, info.height, round(info.fps, 3), info.frame_count],
        # the face followed, named only when it is not the default: tracks cached before the choice stay valid
        **({"select": settings.select} if settings.select != "largest" else {}),
    )


def _presenter_preparation(
    info: VideoInfo,
    crops: Crops,
    engine: PresenterEngine,
    options: RenderOptions,
    cache_dir: Path,
    content_key: str,
    track_fp: str,
    timer: StageTimer,
    stop: Callable[[], bool],
) -> presenter_cache.Preparation:
    """The engine's preparation of every source frame (zeros where there is no face), cached per video content."""
    fp = presenter_cache.fingerprint(engine=engine.prep_version, crop=crops.version, track=track_fp)

    pass_size = max(1, min(options.batch_size, engine.batch_size))

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
                crop = crops.crop(frame, i)
                if crop is not None:
                    pending.append((i, crop))
                if len(pending) >= pass_size:
                    flush()
        flush()

    shape = (len(crops.track), *engine.prep_shape())
    limit = int(options.presenter_cache_gb * 1e9)
    return presenter_cache.cached_preparation(content_key, cache_dir, fp, shape, compute, limit)


@dataclass
class _Batch:
    """Consecutive output frames on their way through the stages."""

    start: int
    """Output index of the first frame."""
    frames: list[np.ndarray]
    sources: list[int]
    """Source frame index of each frame."""
    windows: list[int] = field(default_factory=list)
    """Lengths of the engine's windows (``EngineNeeds.window``) over the frames with a face, in order."""
    jobs: list[tuple[int, Cut]] = field(default_factory=list)
    """(offset in ``frames``, its crop) of each frame with a usable face."""
    faces: FaceBatch | None = None
    """The engine's input, None when no frame has a face."""
    mouths: list[np.ndarray] | None = None
    """The engine's output, one per job."""

    @property
    def stop(self) -> int:
        return self.start + len(self.frames)


def _batches(
    items: Iterator[tuple[int, np.ndarray]], size: int, window: int = 1, usable: Callable[[int], bool] | None = None
) -> Iterator[_Batch]:
    """Consecutive output frames ``(source index, frame)`` in batches of ``size`` frames.

    With windows (``window`` > 1): a window is up to ``window`` consecutive frames that are ``usable`` (have a
    face), and a frame without one ends it, so the engine's temporal layers never span a gap. A batch starts only
    where a window starts or at a frame without a face: it holds whole windows, at least ``size`` frames where the
    video goes on, at most ``size + window - 1``."""
    start = 0
    frames: list[np.ndarray] = []
    sources: list[int] = []
    windows: list[int] = []
    filled = 0
    """Frames in the window now open (0: none is open)."""
    for source_index, frame in items:
        face = usable is None or usable(source_index)
        opens = face and (filled == 0 or filled == window)
        if len(frames) >= size and (opens or not face):
            yield _Batch(start, frames, sources, windows)
            start += len(frames)
            frames, sources, windows = [], [], []
        frames.append(frame)
        sources.append(source_index)
        if not face:
            filled = 0
        elif opens:
            windows.append(1)
            filled = 1
        else:
            windows[-1] += 1
            filled += 1
    if frames:
        yield _Batch(start, frames, sources, windows)


def _cut_faces(
    batch: _Batch,
    track: faces.FaceTrack,
    crops: Crops,
    mels: np.ndarray,
    prompts: np.ndarray | None,
    prep: presenter_cache.Preparation | None,
) -> _Batch:
    """Fill ``batch.jobs`` and ``batch.faces``: the crops, landmarks, masks and audio of the frames with a face.

    ``mels`` (and ``prompts``, for engines that need them) hold the audio window of each output frame of the
    batch, in order; ``crops`` cuts each frame by the engine's crop rule; ``prep`` is the presenter's preparation.
    """
    for offset, (source_index, frame) in enumerate(zip(batch.sources, batch.frames, strict=True)):
        cut = crops.cut(frame, source_index)
        if cut is not None:
            batch.jobs.append((offset, cut))
    if not batch.jobs:
        return batch
    offsets = [offset for offset, _ in batch.jobs]
    cuts = [cut for _, cut in batch.jobs]
    masks = [cut.mask for cut in cuts if cut.mask is not None]
    batch.faces = FaceBatch(
        crops=[cut.crop for cut in cuts],
        landmarks=[cut.landmarks for cut in cuts],
        mels=np.stack([mels[offset] for offset in offsets]),
        masks=masks if len(masks) == len(cuts) else None,
        prompts=np.stack([prompts[offset] for offset in offsets]) if prompts is not None else None,
        prepared=np.stack([prep.data[batch.sources[offset]] for offset in offsets]) if prep is not None else None,
        windows=tuple(batch.windows),
        mouth_rest=track.mouth_rest,
    )
    return batch


def _paste_mouths(batch: _Batch, crops: Crops) -> None:
    """Paste the engine's results into ``batch.frames`` (frames without a face pass through)."""
    if batch.mouths is None:
        return
    for (offset, cut), mouth in zip(batch.jobs, batch.mouths, strict=True):
        crops.paste(batch.frames[offset], batch.sources[offset], cut, mouth)
