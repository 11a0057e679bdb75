"""What the check says of one video, as status.json and ``heygemd score --json`` carry it.

No numpy, OpenCV or torch here: status.json's model (``heygemd.daemon.status``) includes this one, and
``heygemd status`` must start fast.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    # as status.json's models: a file written by a newer heygemd (more fields) still reads
    model_config = ConfigDict(extra="ignore", validate_assignment=True)


class QualityReason(_Model):
    """Why a video should be looked at: a stable code and what was measured against what was expected."""

    code: str = Field(description="AV_OFFSET, WEAK_SYNC, SILENCE_MOTION, FROZEN_MOUTH, FACE_COVERAGE, JITTER or SEAM.")
    explanation: str = Field(description="What was measured, against the threshold.")


class QualityReport(_Model):
    """The check of one rendered video (``heygemd.quality``); a measure the video cannot support is null."""

    av_offset_ms: float | None = Field(
        None,
        description="Lag that best aligns the mouth opening with the speech loudness, in ms; positive: the mouth "
        "leads the sound, as speech does (mouthwarp's renders: about 60 ms).",
    )
    av_offset_frames: float | None = Field(None, description="The same lag in video frames.")
    sync: float | None = Field(
        None, description="Correlation of the mouth opening with the loudness at that lag (-1..1); sync strength."
    )
    silence_motion: float | None = Field(
        None, description="Mouth movement in the audio's silences, as a share of its movement while speaking."
    )
    frozen: float | None = Field(None, description="Share of the speech during which the mouth stands still.")
    face_coverage: float | None = Field(None, description="Share of frames with the face found and rendered.")
    jitter: float | None = Field(
        None, description="Frame-to-frame shake of the mouth's landmarks, % of the eye distance (RMS)."
    )
    seam: float | None = Field(
        None,
        description="Colour step across the blend mask's edge beyond the source's (Lab units); null when no "
        "source was compared.",
    )
    review: bool = Field(False, description="A measure is beyond its threshold: someone should look at the video.")
    reasons: list[QualityReason] = Field(default_factory=list, description="Each measure beyond its threshold.")

    def codes(self) -> list[str]:
        return [reason.code for reason in self.reasons]
