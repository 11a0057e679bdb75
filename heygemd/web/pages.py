"""The server-rendered pages: the job list, one job, the upload form, the API description, the login form.

Templates and static files ship in the package; the pages' live parts (static/app.js) use the API.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from heygemd.accounts import allows
from heygemd.daemon.library import PresenterStatus
from heygemd.daemon.priority import LEVELS
from heygemd.daemon.priority import shown as shown_priority
from heygemd.daemon.status import ErrorStatus, JobStatus, VideoStatus
from heygemd.settings import Settings
from heygemd.web.api import pages_of
from heygemd.web.auth import COOKIE, Gate, Via, client_address
from heygemd.web.catalog import Catalog
from heygemd.web.roles import EDITOR, principal_of
from heygemd.web.upload import AUDIO_UPLOADS, PRESENTER_UPLOADS, Limits


class Renderer:
    """Renders a template with what every page shows in its header: once the visitor is let in (a role dependency
    passed), who they are, the engine, busy or idle, the queue and whether the intake takes jobs; before that
    nothing of the machine. Pages show only the buttons the visitor's role may use (``can_edit``, ``can_admin``;
    the API refuses the others anyway)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.env = Environment(loader=PackageLoader("heygemd.web", "templates"), autoescape=select_autoescape())
        self.env.filters["percent"] = lambda f: f"{(f or 0) * 100:.0f}%"
        self.env.filters["age"] = age
        self.env.filters["when"] = when
        self.env.filters["quote"] = lambda s: urllib.parse.quote(s, safe="")
        self.env.filters["first_error"] = first_error
        self.env.filters["video_progress"] = video_progress
        self.env.filters["priority"] = shown_priority
        self.env.globals["priority_levels"] = LEVELS
        self.env.filters["presenter_stage"] = presenter_stage

    def __call__(self, request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        principal = principal_of(request)
        html = self.env.get_template(template).render(
            request=request,
            signed_in=principal is not None,
            principal=principal,
            can_edit=principal is not None and allows(principal.role, "editor"),
            can_admin=principal is not None and allows(principal.role, "admin"),
            machine=self.catalog.machine() if principal is not None else None,
            token_required=principal is not None and principal.via is not Via.OPEN,  # logged in: who, log out
            **context,
        )
        return HTMLResponse(html, status_code=status_code)


def pages_router(
    settings: Settings,
    catalog: Catalog,
    gate: Gate,
    render: Renderer,
    app: FastAPI,
    guard: Callable[..., object],
    same_origin: Callable[[Request, Via], None],
) -> APIRouter:
    web = settings.web
    pages = APIRouter(include_in_schema=False)

    def ways_in() -> dict[str, bool]:
        """What the login form asks for: an account's name and password, web.token, or either."""
        return {"accounts": gate.accounts.any() or not gate.takes_token, "token_login": gate.takes_token}

    @pages.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> HTMLResponse:
        return render(request, "login.html", next=local(next), failed=False, user="", **ways_in())

    @pages.post("/login")
    def login(
        request: Request,
        token: Annotated[str, Form()] = "",
        user: Annotated[str, Form()] = "",
        next: Annotated[str, Form()] = "/",
    ) -> Response:
        same_origin(request, Via.OPEN)
        if not gate.required:
            return RedirectResponse(local(next), status_code=303)
        session = gate.login(user, token, client_address(request))
        if session is None:
            return render(request, "login.html", status_code=401, next=local(next), failed=True, user=user, **ways_in())
        response = RedirectResponse(local(next), status_code=303)
        response.set_cookie(
            COOKIE,
            session,
            max_age=int(gate.sessions.lifetime_s),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    @pages.post("/logout", dependencies=[Depends(guard)])
    def logout(request: Request) -> Response:
        if cookie := request.cookies.get(COOKIE):
            gate.sessions.revoke(cookie)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @pages.get("/", response_class=HTMLResponse, dependencies=[Depends(guard)])
    def jobs_page(request: Request, page: Annotated[int, Query(ge=1)] = 1) -> HTMLResponse:
        jobs, total = catalog.page(page, web.page_size)
        return render(
            request, "jobs.html", jobs=jobs, page=page, pages=pages_of(total, web.page_size), total=total, now=now()
        )

    @pages.get("/jobs/{job_id}", response_class=HTMLResponse, dependencies=[Depends(guard)])
    def job_page(request: Request, job_id: str) -> HTMLResponse:
        return render(request, "job.html", job=catalog.status(job_id), log=catalog.log_text(job_id), now=now())

    @pages.get("/new", response_class=HTMLResponse, dependencies=[Depends(guard), Depends(EDITOR)])
    def new_page(request: Request) -> HTMLResponse:
        return render(
            request,
            "new.html",
            limits=web,
            upload_limits=Limits.from_settings(web),
            farm=bool(settings.queue.broker),
            engines=catalog.control.engine_choices(),
            audio_suffixes=sorted(AUDIO_UPLOADS),
            presenter_suffixes=sorted(PRESENTER_UPLOADS),
            library=[p for p in catalog.control.presenters() if p.state != "failed"],
        )

    @pages.get("/docs", response_class=HTMLResponse, dependencies=[Depends(guard)])
    def docs_page(request: Request) -> HTMLResponse:
        return render(request, "docs.html", spec=app.openapi())

    return pages


def first_error(job: JobStatus) -> ErrorStatus | None:
    """Why a job failed (its own error), else the first failed video's error; None when nothing failed."""
    return job.error or next((v.error for v in job.videos if v.error is not None), None)


def video_progress(video: VideoStatus) -> tuple[float, str]:
    """A video's bar and the words under it, from the one number ``progress`` (static/app.js: videoProgress)."""
    if video.state == "done":
        return 1.0, ""
    if video.state == "pending":
        return 0.0, "waiting"
    if video.state == "not_started":
        return 0.0, "not started: the job failed"
    if video.state != "processing":
        return video.progress, ""
    stage = "finding the face" if video.frames_total is None else "lip-syncing"
    return video.progress, f"{video.progress * 100:.0f}% · {stage}"


PRESENTER_STAGES = {
    "waiting": "waiting",
    "queued": "queued: prepared when no job is rendering",
    "detecting": "finding the face",
    "preparing": "preparing the engines",
    "poster": "making the poster",
}


def presenter_stage(presenter: PresenterStatus) -> str:
    """The words under a preparing presenter's bar (static/app.js: presenterStage)."""
    words = PRESENTER_STAGES.get(presenter.stage or "", "")
    if presenter.stage in ("detecting", "preparing", "poster"):
        words = f"{presenter.progress * 100:.0f}% · {words}"
    return f"{words}: {presenter.waiting_for}" if presenter.waiting_for else words


def local(url: str) -> str:
    """Only same-site paths as a redirect target after login."""
    return url if url.startswith("/") and not url.startswith("//") and "\\" not in url else "/"


def now() -> datetime:
    return datetime.now(timezone.utc)


def when(ts: datetime | None) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "-"


def age(ts: datetime | None, at: datetime | None = None) -> str:
    if ts is None:
        return "-"
    seconds = max(0, int(((at or now()) - ts).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"
