"""Typed errors: each knows its code, a message naming the file, and a hint for the user.

Raise the most specific subclass where the problem is known. Only two places catch broadly:
per video (the video fails, the job goes on) and per job (the job fails, the daemon goes on);
both record ``code``, ``message`` and ``hint`` in status.json. A stop (:class:`Interrupted`) is no error: it
derives from BaseException, so these boundaries never catch it by accident.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar


class HeygemdError(Exception):
    """Base of every error heygemd reports to a user."""

    code: ClassVar[str] = "ERROR"
    default_hint: ClassVar[str] = ""

    def __init__(self, message: str, *, path: Path | str | None = None, hint: str | None = None):
        self.path = Path(path) if path is not None else None
        self.message = f"{self.path}: {message}" if self.path is not None else message
        self.hint = hint if hint is not None else self.default_hint
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def info(self) -> "ErrorInfo":
        return ErrorInfo(code=self.code, message=self.message, hint=self.hint)


@dataclass(frozen=True)
class ErrorInfo:
    """What status.json and the CLI summary show of an error."""

    code: str
    message: str
    hint: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> "ErrorInfo":
        if isinstance(exc, HeygemdError):
            return exc.info()
        return cls(
            code="INTERNAL",
            message=f"{type(exc).__name__}: {exc}",
            hint="This is a bug in heygemd; please report it with job.log attached.",
        )


def report_failure(
    log: Any, subject: str, exc: BaseException, *, shown: Callable[[str], str] | None = None
) -> ErrorInfo:
    """Log ``exc`` at a failure boundary and return what status.json and summaries show of it.

    A HeygemdError is a known problem: ``<subject>.failed`` with its code, message and hint. Anything else is
    a bug: ``<subject>.crashed`` with the traceback. ``log`` is a structlog logger. ``shown`` rewrites message
    and hint as the user should read them (the daemon names files inside the job folder as the user dropped it).
    """
    info = ErrorInfo.from_exception(exc)
    if shown is not None:
        info = ErrorInfo(code=info.code, message=shown(info.message), hint=shown(info.hint))
    if isinstance(exc, HeygemdError):
        log.error(f"{subject}.failed", code=info.code, error=info.message, hint=info.hint)
    else:
        log.exception(f"{subject}.crashed", code=info.code)
    return info


class ConfigError(HeygemdError):
    code = "BAD_CONFIG"
    default_hint = "Fix the setting named above in the configuration file or HEYGEMD_* environment."


class ToolMissing(HeygemdError):
    code = "TOOL_MISSING"
    default_hint = "Install ffmpeg (it provides ffprobe too): sudo apt-get install ffmpeg."


class NotMedia(HeygemdError):
    code = "NOT_MEDIA"
    default_hint = "The file is not a readable audio/video/image file; re-export it (e.g. as MP4/H.264 or WAV)."


class NoAudioStream(HeygemdError):
    code = "NO_AUDIO_STREAM"
    default_hint = "Provide a file with a sound track (WAV, MP3, M4A, FLAC, OGG, or a video with audio)."


class NoVideoStream(HeygemdError):
    code = "NO_VIDEO_STREAM"
    default_hint = "Provide a video (MP4, MOV, MKV, WEBM) or a still image (JPG, PNG) of the presenter."


class SilentAudio(HeygemdError):
    code = "EMPTY_AUDIO"
    default_hint = "The audio holds no samples; check the recording and export it again."


class NoFace(HeygemdError):
    code = "NO_FACE"
    default_hint = "Use a video where the presenter's face is visible and frontal in most frames."
    photo_hint: ClassVar[str] = "Use a photo where the presenter's face is visible, frontal and not too small."


class CheckpointError(HeygemdError):
    code = "BAD_CHECKPOINT"
    default_hint = (
        "Place the official Wav2Lip checkpoint (wav2lip_gan.pth or wav2lip.pth, about 416 MB) in models/, "
        'or choose engine = "mouthwarp", which needs no weights.'
    )


class EngineNotInstalled(HeygemdError):
    """A job asks for an engine whose model files are not where the renderers look for them (refused when it is
    submitted, or the job fails with it when it came in through the share)."""

    code = "ENGINE_NOT_INSTALLED"
    default_hint = (
        'Put the engine\'s files into the models folder (heygemd check lists them), or choose engine = "auto".'
    )


class EncodeError(HeygemdError):
    code = "ENCODE_FAILED"
    default_hint = "ffmpeg could not write the output; check free disk space and write permission on the outbox."


class DecodeError(HeygemdError):
    code = "DECODE_FAILED"
    default_hint = "ffmpeg could not decode the file; it may be truncated or still being copied. Copy it again."


class JobError(HeygemdError):
    code = "BAD_JOB"
    default_hint = "A job folder holds one audio file, one or more videos or images, and optionally job.toml."


class UnsafePath(HeygemdError):
    """A symbolic link in a job folder: never followed, so a link cannot leak a file from elsewhere on the server."""

    code = "UNSAFE_PATH"
    default_hint = "Copy the file itself into the job folder; heygemd does not follow links (or shortcuts) to files."


class NotRegularFile(HeygemdError):
    """A name in a job folder that is a FIFO, a device, a socket or a folder where a file is expected."""

    code = "NOT_A_FILE"
    default_hint = "Copy the file itself into the job folder: heygemd reads only regular files."


class FileTooLarge(HeygemdError):
    """A file larger than heygemd reads for its purpose (e.g. a job.toml of megabytes)."""

    code = "FILE_TOO_LARGE"
    default_hint = "Replace the file with the one intended; this one is far larger than such a file can be."


class PictureTooLarge(HeygemdError):
    """A presenter whose picture is larger than ``video.max_presenter_pixels``: refused from its header (a small
    PNG can declare gigabytes of pixels). The hint, made where the size is known, says what to scale it to."""

    code = "PICTURE_TOO_LARGE"
    default_hint = "Scale the video or photo down (e.g. to 3840 pixels wide), or raise video.max_presenter_pixels."


class PresenterTooLong(HeygemdError):
    """A presenter video longer than ``video.max_presenter_seconds``: refused from its header, before any of it is
    decoded (its face would be tracked in every frame). The hint, made where the length is known, says how to cut
    it."""

    code = "PRESENTER_TOO_LONG"
    default_hint = "Cut the video to the part you need, or raise video.max_presenter_seconds."


class AudioTooLong(HeygemdError):
    """An audio longer than ``video.max_audio_seconds``: refused from its header, or at that length while decoding."""

    code = "AUDIO_TOO_LONG"
    default_hint = "Split the audio into shorter parts, one job each, or raise video.max_audio_seconds."


class DiskFull(HeygemdError):
    """Not the input's fault: the daemon keeps the job claimed and tries the video again later."""

    code = "DISK_FULL"
    default_hint = "Free space on the outbox or temp filesystem; heygemd tries the video again every few minutes."


