"""The check of one video: observe its frames, measure them against the speech, give the verdict.

``check_render``: a video heygemd just rendered (the daemon's worker calls it after encoding), with the speech the
job already decoded and the face track the render made. ``score_file``: any file, with its own sound or a separate
audio (``heygemd score``). Both run the same measures and verdict; neither needs a GPU or any model weights but
dlib's shape predictor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

from heygemd.pipeline.audio import AudioFeatures
from heygemd.pipeline.faces import FaceTrack
from heygemd.pipeline.frames import frame_schedule
from heygemd.pipeline.probe import VideoInfo, probe_video
from heygemd.pipeline.run import RenderResult
from heygemd.quality import observe
from heygemd.quality.measures import measure, speech_of
from heygemd.quality.report import QualityReport
from heygemd.quality.soundtrack import speech_features
from heygemd.quality.verdict import verdict
from heygemd.settings import LoopMode, QualitySettings, VideoSettings

log = structlog.get_logger(__name__)

Progress = Callable[[int, int], None]
"""Called with (frames checked, frames in all) as the check goes; what it raises stops the check."""


@dataclass(frozen=True)
class Rendering:
    """What a render made an output from: the presenter video, its face track and how its frames were scheduled
    (``RenderResult.source``, ``track``, ``loop_mode``)."""

    source: VideoInfo | None
    track: FaceTrack | None
    """None (or no ``source``): not known; the output is then tracked itself, and no seam is measured."""
    loop_mode: LoopMode

    @classmethod
    def of(cls, result: RenderResult) -> Rendering:
        return cls(source=result.source, track=result.track, loop_mode=result.loop_mode)


def check_render(
    output: Path,
    audio: AudioFeatures,
    rendering: Rendering,
    thresholds: QualitySettings,
    *,
    progress: Progress | None = None,
) -> QualityReport:
    """The report of ``output``, rendered from ``rendering`` to ``audio``. Raises HeygemdError (or any error of a
    bug) when the output cannot be checked; the caller records that and keeps the video."""
    info = probe_video(output)
    if rendering.track is None or rendering.source is None:
        return _report(info, audio, observe.references_of(observe.track(info)), None, thresholds, progress)
    schedule = _schedule(len(rendering.track), info.frame_count, rendering.loop_mode)
    references = observe.references_of(rendering.track, schedule)
    source = observe.SourceFrames(rendering.source, schedule)
    return _report(info, audio, references, source, thresholds, progress)


def score_file(
    video: Path,
    thresholds: QualitySettings,
    *,
    audio: Path | None = None,
    source: Path | None = None,
    loop_mode: LoopMode = VideoSettings.model_fields["loop_mode"].default,
) -> QualityReport:
    """The report of any ``video``: against its own sound, or ``audio``. The face is tracked on the file itself.
    The seam is measured only against a ``source`` of the same size (the presenter video it was made from, its
    frames scheduled as a render with ``loop_mode`` schedules them)."""
    info = probe_video(video)
    speech = speech_features(info, audio)
    track = observe.track(info)
    frames = None
    if source is not None:
        source_info = probe_video(source, still_fps=info.fps)
        if (source_info.width, source_info.height) == (info.width, info.height):
            schedule = _schedule(source_info.frame_count, info.frame_count, loop_mode)
            frames = observe.SourceFrames(source_info, schedule)
        else:
            log.warning(
                "score.seam_skipped",
                reason=f"the source is {source_info.width}x{source_info.height}, the video {info.width}x{info.height}",
            )
    return _report(info, speech, observe.references_of(track), frames, thresholds)


def _report(
    info: VideoInfo,
    audio: AudioFeatures,
    references: np.ndarray,
    source: observe.SourceFrames | None,
    thresholds: QualitySettings,
    progress: Progress | None = None,
) -> QualityReport:
    seen = observe.observe(info, references, source=source, progress=progress)
    speech = speech_of(audio.mel, info.fps, info.frame_count)
    measures = measure(seen.landmarks, speech, info.fps, face_coverage=seen.face_coverage, seam=seen.seam)
    return verdict(measures, thresholds)


def _schedule(n_source: int, n_out: int, loop_mode: LoopMode) -> np.ndarray:
    return np.fromiter(frame_schedule(n_source, n_out, loop_mode), dtype=np.int64, count=n_out)
