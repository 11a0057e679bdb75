"""``heygemd score VIDEO [--audio A] [--source S] [--json]``: the check the daemon runs on every output, on any video.

The same measures and verdict as the daemon's check (``heygemd.quality``), printed as a table (each measure, its
threshold, the reasons to review) or as the JSON status.json carries per video. The face is tracked on the file
itself with dlib: no GPU, no model weights.
"""

from __future__ import annotations

from pathlib import Path

from heygemd.quality.report import QualityReport
from heygemd.settings import QualitySettings, Settings


def score(settings: Settings, video: Path, *, audio: Path | None = None, source: Path | None = None) -> QualityReport:
    """The quality report of ``video`` against its own sound or ``audio``; the seam only with ``source``."""
    from heygemd.quality.check import score_file  # OpenCV and dlib only when a video is scored

    return score_file(video, settings.quality, audio=audio, source=source, loop_mode=settings.video.loop_mode)


def format_report(report: QualityReport, thresholds: QualitySettings, *, video: str, against: str) -> str:
    """The report as a table: each measure with its threshold, then the verdict and its reasons."""

    def value(number: float | None, fmt: str) -> str:
        return "-" if number is None else fmt.format(number)

    offset = "-"
    if report.av_offset_ms is not None and report.av_offset_frames is not None:
        offset = f"{report.av_offset_ms:+.0f} ms ({report.av_offset_frames:+.1f} frames)"
    rows = [
        ("MEASURE", "VALUE", "EXPECTED"),
        (
            "av offset",
            offset,
            f"-{thresholds.max_lag_ms:.0f} .. +{thresholds.max_lead_ms:.0f} ms (+: the mouth leads the sound)",
        ),
        ("sync", value(report.sync, "{:.2f}"), f">= {thresholds.min_sync:.2f}"),
        ("silence motion", value(report.silence_motion, "{:.2f}"), f"<= {thresholds.max_silence_motion:.2f}"),
        ("frozen", value(report.frozen, "{:.0%}"), f"<= {thresholds.max_frozen:.0%}"),
        ("face coverage", value(report.face_coverage, "{:.0%}"), f">= {thresholds.min_face_coverage:.0%}"),
        ("jitter", value(report.jitter, "{:.2f} %"), f"<= {thresholds.max_jitter:.2f} %"),
        (
            "seam",
            value(report.seam, "{:.1f}"),
            f"<= {thresholds.max_seam:.1f}" + ("" if report.seam is not None else " (measured with --source)"),
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"video    {video} (against {against})", ""]
    lines += [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}".rstrip() for a, b, c in rows]
    lines.append("")
    if report.review:
        lines.append(f"verdict  review: {', '.join(report.codes())}")
        lines += [f"  {reason.code}: {reason.explanation}" for reason in report.reasons]
    else:
        lines.append("verdict  ok")
    return "\n".join(lines) + "\n"