class OutboxUnavailable(DiskFull):
    """The outbox refused a write (share gone, read-only, I/O error): like a full disk, the machine's problem, not
    the job's; the job stays claimed and is tried again later."""

    code = "OUTBOX_UNAVAILABLE"
    default_hint = (
        "Check that the outbox's share is mounted and writable; heygemd tries the job again every few minutes."
    )


class Interrupted(BaseException):
    """A stop or a cancel request reached the work in progress: the current video is left (and redone on the next
    start, or recorded as cancelled). Not an error of the job, so not an Exception: a failure boundary
    (``except Exception``) never takes it for a failure; only the job worker, which acts on stops, catches it."""

    def __init__(self, message: str, *, path: Path | str | None = None):
        self.path = Path(path) if path is not None else None
        self.message = f"{self.path}: {message}" if self.path is not None else message
        super().__init__(self.message)


class OutOfMemory(HeygemdError):
    """The accelerator ran out of memory even for the smallest batch."""

    code = "OUT_OF_MEMORY"
    default_hint = (
        "The GPU ran out of memory even one frame at a time; stop other programs using the GPU, "
        'or set engine.device = "cpu".'
    )


class JobNotFound(HeygemdError):
    """A job asked for by id (``heygemd cancel``, the API) that is in neither the inbox, the claims nor the outbox."""

    code = "NO_SUCH_JOB"
    default_hint = "Check the job's id: `heygemd status` (or the dashboard's job list) shows every job."


class AlreadyFinished(HeygemdError):
    """A cancel (or a priority change) asked for a job that has already finished: nothing is left to stop."""

    code = "ALREADY_DONE"
    default_hint = "Nothing is left to do for it; delete the job if its results are not wanted."


class CancelRefused(HeygemdError):
    """A job waiting in the inbox could not be taken out of it to be cancelled (its folder refused the rename)."""

    code = "CANCEL_REFUSED"
    default_hint = (
        "A file in the job folder is still open (a copy in progress?); cancel again once the copy has finished, "
        "or remove the folder from the inbox yourself."
    )


class JobBusy(HeygemdError):
    """A retry or a delete of a job that has not finished."""

    code = "JOB_BUSY"
    default_hint = (
        "The job is queued or rendering; wait until it is done, partial, failed or cancelled (or cancel it first)."
    )


class JobChanged(HeygemdError):
    """Another request deleted the job while a retry copied its inputs or a delete moved it: nothing was done."""

    code = "JOB_CHANGED"
    default_hint = "Another request deleted the job (or its archived inputs expired) meanwhile; look at the jobs again."


