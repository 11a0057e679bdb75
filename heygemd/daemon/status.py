"""The per-job ``status.json``: pydantic models, atomic writes and the JSON Schema (tables: ``heygemd.status_view``).

``status.json`` is the public contract of a job in the outbox: people and scripts poll it, so it is always
written whole (temp file in the same folder, fsync, ``os.replace``, fsync of the folder) and validated
against ``status.schema.json``, shipped next to this module and generated from :class:`JobStatus`
(regenerate with ``python -m heygemd.daemon.status``).

States: a job is ``queued -> processing -> done | partial | failed | cancelled``; a video is
``pending -> processing -> done | failed | cancelled``, or ``not_started`` when the job failed as a whole before
the video ran. ``partial`` means at least one video done and at least one failed; ``cancelled`` that a user
cancelled the job (``heygemd.daemon.cancel``): the videos done before it stay done, the others are ``cancelled``.

No torch/cv2 here: ``heygemd status`` imports this module and must start fast.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, computed_field

from heygemd.daemon.priority import HIGHEST, LOWEST, NORMAL
from heygemd.errors import ErrorInfo, HeygemdError
from heygemd.fsutil import ReplaceFn, atomic_write_bytes, read_regular
from heygemd.quality.report import QualityReport

SCHEMA_VERSION = 3
"""Only ever increases; fields are added, never renamed."""

SCHEMA_PATH = Path(__file__).with_name("status.schema.json")

JobState = Literal["queued", "processing", "done", "partial", "failed", "cancelled"]
VideoState = Literal["pending", "processing", "done", "failed", "cancelled", "not_started"]
"""``not_started``: the job failed as a whole (its ``error``) before this video ran (schema version 3)."""

FINISHED_VIDEO_STATES: frozenset[str] = frozenset({"done", "failed", "cancelled", "not_started"})
FINISHED_JOB_STATES: frozenset[str] = frozenset({"done", "partial", "failed", "cancelled"})


def utc_now() -> datetime:
    """The current time as an aware UTC datetime (what every timestamp in status.json holds)."""
    return datetime.now(timezone.utc)


class _Model(BaseModel):
    # "ignore": a status.json written by a newer heygemd (more fields) still reads with an older `heygemd status`.
    model_config = ConfigDict(extra="ignore", validate_assignment=True)


class ErrorStatus(_Model):
    """Why a job or a video failed: a stable machine code, a message naming the file, and what to do about it."""

    code: str = Field(description="Stable machine code, e.g. NO_FACE, BAD_JOB, DECODE_FAILED.")
    message: str = Field(description="What went wrong, naming the file.")
    hint: str = Field("", description="What the user can do about it.")

    @classmethod
    def from_info(cls, info: ErrorInfo) -> "ErrorStatus":
        return cls(code=info.code, message=info.message, hint=info.hint)

    @classmethod
    def from_exception(cls, exc: BaseException) -> "ErrorStatus":
        return cls.from_info(ErrorInfo.from_exception(exc))


class CancelStatus(_Model):
    """A user's request to cancel the job (also the content of the request file, ``heygemd.daemon.cancel``)."""

    requested: AwareDatetime = Field(description="When the cancel was requested.")
    by: str = Field("", description="Who asked: the CLI (user@host) or the web server (and the client's address).")


class AudioStatus(_Model):
    """The job's speech audio."""

    file: str = Field(description="File name of the audio inside the job folder.")
    duration_s: float | None = Field(None, ge=0, description="Length in seconds, once decoded.")


class RetryStatus(_Model):
    """A second render of a video to review, with another installed engine (``[quality] on_review = "retry"``)."""

    engine: str = Field(description="The engine of the second render.")
    kept: bool = Field(False, description="Its check passed and its output replaced the first.")
    quality: QualityReport | None = Field(None, description="The check of the second render.")
    error: ErrorStatus | None = Field(None, description="Why the second render or its check failed (the first stays).")


