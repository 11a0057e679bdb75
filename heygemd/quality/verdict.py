"""The verdict: each measure against its threshold (``[quality]`` in the settings), and the report it makes.

A video with any measure beyond its threshold is to be reviewed, with one reason per such measure. A measure the
video cannot support (None) gives no reason.
"""

from __future__ import annotations

from heygemd.quality.measures import Measures
from heygemd.quality.report import QualityReason, QualityReport
from heygemd.settings import QualitySettings


def verdict(measures: Measures, thresholds: QualitySettings) -> QualityReport:
    """The report of ``measures``: their values, rounded for status.json, and the reasons to review."""
    reasons: list[QualityReason] = []

    def reason(code: str, explanation: str) -> None:
        reasons.append(QualityReason(code=code, explanation=explanation))

    offset = measures.offset
    if offset is not None:
        weak = offset.sync < thresholds.min_sync
        if weak:
            reason(
                "WEAK_SYNC",
                f"the mouth follows the speech weakly (correlation {offset.sync:.2f}, at least "
                f"{thresholds.min_sync:.2f} expected): it may be saying something else",
            )
        # an offset is only meaningful where the mouth does follow the speech
        elif offset.ms > thresholds.max_lead_ms:
            reason(
                "AV_OFFSET",
                f"the mouth moves {offset.ms:.0f} ms before the sound (at most {thresholds.max_lead_ms:.0f} ms "
                "expected): the sound is late",
            )
        elif offset.ms < -thresholds.max_lag_ms:
            reason(
                "AV_OFFSET",
                f"the mouth moves {-offset.ms:.0f} ms after the sound (at most {thresholds.max_lag_ms:.0f} ms "
                "expected): the sound is early",
            )
    if measures.silence_motion is not None and measures.silence_motion > thresholds.max_silence_motion:
        reason(
            "SILENCE_MOTION",
            f"the mouth moves in the pauses of the speech ({measures.silence_motion:.0%} of its movement while "
            f"speaking, at most {thresholds.max_silence_motion:.0%} expected): the source's own speech may show",
        )
    if measures.frozen is not None and measures.frozen > thresholds.max_frozen:
        reason(
            "FROZEN_MOUTH",
            f"the mouth stands still during {measures.frozen:.0%} of the speech (at most "
            f"{thresholds.max_frozen:.0%} expected)",
        )
    if measures.face_coverage < thresholds.min_face_coverage:
        reason(
            "FACE_COVERAGE",
            f"the face was found and rendered in {measures.face_coverage:.0%} of the frames (at least "
            f"{thresholds.min_face_coverage:.0%} expected); the others show the source unchanged",
        )
    if measures.jitter is not None and measures.jitter > thresholds.max_jitter:
        reason(
            "JITTER",
            f"the mouth shakes from frame to frame ({measures.jitter:.1f} % of the eye distance, at most "
            f"{thresholds.max_jitter:.1f} % expected)",
        )
    if measures.seam is not None and measures.seam > thresholds.max_seam:
        reason(
            "SEAM",
            f"the colour steps at the edge of the rendered lower face ({measures.seam:.1f} Lab units, at most "
            f"{thresholds.max_seam:.1f} expected)",
        )
    return QualityReport(
        av_offset_ms=_rounded(offset.ms if offset else None, 1),
        av_offset_frames=_rounded(offset.frames if offset else None, 2),
        sync=_rounded(offset.sync if offset else None, 3),
        silence_motion=_rounded(measures.silence_motion, 3),
        frozen=_rounded(measures.frozen, 3),
        face_coverage=_rounded(measures.face_coverage, 4),
        jitter=_rounded(measures.jitter, 2),
        seam=_rounded(measures.seam, 2),
        review=bool(reasons),
        reasons=reasons,
    )


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)
