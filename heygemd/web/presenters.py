"""The presenter library over HTTP: ``/api/presenters`` (list, one, add, remove, poster, preview) and the Presenters
page. Routes only translate HTTP to :class:`heygemd.control.Control`'s library actions and back; an added presenter
is received as a job upload is (``upload.MultipartPresenter`` into a staging folder, the same limits), then moved
into the library with its ready marker last, and the daemon prepares it.

Files are served only from where heygemd keeps them: a poster from ``<state>/posters/``, a preview (the presenter's
own file) from the library folder; each must be a plain regular file there, never reached through a link, and is
sent through the descriptor it was checked by (:class:`OpenedFile`).
"""

from __future__ import annotations

import mimetypes
import os
import urllib.parse
from collections.abc import Callable
from typing import Any

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from heygemd import layout
from heygemd.control import Control
from heygemd.daemon.library import PresenterStatus, open_presenter_file
from heygemd.engine_names import CHOICES
from heygemd.errors import HeygemdError
from heygemd.fsutil import fd_path, open_regular, real_folder
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
        path = layout.poster_file(settings.paths.state_dir, found.name)
        none_yet = f"the presenter {found.name!r} has no poster yet"
        if found.poster is None:
            raise NotFound(none_yet)
        try:
            with real_folder(path.parent) as posters:
                fd = open_regular(path, dir_fd=posters)
        except (OSError, HeygemdError):
            raise NotFound(none_yet) from None
        return OpenedFile(fd, "image/jpeg")

    @api.head("/{name}/preview", **operation("headPresenterPreview"))
    @api.get("/{name}/preview", response_class=FileResponse, **operation("getPresenterPreview"))
    def preview(name: str) -> FileResponse:
        found = control.presenter(name)
        try:
            fd = open_presenter_file(settings.paths.presenters_dir, found.file)
        except (OSError, HeygemdError):
            raise NotFound(f"the presenter {found.name!r} has no file to show") from None
        return OpenedFile(fd, mimetypes.guess_type(found.file)[0] or "application/octet-stream")

    return api


class OpenedFile(FileResponse):
    """A file served through the descriptor it was opened and checked by (:func:`heygemd.fsutil.open_regular`: a
    regular file, not a link), so a file put under its name meanwhile (a link to another) is not what is sent. The
    descriptor is closed once the answer is sent, or given up."""

    def __init__(self, fd: int, media_type: str) -> None:
        self.fd = fd
        try:
            super().__init__(fd_path(fd), media_type=media_type, stat_result=os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            os.close(self.fd)


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
