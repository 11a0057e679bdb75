"""The HTTP API under /api: submit, list, read, download, cancel, retry, delete, health, events.

Routes only translate HTTP to the functions below (``upload`` to receive a job into a staging folder,
``heygemd.control`` to submit, cancel, retry and delete, ``catalog`` to read) and back; errors are raised as typed
errors and answered as JSON by the app.
"""

from __future__ import annotations

import math
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from heygemd import __version__
from heygemd.control import Control
from heygemd.daemon.jobs import JobOptions
from heygemd.daemon.status import JobStatus
from heygemd.errors import HeygemdError, JobNotFound
from heygemd.idempotency import Claim, IdempotencyStore, Replay, check_key
from heygemd.names import is_audio
from heygemd.settings import Settings
from heygemd.web.auth import client_address
from heygemd.web.catalog import Catalog
from heygemd.web.events import event_stream
from heygemd.web.fetch import UrlInputs
from heygemd.web.openapi import IDEMPOTENCY_KEY, SUBMIT_BODY, operation
from heygemd.web.problems import NotFound, Problem, TooLarge, WebError
from heygemd.web.submission import MAX_BODY_BYTES, URL_BODIES, URL_HINT, fingerprint, parse_url_job
from heygemd.web.upload import Limits, MultipartJob, Received, job_name
from heygemd.web.zipstream import stream_zip

log = structlog.get_logger("heygemd.web")