class VideoStatus(_Model):
    """One presenter video (or still image) of the job and what became of it."""

    input: str = Field(description="File name of the input video or image inside the job folder.")
    state: VideoState = "pending"
    progress: float = Field(0.0, ge=0, le=1, description="Fraction of this video's work done, 0..1.")
    frames_done: int = Field(0, ge=0)
    frames_total: int | None = Field(None, ge=0, description="Output frames (the audio's length at the video's fps).")
    face_ratio: float | None = Field(None, ge=0, le=1, description="Fraction of frames in which a face was found.")
    output: str | None = Field(None, description="Output file name, relative to the job's outbox folder.")
    poster: str | None = Field(None, description="Poster JPEG name, relative to the job's outbox folder.")
    started: AwareDatetime | None = None
    finished: AwareDatetime | None = None
    timings: dict[str, float] = Field(
        default_factory=dict,
        description="Seconds per stage, free-form: decode, detect, infer, blend, encode, total.",
    )
    encoder: str | None = Field(None, description="Video encoder of the output: libx264 or h264_nvenc.")
    cached: dict[str, bool] = Field(
        default_factory=dict,
        description="Per cache this render looked in, whether it held the presenter's preparation: faces (the face "
        "track), presenter (the engine's per-presenter preparation, for engines that have one). Also written as "
        "face_track and engine_prep: cached or computed (null: not rendered yet, or an engine without one).",
    )
    presenter: str | None = Field(
        None, description="The library presenter this video is (job.toml presenters); null for the job's own files."
    )
    engine: str | None = Field(
        None, description="The engine that rendered this video when it is not the job's: its presenter's own engine."
    )
    error: ErrorStatus | None = None
    warnings: list[ErrorStatus] = Field(
        default_factory=list,
        description="Problems that did not fail the video, e.g. MOUTH_COVERED, PROFILE_VIEW, FACE_TOO_SMALL.",
    )
    quality: QualityReport | None = Field(
        None, description="The check of the output after encoding (sync, mouth, face, seam); null: not checked."
    )
    quality_error: ErrorStatus | None = Field(
        None, description="Why the output could not be checked (the video itself is fine: it stays done)."
    )
    retry: RetryStatus | None = Field(
        None, description="The second render of a video to review; `quality` is the check of the output kept."
    )

    @property
    def finished_state(self) -> bool:
        return self.state in FINISHED_VIDEO_STATES

    @computed_field  # type: ignore[prop-decorator]
    @property
    def face_track(self) -> Literal["cached", "computed"] | None:
        """Whether the render found the presenter's face track cached (from ``cached``)."""
        return _cache_word(self.cached.get(FACES_CACHE))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def engine_prep(self) -> Literal["cached", "computed"] | None:
        """Whether the render found the engine's per-presenter preparation cached (from ``cached``)."""
        return _cache_word(self.cached.get(PRESENTER_CACHE))


FACES_CACHE = "faces"
PRESENTER_CACHE = "presenter"
"""The names ``cached`` records (the cache folders: ``pipeline.faces.FOLDER``, ``pipeline.presenter_cache.FOLDER``)."""


def _cache_word(hit: bool | None) -> Literal["cached", "computed"] | None:
    return None if hit is None else "cached" if hit else "computed"


CallbackState = Literal["pending", "delivered", "failed"]


class CallbackRecord(_Model):
    """One delivery of the job's signed callback (``callback_url``, :mod:`heygemd.notify.callbacks`), as it goes."""

    delivery: str = Field(description="The Heygemd-Delivery id: the same on every attempt.")
    event: str = Field(description="The Heygemd-Event: job.finished.")
    host: str = Field(description="The callback URL's host (never the whole URL: it may carry a token).")
    state: CallbackState = Field(description="pending (an attempt is due), delivered (a 2xx answer), failed.")
    attempts: int = Field(0, ge=0, description="Attempts made so far.")
    last_error: str | None = Field(None, description="Why the last attempt failed, e.g. 'answered 500'.")
    next_attempt: AwareDatetime | None = Field(None, description="When the next attempt is due, while pending.")
    finished: AwareDatetime | None = Field(None, description="When it was delivered or given up.")


