"""The presenter library over HTTP: ``/api/presenters`` (list, one, add, remove, poster, preview) and the Presenters
page. Routes only translate HTTP to :class:`heygemd.control.Control`'s library actions and back; an added presenter
is received as a job upload is (``upload.MultipartPresenter`` into a staging folder, the same limits), then moved
into the library with its ready marker last, and the daemon prepares it.

Files are served only from where heygemd keeps them: a poster from ``<state>/posters/``, a preview (the presenter's
own file) from the library folder; each must be a plain regular file there, never reached through a link.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from heygemd import layout
from heygemd.control import Control
from heygemd.daemon.library import PresenterStatus
from heygemd.engine_names import CHOICES
from heygemd.errors import HeygemdError
from heygemd.fsutil import contained, is_real_file
from heygemd.settings import Settings
from heygemd.web.openapi import PRESENTER_BODY, operation
from heygemd.web.pages import Renderer
from heygemd.web.problems import NotFound, Problem
from heygemd.web.roles import EDITOR
from heygemd.web.upload import PRESENTER_UPLOADS, Limits, MultipartPresenter, feed_body

log = structlog.get_logger("heygemd.web")


class Presenter(PresenterStatus):
    """A presenter of the library as the API gives it: its state, and where its poster and preview are."""

    poster_url: str | None = None
    preview_url: str

    @classmethod
    def of(cls, status: PresenterStatus) -> "Presenter":
        base = f"/api/presenters/{urllib.parse.quote(status.name, safe='')}"
        version = status.identity.mtime_ns if status.identity else 0  # a changed presenter's poster is fetched anew
        return cls(
            **status.model_dump(),
            poster_url=f"{base}/poster?v={version}" if status.poster else None,
            preview_url=f"{base}/preview",
        )


class PresenterList(BaseModel):
    presenters: list[Presenter]


class Removed(BaseModel):
    deleted: str


ERROR_ANSWERS: dict[int | str, dict[str, Any]] = {code: {"model": Problem} for code in (400, 401, 403, 404, 409, 413)}


def presenters_api(settings: Settings, control: Control, guard: Callable[..., object]) -> APIRouter:
    limits = Limits.from_settings(settings.web)
    api = APIRouter(prefix="/api/presenters", dependencies=[Depends(guard)], responses=ERROR_ANSWERS)

    @api.get("", **operation("listPresenters"))
    def list_presenters() -> PresenterList:
        return PresenterList(presenters=[Presenter.of(p) for p in control.presenters()])

    @api.post(
        "",
        status_code=201,
        dependencies=[Depends(EDITOR)],
        openapi_extra={"requestBody": PRESENTER_BODY},
        **operation("addPresenter"),
    )
    async def add(request: Request) -> Presenter:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limits.max_body_bytes:
            raise limits.too_large(int(length))
        staging = await run_in_threadpool(control.staging)
        receiver: MultipartPresenter | None = None
        try:
            receiver = MultipartPresenter(staging, limits, request.headers.get("content-type"))
            await feed_body(request, receiver)
            stored, name, options = receiver.finish_presenter()
            added = await run_in_threadpool(
                lambda: control.add_presenter(staging / stored, name=name, options=options, move=True)
            )
        except HeygemdError as exc:
            log.warning("web.presenter_refused", code=exc.code, error=exc.message)
            raise
        finally:
            if receiver is not None:
                receiver.close()
            await run_in_threadpool(control.discard, staging)
        log.info("web.presenter_added", presenter=added.name, file=added.file)
        return Presenter.of(added)

    @api.get("/{name}", **operation("getPresenter"))
    def get_presenter(name: str) -> Presenter:
        return Presenter.of(control.presenter(name))

    @api.delete("/{name}", dependencies=[Depends(EDITOR)], **operation("deletePresenter"))
    def remove(name: str) -> Removed:
        control.remove_presenter(name)
        log.info("web.presenter_removed", presenter=name)
        return Removed(deleted=name)

    @api.head("/{name}/poster", **operation("headPresenterPoster"))
    @api.get("/{name}/poster", response_class=FileResponse, **operation("getPresenterPoster"))
    def poster(name: str) -> FileResponse:
        found = control.presenter(name)
        state = settings.paths.state_dir
        path = layout.poster_file(state, found.name)
        if found.poster is None or not _served(path, path.parent):
            raise NotFound(f"the presenter {found.name!r} has no poster yet")
        return FileResponse(path, media_type="image/jpeg")

    @api.head("/{name}/preview", **operation("headPresenterPreview"))
    @api.get("/{name}/preview", response_class=FileResponse, **operation("getPresenterPreview"))
    def preview(name: str) -> FileResponse:
        found = control.presenter(name)
        folder = settings.paths.presenters_dir
        path = folder / found.file
        if not _served(path, folder):
            raise NotFound(f"the presenter {found.name!r} has no file to show")
        return FileResponse(path)

    return api


def _served(path: Path, folder: Path) -> bool:
    """Whether ``path`` is a plain regular file directly in ``folder`` (not a link, nothing outside it)."""
    return path.parent == folder and is_real_file(path) and contained(path, folder)


def presenters_page(settings: Settings, render: Renderer, control: Control, guard: Callable[..., object]) -> APIRouter:
    pages = APIRouter(include_in_schema=False)

    @pages.get("/presenters", response_class=HTMLResponse, dependencies=[Depends(guard)])
    def presenters_view(request: Request) -> HTMLResponse:
        return render(
            request,
            "presenters.html",
            presenters=[Presenter.of(p) for p in control.presenters()],
            suffixes=sorted(PRESENTER_UPLOADS),
            engines=CHOICES,
            limits=settings.web,
        )

    return pages