PRUNE_KEYS_S = 3600.0
"""Expired Idempotency-Keys are removed from the state folder at most this often (on a submission with a key)."""
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


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, at most ``limit`` bytes (TooLarge beyond, once the rest has been read: the client then
    sees the answer)."""
    body = bytearray()
    over = False
    async for chunk in request.stream():
        over = over or len(body) + len(chunk) > limit
        if not over:
            body += chunk
    if over:
        raise TooLarge(f"the request body is larger than {limit // 1024} KiB", hint=URL_HINT)
    return bytes(body)


def api_router(settings: Settings, catalog: Catalog, control: Control, guard: Callable[..., object]) -> APIRouter:
    web = settings.web
    limits = Limits.from_settings(web)
    keys = IdempotencyStore(settings.paths.state_dir)
    api = APIRouter(prefix="/api", dependencies=[Depends(guard)], responses=ERROR_ANSWERS)

    @api.get("/health", **operation("getHealth"))
    def health() -> Health:
        m = catalog.machine()
        return Health(
            status="ok", version=__version__, engine=m.engine, busy=m.busy, current=m.current, queued=m.queued
        )

    @api.get("/jobs", **operation("listJobs"))
    def list_jobs(page: Annotated[int, Query(ge=1)] = 1) -> JobPage:
        jobs, total = catalog.page(page, web.page_size)
        return JobPage(jobs=jobs, page=page, page_size=web.page_size, total=total, pages=pages_of(total, web.page_size))

    @api.post(
        "/jobs",
        status_code=201,
        response_model=Submitted,
        openapi_extra={"requestBody": SUBMIT_BODY},
        **operation("submitJob"),
    )
    async def submit(
        request: Request, idempotency_key: Annotated[str, Header(alias="Idempotency-Key", **IDEMPOTENCY_KEY)] = ""
    ) -> Any:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limits.max_body_bytes:
            raise limits.too_large(int(length))
        key = idempotency_key.strip() or None  # a tool that leaves the header empty sends no key
        if key is not None:
            check_key(key)
        kind = request.headers.get("content-type", "").partition(";")[0].strip().casefold()
        staging = await run_in_threadpool(control.staging)
        receiver: MultipartJob | None = None
        claim: Claim | None = None
        try:
            if kind in URL_BODIES:
                received, options = parse_url_job(kind, await read_body(request, MAX_BODY_BYTES))
            else:
                receiver = MultipartJob(staging, limits, request.headers.get("content-type"), digests=key is not None)
                stream = request.stream()
                try:
                    async for chunk in stream:
                        if chunk:
                            await run_in_threadpool(receiver.feed, chunk)
                except WebError:
                    async for _ in stream:  # read the rest so the client sees the answer, store nothing
                        pass
                    raise
                received, options = receiver.finish()
            control.check(options)
            if key is not None:
                began = await run_in_threadpool(keys.begin, key, fingerprint(received, options))
                if isinstance(began, Replay):
                    await run_in_threadpool(control.discard, staging)
                    log.info("web.job_replayed", job_id=began.answer.get("job_id"))
                    return JSONResponse(began.answer, status_code=200)
                claim = began
            await run_in_threadpool(fetch_urls, staging, received)
            job_id = await run_in_threadpool(complete, staging, received, options)
        except BaseException as exc:
            if receiver is not None:
                receiver.close()
            if claim is not None:
                await run_in_threadpool(keys.release, claim)
            await run_in_threadpool(control.discard, staging)
            if isinstance(exc, HeygemdError):
                log.warning("web.upload_refused", code=exc.code, error=exc.message)
            raise
        answer = Submitted.of(job_id)
        if claim is not None:
            try:
                await run_in_threadpool(keys.finish, claim, answer.model_dump())
                await run_in_threadpool(prune_keys)
            except OSError as exc:  # the job is queued: answered; its key stays busy until its lease ends (1 h)
                log.error("web.idempotency_not_recorded", job_id=job_id, error=f"{exc.filename}: {exc.strerror}")
        log.info("web.job_submitted", job_id=job_id, audio=received.audio[0], videos=received.videos)
        return answer

    def fetch_urls(staging: Path, received: Received) -> None:
        """Download the inputs given by URL into the staging folder, next to the uploaded ones (every URL's host
        checked before anything is downloaded)."""
        audio = [("audio_url", received.audio_url)] if received.audio_url else []
        videos = [(f"video_urls[{i}]", url) for i, url in enumerate(received.video_urls)]
        if not audio and not videos:
            return
        fetcher = UrlInputs(staging, web, uploaded=received)
        for field, url in [*audio, *videos]:
            fetcher.check(url, field)
        for field, url in audio:
            received.audio.append(fetcher.fetch(url, "audio", field))
        for field, url in videos:
            received.videos.append(fetcher.fetch(url, "presenter", field))

    next_prune = [0.0]

    def prune_keys() -> None:
        """Remove the expired Idempotency-Keys, at most once every PRUNE_KEYS_S."""
        if time.monotonic() >= next_prune[0]:
            next_prune[0] = time.monotonic() + PRUNE_KEYS_S
            keys.prune()

    def complete(staging: Path, received: Received, options: JobOptions) -> str:
        """The job's name and options, then into the inbox (job.toml, the ready marker last, one rename)."""
        name = job_name(received.fields.get("name", ""), received.audio[0])
        if not is_audio(Path(received.audio[0])):  # a video given as the audio: job.toml names it (upload.py)
            options = options.model_copy(update={"audio": received.audio[0]})
        return control.submit(staging, name=name, options=options)

    @api.get("/jobs/{job_id}", **operation("getJob"))
    def get_job(job_id: str) -> JobStatus:
        return catalog.status(job_id)

    @api.head("/jobs/{job_id}/files/{name}", **operation("headJobFile"))
    @api.get("/jobs/{job_id}/files/{name}", response_class=FileResponse, **operation("getJobFile"))
    def get_file(job_id: str, name: str, download: bool = False) -> FileResponse:
        path = catalog.file(job_id, name)
        kind = "attachment" if download else "inline"
        return FileResponse(path, headers={"Content-Disposition": content_disposition(kind, f"{job_id} - {name}")})

    @api.head("/jobs/{job_id}/outputs.zip", **operation("headJobOutputsZip"))
    @api.get("/jobs/{job_id}/outputs.zip", response_class=StreamingResponse, **operation("getJobOutputsZip"))
    def get_zip(job_id: str, request: Request) -> StreamingResponse:
        files = catalog.files(job_id)
        return StreamingResponse(
            stream_zip(files) if request.method == "GET" else iter(()),
            media_type="application/zip",
            headers={"Content-Disposition": content_disposition("attachment", f"{job_id}.zip")},
        )

    @api.post("/jobs/{job_id}/cancel", status_code=202, **operation("cancelJob"))
    def cancel(job_id: str, request: Request) -> Cancelled:
        answer = control.cancel(job_id, by=f"web {client_address(request)}")
        log.info("web.job_cancelled", job_id=answer.job_id, state=answer.state)
        return Cancelled(job_id=answer.job_id, state=answer.state, status_url=Submitted.of(answer.job_id).status_url)

    @api.post("/jobs/{job_id}/retry", status_code=201, **operation("retryJob"))
    def retry(job_id: str) -> Submitted:
        try:
            new_id = control.retry(job_id)
        except JobNotFound as exc:
            raise NotFound(exc.message) from None
        log.info("web.job_retried", job_id=job_id, new_job_id=new_id)
        return Submitted.of(new_id)

    @api.delete("/jobs/{job_id}", **operation("deleteJob"))
    def delete(job_id: str) -> Deleted:
        try:
            control.delete(job_id)
        except JobNotFound as exc:
            raise NotFound(exc.message) from None
        log.info("web.job_deleted", job_id=job_id)
        return Deleted(deleted=job_id)

    @api.get("/events", response_class=StreamingResponse, **operation("streamEvents"))
    async def events(request: Request, job: str | None = None) -> StreamingResponse:
        return StreamingResponse(
            event_stream(catalog, job, request.is_disconnected),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return api