class JobStatus(_Model):
    """Everything ``status.json`` says about one job (the schema shipped as ``status.schema.json``)."""

    schema_version: int = Field(SCHEMA_VERSION, description="Format version of this file; only ever increases.")
    job_id: str = Field(description="Unique id: the job folder's name, with -2, -3... when that name was taken.")
    job_name: str = Field(description="The job folder's name as the user gave it.")
    state: JobState = "queued"
    attempt: int = Field(1, ge=1, description="How many times processing of this job has started (restarts add one).")
    created: AwareDatetime | None = Field(None, description="When the job folder was found ready in the inbox.")
    claimed: AwareDatetime | None = Field(None, description="When heygemd took the job out of the inbox.")
    started: AwareDatetime | None = Field(None, description="When processing (last) started.")
    first_frame: AwareDatetime | None = Field(
        None,
        description="When the job's first frame was rendered (after the claim: the wait for a worker, the engine's "
        "load, the audio's decoding and the first face track).",
    )
    finished: AwareDatetime | None = Field(None, description="When the job reached done, partial, failed or cancelled.")
    updated: AwareDatetime | None = Field(None, description="When this file was last written.")
    host: str = Field(default_factory=socket.gethostname, description="Machine that runs the job.")
    pid: int = Field(default_factory=os.getpid, description="Process id of the heygemd that runs the job.")
    worker: str | None = Field(
        None, description="Farm worker that runs the job (Celery node name, e.g. gpu0@host); none on a single host."
    )
    device: str | None = Field(None, description="Device of the farm worker that runs the job (e.g. cuda:0).")
    engine: str | None = Field(None, description="Lip-sync engine used: musetalk, wav2lip, mouthwarp or latentsync.")
    engine_identity: str | None = Field(None, description="Identity of the engine's weights (checkpoint hash).")
    engine_parameters: dict[str, int | float | bool] = Field(
        default_factory=dict,
        description="What shaped the engine's pictures besides its weights (latentsync: steps, guidance, seed, "
        "deepcache); empty for an engine without any.",
    )
    audio: AudioStatus | None = None
    videos: list[VideoStatus] = Field(default_factory=list)
    ignored: list[str] = Field(default_factory=list, description="Files in the job folder that were not used.")
    progress: float = Field(0.0, ge=0, le=1, description="Overall fraction done, 0..1.")
    error: ErrorStatus | None = Field(None, description="Job-level failure (the job could not run at all).")
    cancel: CancelStatus | None = Field(None, description="The user's cancel request, once the worker has seen one.")
    videos_to_review: int = Field(
        0, ge=0, description="Done videos whose quality check asks for a look (quality.review); they stay done."
    )
    submitted_by: str | None = Field(
        None,
        description="Who submitted the job: 'web <account>' (the dashboard or the API; 'web token' for web.token, "
        "'web local' on a loopback server without one), 'cli <user>@<host>' (a retry from the command line), or "
        "'nas <owner>' for a folder copied into the inbox (the owner of the folder).",
    )
    priority: int = Field(
        NORMAL, ge=LOWEST, le=HIGHEST, description="0-9, higher first: low 2, normal 5, high 8 (job.toml, the API)."
    )
    waiting: str | None = Field(
        None,
        description="Why a queued job has not started yet, e.g. 'settling: taken in 52 s, or at once with .ready', "
        "'waits for 20:00' (rendering hours), 'paused', 'bob.mp4: 0 bytes so far' (a file not completely copied); "
        "given by the job list and the API for jobs still in the inbox, null in a status.json the worker writes.",
    )
    callbacks: list[CallbackRecord] = Field(
        default_factory=list,
        description="The deliveries of the job's callback_url once the job ended (host, state, attempts, last "
        "error), updated after every attempt.",
    )

    def counts(self) -> tuple[int, int, int]:
        """(videos done, videos failed, videos in total)."""
        done = sum(1 for v in self.videos if v.state == "done")
        failed = sum(1 for v in self.videos if v.state == "failed")
        return done, failed, len(self.videos)

    def recomputed(self) -> "JobStatus":
        """A copy whose ``progress``, ``videos_to_review`` (and, once every video has finished, ``state``) follow
        from the videos.

        A job-level ``error`` keeps the job ``failed`` whatever the videos say. A cancelled job's progress stays
        what was done (its cancelled videos count for what they had rendered when it stopped).
        """
        update: dict[str, object] = {
            "progress": overall_progress(self.videos),
            "videos_to_review": sum(1 for v in self.videos if v.state == "done" and v.quality and v.quality.review),
        }
        if self.error is not None:
            update["state"] = "failed"
        elif self.videos and all(v.finished_state for v in self.videos):
            update["state"] = job_state_from_videos(self.videos)
            if update["state"] != "cancelled":
                update["progress"] = 1.0
        return self.model_copy(update=update)


