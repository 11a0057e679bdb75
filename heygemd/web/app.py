"""The FastAPI application: the HTTP API under /api, the server-rendered pages, static files from the package.

Every request passes the token gate (``auth``); state-changing ones also the same-origin check. Errors are
answered as JSON ``{code, message, hint}`` (the API) or an error page (the pages).
"""

from __future__ import annotations

import math
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from heygemd import __version__
from heygemd.daemon.status import JobStatus
from heygemd.errors import HeygemdError
from heygemd.settings import Settings
from heygemd.web import actions
from heygemd.web.auth import COOKIE, Gate, Via, check_same_origin
from heygemd.web.catalog import Catalog
from heygemd.web.events import event_stream
from heygemd.web.problems import Problem, TooLarge, Unauthorized, WebError, http_status, problem
from heygemd.web.staging import clean_stale, discard, disk_full, is_disk_full, mark_ready, new_staging, publish, \
    safe_basename
from heygemd.web.upload import MULTIPART_OVERHEAD, Limits, MultipartJob, Received, job_toml

STATIC = Path(__file__).with_name("static")
log = structlog.get_logger("heygemd.web")

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["audio", "videos"],
            "properties": {
                "audio": {"type": "string", "format": "binary", "description": "The speech (wav, mp3, m4a, ...)."},
                "videos": {"type": "array", "items": {"type": "string", "format": "binary"},
                           "description": "Presenter videos or still photos; repeat the field for each file."},
                "name": {"type": "string", "description": "Job name (default: the audio's name)."},
                "engine": {"type": "string", "enum": ["auto", "wav2lip", "mouthwarp"]},
                "loop_mode": {"type": "string", "enum": ["pingpong", "loop"]},
                "crf": {"type": "integer", "minimum": 0, "maximum": 51},
            },
        }}},
    }
}


class Submitted(BaseModel):
    """A job written into the inbox: its id (the outbox folder it will get) and where to poll it."""

    job_id: str
    status_url: str


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


class LoginNeeded(Exception):
    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


def _errors() -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Problem} for code in (400, 401, 403, 404, 409, 410, 413, 507)}


