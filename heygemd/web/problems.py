"""Errors the web layer answers with: an HTTP status plus the code/message/hint of status.json's errors."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from heygemd.errors import (
    AlreadyFinished,
    BadIdempotencyKey,
    CancelRefused,
    DiskFull,
    EngineNotInstalled,
    FetchFailed,
    HeygemdError,
    IdempotencyBusy,
    IdempotencyMismatch,
    InputsGone,
    JobBusy,
    JobChanged,
    JobError,
    JobNotFound,
    NoSuchPresenter,
    NothingToRetry,
    NoVideoStream,
    OutgoingRefused,
    PresenterBusy,
    PresenterExists,
)


class Problem(BaseModel):
    """The JSON body of every error answer: the same fields as an error in status.json."""

    code: str
    message: str
    hint: str = ""


class WebError(HeygemdError):
    """A request the web server refuses; ``status`` is the HTTP status code, ``headers`` go with the answer."""

    status: ClassVar[int] = 400

    @property
    def headers(self) -> dict[str, str]:
        return {}


class Unauthorized(WebError):
    code = "UNAUTHORIZED"
    status = 401
    default_hint = "Send the token as 'Authorization: Bearer <token>' (web.token / HEYGEMD_WEB__TOKEN), or log in."

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class TooManyFailures(WebError):
    code = "TOO_MANY_FAILURES"
    status = 429
    default_hint = (
        "Wait the time the Retry-After header gives, then send the right secret: an account's password or API key, or "
        "web.token where the server has one."
    )

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class CrossSite(WebError):
    code = "CROSS_SITE"
    status = 403
    default_hint = "State-changing requests must come from the dashboard's own pages, or carry the bearer token."


class ForbiddenRole(WebError):
    """A request its account's role does not allow."""

    code = "FORBIDDEN_ROLE"
    status = 403
    default_hint = "Ask an admin for an account with that role (heygemd users role NAME ROLE), or use one that has it."


class WrongHost(WebError):
    code = "WRONG_HOST"
    status = 421
    default_hint = (
        "Without web.token the server answers only to this machine's own names: open it as http://127.0.0.1:<port>/ "
        "or http://localhost:<port>/, or set web.token to serve it under another name (a reverse proxy)."
    )


class NotFound(WebError):
    code = "NOT_FOUND"
    status = 404
    default_hint = "Check the job id (GET /api/jobs lists them) and the file name (listed in the job's status)."


class BadUpload(WebError):
    code = "BAD_UPLOAD"
    status = 400
    default_hint = (
        "Send multipart/form-data with one 'audio' file (wav, mp3, m4a, flac, ogg, ...) and one or more "
        "'videos' files (mp4, mov, mkv, webm, ... or jpg/png photos); optional fields: name, engine, loop_mode, crf, "
        "latentsync_steps, latentsync_guidance."
    )


class UnknownPresenter(WebError):
    """A job submitted naming a presenter the library does not have (``NoSuchPresenter``, answered 400 here: the
    request is what is wrong, not the address)."""

    code = "NO_SUCH_PRESENTER"
    status = 400
    default_hint = NoSuchPresenter.default_hint


class TooLarge(WebError):
    code = "UPLOAD_TOO_LARGE"
    status = 413
    default_hint = "Upload fewer or smaller files, or raise web.max_file_mb / web.max_files / web.max_total_mb."


def http_status(exc: HeygemdError) -> int:
    """The HTTP status for an error: the WebError's own, 507 for a full disk, 404 for an unknown job, 409 for a
    cancel of a job that has already finished or cannot be taken out of the inbox yet and for a retry or delete of a
    job that is busy, changed meanwhile or has nothing to retry, 410 for a retry whose inputs are gone, 400 for a
    callback or input URL not allowed, a malformed Idempotency-Key and an engine no renderer can run, 502 for an
    input URL that could not be fetched, 409 for an Idempotency-Key used for another request or still in progress
    and for a retry whose archived job.toml cannot be read, 404 for an unknown library presenter, 409 for one
    removed while a job names it or added under a name taken, 400 for a file that is no video or photo, else 500."""
    if isinstance(exc, WebError):
        return exc.status
    if isinstance(exc, (OutgoingRefused, BadIdempotencyKey, EngineNotInstalled)):
        return 400
    if isinstance(exc, FetchFailed):
        return 502
    if isinstance(exc, (IdempotencyMismatch, IdempotencyBusy)):
        return 409
    if isinstance(exc, DiskFull):
        return 507
    if isinstance(exc, (JobNotFound, NoSuchPresenter)):
        return 404
    if isinstance(exc, (AlreadyFinished, CancelRefused, JobBusy, JobChanged, NothingToRetry, JobError)):
        return 409
    if isinstance(exc, (PresenterBusy, PresenterExists)):
        return 409
    if isinstance(exc, NoVideoStream):
        return 400
    if isinstance(exc, InputsGone):
        return 410
    return 500


def problem(exc: HeygemdError) -> Problem:
    return Problem(code=exc.code, message=exc.message, hint=exc.hint)