def job_state_from_videos(videos: Sequence[VideoStatus]) -> JobState:
    """The job state the videos imply.

    ``processing`` while any video is pending or processing; then ``cancelled`` when any was cancelled, ``done``
    when all are done, ``failed`` when all failed (or there are none), ``partial`` when at least one is done and
    at least one failed.
    """
    if any(not v.finished_state for v in videos):
        return "processing"
    if any(v.state == "cancelled" for v in videos):
        return "cancelled"
    done = sum(1 for v in videos if v.state == "done")
    if done == 0:
        return "failed"
    return "done" if done == len(videos) else "partial"


def overall_progress(videos: Sequence[VideoStatus]) -> float:
    """Mean progress over the videos; a done, failed or not started video counts as 1 (a cancelled one as far as
    it got).

    Every output is as long as the one audio, so videos weigh the same.
    """
    if not videos:
        return 0.0
    total = sum(1.0 if v.state in ("done", "failed", "not_started") else v.progress for v in videos)
    return min(1.0, total / len(videos))


# ---------------------------------------------------------------------------------------------- writing


def write_status(
    path: Path,
    status: JobStatus,
    *,
    now: Callable[[], datetime] = utc_now,
    replace: ReplaceFn = os.replace,
    sleep: Callable[[float], None] = time.sleep,
    attempts: int = 6,
) -> JobStatus:
    """Atomically write ``status`` (with ``updated`` set to ``now()``) as JSON to ``path``; returns what was written."""
    stamped = status.model_copy(update={"updated": now()})
    data = stamped.model_dump_json(indent=2).encode("utf-8") + b"\n"
    atomic_write_bytes(Path(path), data, replace=replace, sleep=sleep, attempts=attempts)
    return stamped


def record_callback(path: Path, record: CallbackRecord) -> JobStatus | None:
    """Put ``record`` into the callbacks of the finished job whose status.json is ``path``, in place of the same
    delivery's earlier record unless that one is further on (more attempts, or settled): the records of one delivery
    may arrive out of order from two processes sharing the state folder. None when the job's status.json is gone
    (the job was deleted)."""
    try:
        status = read_status(path)
    except FileNotFoundError:
        return None
    earlier = next((c for c in status.callbacks if c.delivery == record.delivery), None)
    if earlier is None:
        callbacks = [*status.callbacks, record]
    elif _progress(record) >= _progress(earlier):
        callbacks = [record if c.delivery == record.delivery else c for c in status.callbacks]
    else:
        return status
    try:
        return write_status(path, status.model_copy(update={"callbacks": callbacks}))
    except FileNotFoundError:  # its folder was deleted meanwhile
        return None


def _progress(record: CallbackRecord) -> tuple[int, bool]:
    return record.attempts, record.state != "pending"


MAX_STATUS_BYTES = 64 << 20
"""Larger than any status.json heygemd writes (a few KiB a video): a larger one is not heygemd's."""


def read_status(path: Path) -> JobStatus:
    """Read a ``status.json``, opened once and never through a link nor waiting on a FIFO (the outbox is on a
    share: what is there may be anyone's). Raises FileNotFoundError, or ValueError (pydantic's ValidationError
    among them) when it is not heygemd's status file: a link, not a regular file, too large, or not a status."""
    try:
        data = read_regular(Path(path), max_bytes=MAX_STATUS_BYTES)
    except HeygemdError as exc:
        raise ValueError(exc.message) from None
    return JobStatus.model_validate_json(data)


# ---------------------------------------------------------------------------------------------- JSON Schema


def schema_text() -> str:
    """The JSON Schema of status.json as shipped in ``status.schema.json``."""
    return json.dumps(JobStatus.model_json_schema(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def export_schema(path: Path = SCHEMA_PATH) -> Path:
    """(Re)write the shipped schema file from the model."""
    Path(path).write_text(schema_text(), encoding="utf-8")
    return Path(path)


if __name__ == "__main__":
    print(export_schema())