class NothingToRetry(HeygemdError):
    """A retry of a job none of whose videos failed or was cancelled."""

    code = "NOTHING_TO_RETRY"
    default_hint = "Only failed or cancelled videos are retried; this job has none."


class InputsGone(HeygemdError):
    """A retry of a job whose inputs are no longer in the archive."""

    code = "INPUTS_GONE"
    default_hint = (
        'The job\'s inputs are no longer archived (outbox.inputs_after = "delete", or older than '
        "outbox.archive_retention_days); submit the files again."
    )


class BadStatus(HeygemdError):
    """A job's status.json that is not readable as heygemd's."""

    code = "BAD_STATUS"
    default_hint = "The job's status.json is not readable as a heygemd status file; look at it on the outbox share."


class OutgoingRefused(HeygemdError):
    """A request heygemd would make to another server (a callback, a URL input) to a host or address the operator
    has not allowed (:mod:`heygemd.hosts`); the subclasses name the setting that allows it."""

    code = "NOT_ALLOWED"


class CallbackNotAllowed(OutgoingRefused):
    code = "CALLBACK_NOT_ALLOWED"
    default_hint = (
        "Use a callback URL on a host the server's [notify] callback_hosts lists, or ask its operator to add the "
        "host (or its network, e.g. 10.0.0.0/8) there; poll the job's status instead meanwhile."
    )


class FetchNotAllowed(OutgoingRefused):
    code = "FETCH_NOT_ALLOWED"
    default_hint = (
        "Give URLs on a host the server's [web] fetch_hosts lists, or ask its operator to add the host (or its "
        "network) there; or upload the file itself."
    )


class FetchFailed(HeygemdError):
    """A URL input that could not be downloaded (unreachable, an error answer, too many redirects)."""

    code = "FETCH_FAILED"
    default_hint = "Check that the URL works (it may have expired) and submit the job again; or upload the file itself."


class IdempotencyMismatch(HeygemdError):
    """An ``Idempotency-Key`` used again within its lifetime for a different request."""

    code = "IDEMPOTENCY_MISMATCH"
    default_hint = (
        "An Idempotency-Key stands for one request: send the same request again with it, or use a new key for a "
        "new request."
    )


class IdempotencyBusy(HeygemdError):
    """The request that first used an ``Idempotency-Key`` is still being handled."""

    code = "IDEMPOTENCY_BUSY"
    default_hint = "Send the same request again in a minute: it then answers what the first one did."


class BadIdempotencyKey(HeygemdError):
    code = "BAD_IDEMPOTENCY_KEY"
    default_hint = "An Idempotency-Key is 1 to 255 printable ASCII characters, e.g. a UUID."


class NoSuchPresenter(HeygemdError):
    """A presenter named (job.toml ``presenters``, the API, the CLI) that is not in the presenter library."""

    code = "NO_SUCH_PRESENTER"
    default_hint = (
        "Name a presenter of the library (`heygemd presenters` or the Presenters page lists them), or copy its "
        "video into the library first (`heygemd presenters add FILE`)."
    )


class PresenterChanged(HeygemdError):
    """A library presenter's file overwritten in place (the same file truncated and written again) after a job took
    it: the job's hard link to it changed too, so its video is not rendered from it."""

    code = "PRESENTER_CHANGED"
    default_hint = (
        "Replace a presenter by copying the new file under another name and renaming it over the old one (or delete "
        "the old one, then copy): a file overwritten in place also changes the jobs that already took it. Then retry "
        "the job (`heygemd retry` with its id, or the Retry button of its page): the retry takes the presenter as "
        "the library holds it then."
    )


class PresenterBusy(HeygemdError):
    """A presenter removed while a queued or running job names it."""

    code = "PRESENTER_BUSY"
    default_hint = "Wait until the jobs that name it have finished (or cancel them), then remove it."


class PresenterExists(HeygemdError):
    """A presenter added under a name the library already has."""

    code = "PRESENTER_EXISTS"
    default_hint = "Choose another name, or remove the presenter of that name first."


class AmbiguousPresenter(HeygemdError):
    """Two files of the library make the same presenter name (anna.mp4 and anna.mov)."""

    code = "PRESENTER_AMBIGUOUS"
    default_hint = "Keep one file per presenter name in the library: remove or rename the others."


class BadPresenterOptions(HeygemdError):
    """A library presenter's ``<name>.toml`` that cannot be read as its options."""

    code = "BAD_PRESENTER_TOML"
    default_hint = (
        'A presenter\'s toml holds display_name, face ("largest", "left", "right", "centre"), loop_mode, engine and '
        "notes, each optional; fix or remove it."
    )
