"""What the worker does with the quality check of a video it rendered: run it at its own failure boundary, and
(``[quality] on_review = "retry"``) render a video to review once more with another installed engine.

The check never fails a video: a check that raises is logged and recorded as no report with the reason. A retry
never fails it either: its output replaces the first only when its own check passes; otherwise, or when it fails,
the first output stays as it was.

What others read of the check: status.json's per-video ``quality`` (and ``quality_error``, ``retry``), the job's
``videos_to_review``, and the ``video.checked`` log event. Callbacks (the whole status.json), Apprise messages (the
count to review) and the metrics (``heygemd_videos_to_review_total``) take it from there, as the rest of the outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from heygemd.errors import ErrorInfo, report_failure
from heygemd.fsutil import InputFile, publish
from heygemd.lipsync import LipSyncSession
from heygemd.names import temp_path
from heygemd.pipeline.audio import AudioFeatures
from heygemd.pipeline.run import RenderResult, poster_path_for
from heygemd.quality.check import Progress, Rendering, check_render
from heygemd.quality.report import QualityReport
from heygemd.settings import QualitySettings

log = structlog.get_logger("heygemd.worker")

Shown = Callable[[str], str]
"""Rewrites a message as the user should read it (files named inside the job, not by heygemd's paths)."""


@dataclass(frozen=True)
class Checked:
    """A check's outcome: its report, or why there is none."""

    report: QualityReport | None
    error: ErrorInfo | None = None


def check_output(
    audio: AudioFeatures,
    result: RenderResult,
    thresholds: QualitySettings,
    *,
    progress: Progress | None = None,
    shown: Shown | None = None,
) -> Checked:
    """Check ``result.output`` against ``audio``; never raises (the check's own failure boundary)."""
    try:
        report = check_render(result.output, audio, Rendering.of(result), thresholds, progress=progress)
    except Exception as exc:  # the check's boundary: it never fails the video nor stops the job
        return Checked(None, report_failure(log, "check", exc, shown=shown))
    level = log.warning if report.review else log.info
    level(
        "video.checked",
        review=report.review,
        reasons=",".join(report.codes()),
        av_offset_ms=report.av_offset_ms,
        sync=report.sync,
    )
    return Checked(report)


@dataclass(frozen=True)
class Retry:
    """A second render of a video to review with another engine."""

    engine: str
    kept: bool
    """Its output replaced the first (its check passed)."""
    checked: Checked | None
    """Its check (None when the render itself failed)."""
    result: RenderResult | None = None
    """Its render (None when it failed)."""
    error: ErrorInfo | None = None
    """Why the second render failed (the first output stays)."""


def retry(
    video: Path | InputFile,
    audio_file: Path | InputFile,
    output: Path,
    session: LipSyncSession,
    session_for: Callable[[str], LipSyncSession],
    thresholds: QualitySettings,
    *,
    render_options: Mapping[str, object],
    progress: Progress | None = None,
    shown: Shown | None = None,
) -> Retry | None:
    """Render ``video`` once more with the first other engine installed here (``LipSyncSession.alternatives``), into a
    temporary file next to ``output``; keep it (renamed over ``output``, with its poster) when its check passes.
    None when no other engine is installed. Never raises: a failing second render leaves the first in place."""
    others = session.alternatives()
    if not others:
        log.info("video.retry_skipped", reason="no other engine is installed")
        return None
    engine = others[0]
    trial = temp_path(output)
    log.info("video.retry", engine=engine)
    try:
        other = session_for(engine)
        features = other.audio(audio_file)
        result = other.render(video, features, trial, **render_options)  # type: ignore[arg-type]
        checked = check_output(features, result, thresholds, progress=progress, shown=shown)
        kept = checked.report is not None and not checked.report.review
        if kept:
            publish(trial, output)
            if result.poster is not None and result.poster.is_file():
                publish(result.poster, poster_path_for(output))
    except Exception as exc:  # the retry's boundary: the first output stays
        _remove(trial)
        return Retry(engine, kept=False, checked=None, error=report_failure(log, "retry", exc, shown=shown))
    if not kept:
        _remove(trial)
    log.info("video.retried", engine=engine, kept=kept)
    return Retry(engine, kept=kept, checked=checked, result=result)


def _remove(trial: Path) -> None:
    for path in (trial, poster_path_for(trial)):
        path.unlink(missing_ok=True)