def create_app(settings: Settings) -> FastAPI:
    """The application for ``settings`` (paths, web limits and token)."""
    web = settings.web
    gate = Gate(web.token)
    catalog = Catalog(settings)
    limits = Limits.from_settings(web)
    state = settings.paths.state_dir
    clean_stale(state)
    actions.empty_outbox_trash(settings.paths.outbox)

    app = FastAPI(title="heygemd", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                  description="Lip-sync jobs over HTTP: submit one audio and presenter videos, poll the status, "
                  "download the results. Authenticate with 'Authorization: Bearer <web.token>'.")
    env = Environment(loader=PackageLoader("heygemd.web", "templates"), autoescape=select_autoescape())
    env.filters["percent"] = lambda f: f"{(f or 0) * 100:.0f}%"
    env.filters["age"] = _age
    env.filters["when"] = lambda ts: ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "-"
    env.filters["quote"] = lambda s: urllib.parse.quote(s, safe="")

    # -- guards

    def admit(request: Request) -> Via:
        return gate.admit(request.headers.get("authorization"), request.cookies.get(COOKIE))

    def same_origin(request: Request, via: Via) -> None:
        check_same_origin(request.method, via, request.headers.get("host"), request.headers.get("origin"),
                          request.headers.get("referer"))

    def api_guard(request: Request) -> Via:
        via = admit(request)
        same_origin(request, via)
        return via

    def page_guard(request: Request) -> Via:
        try:
            via = admit(request)
        except Unauthorized:
            raise LoginNeeded(request.url.path + (f"?{request.url.query}" if request.url.query else "")) from None
        same_origin(request, via)
        return via

    def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(template).render(
            request=request, machine=catalog.machine(), token_required=gate.required, **context)
        return HTMLResponse(html, status_code=status_code)

    # -- error answers

    @app.exception_handler(HeygemdError)
    async def on_error(request: Request, exc: HeygemdError) -> Response:
        status = http_status(exc)
        if request.url.path.startswith("/api/") or request.url.path == "/openapi.json":
            headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
            return JSONResponse(problem(exc).model_dump(), status_code=status, headers=headers)
        return render(request, "error.html", status_code=status, error=problem(exc))

    @app.exception_handler(LoginNeeded)
    async def on_login_needed(request: Request, exc: LoginNeeded) -> Response:
        return RedirectResponse(f"/login?next={urllib.parse.quote(exc.next_url, safe='')}", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        body = Problem(code="NOT_FOUND" if exc.status_code == 404 else f"HTTP_{exc.status_code}",
                       message=str(exc.detail), hint="See /docs for the API's paths.")
        return JSONResponse(body.model_dump(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        body = Problem(code="BAD_REQUEST", message=problems, hint="See /docs for the parameters.")
        return JSONResponse(body.model_dump(), status_code=400)

    # -- API

    api = APIRouter(prefix="/api", dependencies=[Depends(api_guard)], responses=_errors())

    @api.get("/health", summary="Is the server up; the active engine and whether the worker is busy")
    def health() -> Health:
        m = catalog.machine()
        return Health(status="ok", version=__version__, engine=m.engine, busy=m.busy, current=m.current,
                      queued=m.queued)

    @api.get("/jobs", summary="Every job, newest first, one page at a time")
    def list_jobs(page: Annotated[int, Query(ge=1)] = 1) -> JobPage:
        jobs, total = catalog.page(page, web.page_size)
        return JobPage(jobs=jobs, page=page, page_size=web.page_size, total=total,
                       pages=max(1, math.ceil(total / web.page_size)))

    @api.post("/jobs", status_code=201, summary="Submit a job: one audio, one or more videos, options",
              openapi_extra=UPLOAD_BODY)
    async def submit(request: Request) -> Submitted:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limits.max_total_bytes + MULTIPART_OVERHEAD:
            raise TooLarge(f"the upload ({int(length) / 2**20:.0f} MiB) is larger than web.max_total_mb = "
                           f"{web.max_total_mb:g} MiB")
        staging = await run_in_threadpool(new_staging, state)
        receiver: MultipartJob | None = None
        try:
            receiver = MultipartJob(staging, limits, request.headers.get("content-type"))
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
            job_id = await run_in_threadpool(complete, staging, received, options)
        except BaseException as exc:
            if receiver is not None:
                receiver.close()
            await run_in_threadpool(discard, staging)
            if isinstance(exc, HeygemdError):
                log.warning("web.upload_refused", code=exc.code, error=exc.message)
            raise
        log.info("web.job_submitted", job_id=job_id, audio=received.audio[0], videos=received.videos)
        return Submitted(job_id=job_id, status_url=f"/api/jobs/{urllib.parse.quote(job_id, safe='')}")

    def complete(staging: Path, received: Received, options: Any) -> str:
        name = safe_basename(received.fields.get("name", "")) or safe_basename(Path(received.audio[0]).stem)
        try:
            if text := job_toml(options):
                (staging / "job.toml").write_text(text, encoding="utf-8")
            mark_ready(staging, settings.intake.ready_marker)
            return publish(staging, name=name or "job", inbox=settings.paths.inbox, outbox=settings.paths.outbox,
                           state_dir=state)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(f"job {name!r}") from None
            raise

    @api.get("/jobs/{job_id}", summary="One job: its status.json document")
    def get_job(job_id: str) -> JobStatus:
        return catalog.status(job_id)

    @api.get("/jobs/{job_id}/files/{name}", summary="One file of the job's outbox folder (an output, a poster, "
             "job.log, status.json)", response_class=FileResponse)
    def get_file(job_id: str, name: str, download: bool = False) -> FileResponse:
        path = catalog.file(job_id, name)
        return FileResponse(path, filename=name if download else None,
                            content_disposition_type="attachment" if download else "inline")

    @api.get("/jobs/{job_id}/outputs.zip", summary="Every file of the job's outbox folder as one ZIP (streamed)",
             response_class=StreamingResponse)
    def get_zip(job_id: str) -> StreamingResponse:
        files = catalog.files(job_id)
        from heygemd.web.zipstream import stream_zip

        quoted = urllib.parse.quote(f"{job_id}.zip", safe="")
        return StreamingResponse(stream_zip(files), media_type="application/zip",
                                 headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quoted}"})

    @api.post("/jobs/{job_id}/retry", status_code=201, summary="Submit the job's failed videos again, as a new job")
    def retry(job_id: str) -> Submitted:
        new_id = actions.retry(settings, catalog, job_id)
        log.info("web.job_retried", job_id=job_id, new_job_id=new_id)
        return Submitted(job_id=new_id, status_url=f"/api/jobs/{urllib.parse.quote(new_id, safe='')}")

    @api.delete("/jobs/{job_id}", summary="Delete a finished job: its outbox folder and archived inputs")
    def delete(job_id: str) -> Deleted:
        actions.delete(settings, catalog, job_id)
        log.info("web.job_deleted", job_id=job_id)
        return Deleted(deleted=job_id)

    @api.get("/events", summary="Server-Sent Events: 'job' (a status document), 'removed', 'machine'",
             response_class=StreamingResponse)
    async def events(request: Request, job: str | None = None) -> StreamingResponse:
        return StreamingResponse(event_stream(catalog, job, request.is_disconnected), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    app.include_router(api)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(api_guard)])
    def openapi() -> dict[str, Any]:
        return app.openapi()

    # -- pages

    @app.get("/login", include_in_schema=False, response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> HTMLResponse:
        return render(request, "login.html", next=_local(next), failed=False)

    @app.post("/login", include_in_schema=False)
    def login(request: Request, token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/") -> Response:
        same_origin(request, Via.OPEN)
        if not gate.required:
            return RedirectResponse(_local(next), status_code=303)
        if not gate.token_matches(token):
            return render(request, "login.html", status_code=401, next=_local(next), failed=True)
        response = RedirectResponse(_local(next), status_code=303)
        response.set_cookie(COOKIE, gate.session_value(), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, via: Annotated[Via, Depends(page_guard)]) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/", include_in_schema=False, response_class=HTMLResponse, dependencies=[Depends(page_guard)])
    def jobs_page(request: Request, page: Annotated[int, Query(ge=1)] = 1) -> HTMLResponse:
        jobs, total = catalog.page(page, web.page_size)
        pages = max(1, math.ceil(total / web.page_size))
        return render(request, "jobs.html", jobs=jobs, page=page, pages=pages, total=total, now=_now())

    @app.get("/jobs/{job_id}", include_in_schema=False, response_class=HTMLResponse,
             dependencies=[Depends(page_guard)])
    def job_page(request: Request, job_id: str) -> HTMLResponse:
        status = catalog.status(job_id)
        return render(request, "job.html", job=status, log=catalog.log_text(job_id), now=_now())

    @app.get("/new", include_in_schema=False, response_class=HTMLResponse, dependencies=[Depends(page_guard)])
    def new_page(request: Request) -> HTMLResponse:
        return render(request, "new.html", limits=web)

    @app.get("/docs", include_in_schema=False, response_class=HTMLResponse, dependencies=[Depends(page_guard)])
    def docs_page(request: Request) -> HTMLResponse:
        return render(request, "docs.html", spec=app.openapi())

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _local(url: str) -> str:
    """Only same-site paths as a redirect target after login."""
    return url if url.startswith("/") and not url.startswith("//") and "\\" not in url else "/"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _age(ts: datetime | None, now: datetime | None = None) -> str:
    if ts is None:
        return "-"
    seconds = max(0, int(((now or _now()) - ts).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"
