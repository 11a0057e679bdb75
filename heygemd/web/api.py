"""The HTTP API under /api: submit, list, read, download, cancel, retry, delete, health, events.

Routes only translate HTTP to the functions below (``upload`` to receive a job into a staging folder,
``heygemd.control`` to submit, cancel, retry and delete, ``catalog`` to read) and back; errors are raised as typed
errors and answered as JSON by the app.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from heygemd import __version__
from heygemd.control import Control
from heygemd.daemon.jobs import JobOptions
from heygemd.daemon.status import JobStatus
from heygemd.errors import HeygemdError, JobNotFound, NoSuchPresenter
from heygemd.names import is_audio
from heygemd.settings import Settings
from heygemd.web.auth import client_address
from heygemd.web.catalog import Catalog
from heygemd.web.events import event_stream
from heygemd.web.problems import NotFound, Problem, UnknownPresenter
from heygemd.web.upload import Limits, MultipartJob, Received, feed_body, job_name, options_schema
from heygemd.web.zipstream import stream_zip

log = structlog.get_logger("heygemd.web")

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["audio"],
                    "properties": {
                        "audio": {
                            "type": "string",
                            "format": "binary",
                            "description": "The speech (wav, mp3, m4a, ...).",
                        },
                        "videos": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "Presenter videos or still photos; repeat the field for each file.",
                        },
                        "presenters": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "Presenters of the library (GET /api/presenters) to render, besides or "
                            "instead of videos; repeat the field for each, or give 'all'.",
                        },
                        "name": {"type": "string", "description": "Job name (default: the audio's name)."},
                        **options_schema(),
                    },
                }
            }
        },
    }
}
ERROR_ANSWERS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem} for code in (400, 401, 403, 404, 409, 410, 413, 507)
}


class Submitted(BaseModel):
    """A job written into the inbox: its id (the outbox folder it will get) and where to poll it."""

    job_id: str
    status_url: str

    @classmethod
    def of(cls, job_id: str) -> "Submitted":
        return cls(job_id=job_id, status_url=f"/api/jobs/{urllib.parse.quote(job_id, safe='')}")


class JobPage(BaseModel):
    """One page of the job list, newest first."""

    jobs: list[JobStatus]
    page: int
    page_size: int
    pages: int
    total: int


class Health(BaseModel):
    status: str
    version: str
    engine: str
    busy: bool
    current: str | None
    queued: int


class Deleted(BaseModel):
    deleted: str


class Cancelled(BaseModel):
    """A cancel: ``cancelled`` at once (the job had not started; ``job_id`` is the id it was finished under), or
    ``cancelling`` (the worker stops it at its next batch; its status then says ``cancelled``)."""

    job_id: str
    state: Literal["cancelled", "cancelling"]
    status_url: str


def content_disposition(kind: str, filename: str) -> str:
    """``kind`` (inline or attachment) with ``filename`` for every browser: an ASCII stand-in (``_`` for other
    characters, quotes and backslashes) and the exact name as UTF-8 (RFC 6266)."""
    plain = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    return f"{kind}; filename=\"{plain}\"; filename*=UTF-8''{urllib.parse.quote(filename, safe='')}"


def pages_of(total: int, page_size: int) -> int:
    return max(1, math.ceil(total / page_size))


def api_router(settings: Settings, catalog: Catalog, control: Control, guard: Callable[..., object]) -> APIRouter:
    web = settings.web
    limits = Limits.from_settings(web)
    api = APIRouter(prefix="/api", dependencies=[Depends(guard)], responses=ERROR_ANSWERS)

    @api.get("/health", summary="Is the server up; the active engine and whether the worker is busy")
    def health() -> Health:
        m = catalog.machine()
        return Health(
            status="ok", version=__version__, engine=m.engine, busy=m.busy, current=m.current, queued=m.queued
        )

    @api.get("/jobs", summary="Every job, newest first, one page at a time")
    def list_jobs(page: Annotated[int, Query(ge=1)] = 1) -> JobPage:
        jobs, total = catalog.page(page, web.page_size)
        return JobPage(jobs=jobs, page=page, page_size=web.page_size, total=total, pages=pages_of(total, web.page_size))

    @api.post(
        "/jobs",
        status_code=201,
        summary="Submit a job: one audio, one or more videos, options",
        openapi_extra=UPLOAD_BODY,
    )
    async def submit(request: Request) -> Submitted:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limits.max_body_bytes:
            raise limits.too_large(int(length))
        staging = await run_in_threadpool(control.staging)
        receiver: MultipartJob | None = None
        try:
            receiver = MultipartJob(staging, limits, request.headers.get("content-type"))
            await feed_body(request, receiver)
            received, options = receiver.finish()
            job_id = await run_in_threadpool(complete, staging, received, options)
        except BaseException as exc:
            if receiver is not None:
                receiver.close()
            await run_in_threadpool(control.discard, staging)
            if isinstance(exc, HeygemdError):
                log.warning("web.upload_refused", code=exc.code, error=exc.message)
            raise
        log.info(
            "web.job_submitted",
            job_id=job_id,
            audio=received.audio[0],
            videos=received.videos,
            presenters=received.presenters,
        )
        return Submitted.of(job_id)

    def complete(staging: Path, received: Received, options: JobOptions) -> str:
        """The job's name and options, then into the inbox (job.toml, the ready marker last, one rename)."""
        if isinstance(options.presenters, list):  # each must be in the library now (it may leave before the claim)
            try:
                control.require_presenters(options.presenters)
            except NoSuchPresenter as exc:
                raise UnknownPresenter(exc.message) from None
        name = job_name(received.fields.get("name", ""), received.audio[0])
        if not is_audio(Path(received.audio[0])):  # a video given as the audio: job.toml names it (upload.py)
            options = options.model_copy(update={"audio": received.audio[0]})
        return control.submit(staging, name=name, options=options)

    @api.get("/jobs/{job_id}", summary="One job: its status.json document")
    def get_job(job_id: str) -> JobStatus:
        return catalog.status(job_id)

    @api.head("/jobs/{job_id}/files/{name}", summary="The headers of GET on the file, no body")
    @api.get(
        "/jobs/{job_id}/files/{name}",
        summary="One file of the job's outbox folder (an output, a poster, job.log, status.json), named "
        "'<job> - <file>' for the browser",
        response_class=FileResponse,
    )
    def get_file(job_id: str, name: str, download: bool = False) -> FileResponse:
        path = catalog.file(job_id, name)
        kind = "attachment" if download else "inline"
        return FileResponse(path, headers={"Content-Disposition": content_disposition(kind, f"{job_id} - {name}")})

    @api.head("/jobs/{job_id}/outputs.zip", summary="The headers of GET on the ZIP, no body")
    @api.get(
        "/jobs/{job_id}/outputs.zip",
        summary="Every file of the job's outbox folder as one ZIP (streamed)",
        response_class=StreamingResponse,
    )
    def get_zip(job_id: str, request: Request) -> StreamingResponse:
        files = catalog.files(job_id)
        return StreamingResponse(
            stream_zip(files) if request.method == "GET" else iter(()),
            media_type="application/zip",
            headers={"Content-Disposition": content_disposition("attachment", f"{job_id}.zip")},
        )

    @api.post(
        "/jobs/{job_id}/cancel",
        status_code=202,
        summary="Cancel a job: a waiting one never starts, a rendering one stops at its next batch",
    )
    def cancel(job_id: str, request: Request) -> Cancelled:
        answer = control.cancel(job_id, by=f"web {client_address(request)}")
        log.info("web.job_cancelled", job_id=answer.job_id, state=answer.state)
        return Cancelled(job_id=answer.job_id, state=answer.state, status_url=Submitted.of(answer.job_id).status_url)

    @api.post(
        "/jobs/{job_id}/retry",
        status_code=201,
        summary="Submit the job's failed or cancelled videos again, as a new job",
    )
    def retry(job_id: str) -> Submitted:
        try:
            new_id = control.retry(job_id)
        except JobNotFound as exc:
            raise NotFound(exc.message) from None
        log.info("web.job_retried", job_id=job_id, new_job_id=new_id)
        return Submitted.of(new_id)

    @api.delete("/jobs/{job_id}", summary="Delete a finished job: its outbox folder and archived inputs")
    def delete(job_id: str) -> Deleted:
        try:
            control.delete(job_id)
        except JobNotFound as exc:
            raise NotFound(exc.message) from None
        log.info("web.job_deleted", job_id=job_id)
        return Deleted(deleted=job_id)

    @api.get(
        "/events",
        summary="Server-Sent Events: 'job' (a status document), 'removed', 'machine'",
        response_class=StreamingResponse,
    )
    async def events(request: Request, job: str | None = None) -> StreamingResponse:
        return StreamingResponse(
            event_stream(catalog, job, request.is_disconnected),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return api
