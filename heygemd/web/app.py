"""The FastAPI application: the HTTP API under /api (``api``), the pages (``pages``), static files from the
package.

Every request except the static files, the favicon and the login form passes the gate (``auth``) and the check of
its role (``roles``); state-changing ones also the same-origin check. A server without a token or accounts answers
only requests addressed to a loopback name (``LoopbackOnly``). Errors are answered as JSON ``{code, message, hint}``
(the API) or an error page (the pages; a page asked for without a login sends to the login form).
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from heygemd import __version__
from heygemd.accounts import Accounts
from heygemd.control import Control
from heygemd.errors import ConfigError, HeygemdError
from heygemd.settings import Settings
from heygemd.web.api import api_router
from heygemd.web.auth import Gate, Via, check_host, check_same_origin
from heygemd.web.catalog import Catalog
from heygemd.web.metrics import PATH as METRICS_PATH
from heygemd.web.metrics import metrics_router
from heygemd.web.openapi import document
from heygemd.web.pages import Renderer, pages_router
from heygemd.web.presenters import presenters_api, presenters_page
from heygemd.web.problems import Problem, Unauthorized, WebError, WrongHost, http_status, problem
from heygemd.web.roles import VIEWER

STATIC = Path(__file__).with_name("static")


def create_app(
    settings: Settings,
    *,
    control: Control | None = None,
    clock: Callable[[], float] = time.time,
    accounts: Accounts | None = None,
) -> FastAPI:
    """The application for ``settings`` (paths, web limits and token); ``control``: how it acts on jobs (default:
    a single host's); ``clock``: the wall clock that sessions and the throttle of wrong secrets go by;
    ``accounts``: the accounts (default: the state folder's users.json)."""
    control = control if control is not None else Control(settings)
    gate = Gate(settings.web, accounts if accounts is not None else Accounts(settings.paths.state_dir), clock)
    catalog = Catalog(settings, control)
    control.tidy()

    app = FastAPI(
        title="heygemd",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        description="Lip-sync videos: give one speech audio and one or more presenter videos (as URLs or "
        "uploads); heygemd renders every presenter speaking the audio. Submit a job (submitJob), poll its status "
        "(getJob) or receive a signed callback when it ends, then download the results (getJobOutputsZip). "
        "Authenticate with 'Authorization: Bearer <key>': an account's API key (heygemd users key) or web.token. "
        "What a key may do depends on its account's role: viewer (read), editor (also submit, cancel, retry, "
        "change priorities), admin (also delete, pause and resume); a lower role is answered 403 FORBIDDEN_ROLE.",
    )
    app.state.gate = gate
    render = Renderer(catalog)

    def same_origin(request: Request, via: Via) -> None:
        check_same_origin(
            request.method,
            via,
            request.url.scheme,
            request.headers.get("host"),
            request.headers.get("origin"),
            request.headers.get("referer"),
        )

    # -- error answers

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/") or request.url.path in ("/openapi.json", METRICS_PATH)

    @app.exception_handler(HeygemdError)
    async def on_error(request: Request, exc: HeygemdError) -> Response:
        if isinstance(exc, Unauthorized) and not wants_json(request) and request.method in ("GET", "HEAD"):
            next_url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={urllib.parse.quote(next_url, safe='')}", status_code=303)
        status = http_status(exc)
        headers = exc.headers if isinstance(exc, WebError) else {}
        if wants_json(request):
            return JSONResponse(problem(exc).model_dump(), status_code=status, headers=headers)
        page = render(request, "error.html", status_code=status, error=problem(exc))
        page.headers.update(headers)
        return page

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        body = Problem(
            code="NOT_FOUND" if exc.status_code == 404 else f"HTTP_{exc.status_code}",
            message=str(exc.detail),
            hint="See /docs for the API's paths.",
        )
        return JSONResponse(body.model_dump(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        body = Problem(code="BAD_REQUEST", message=problems, hint="See /docs for the parameters.")
        return JSONResponse(body.model_dump(), status_code=400)

    # -- routes

    app.include_router(api_router(settings, catalog, control, VIEWER))
    app.include_router(presenters_api(settings, control, VIEWER))
    app.include_router(metrics_router(settings, gate))

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(VIEWER)])
    def openapi(request: Request) -> dict[str, Any]:
        return document(app.openapi(), settings.web.public_url or str(request.base_url).rstrip("/"))

    app.include_router(pages_router(settings, catalog, gate, render, app, VIEWER, same_origin))
    app.include_router(presenters_page(settings, render, control, VIEWER))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    def open_server() -> bool:
        try:
            return not gate.required
        except ConfigError:  # users.json refused: not open; every route then answers why (BAD_CONFIG)
            return False

    app.add_middleware(LoopbackOnly, open_server=open_server)
    return app


class LoopbackOnly:
    """ASGI middleware: while the server has no token and no account (``open_server()``), every request, static
    files included, must be addressed to a loopback name (``auth.check_host``), else it is answered 421 WRONG_HOST
    before any route sees it."""

    def __init__(self, app: ASGIApp, open_server: Callable[[], bool]) -> None:
        self.app = app
        self.open_server = open_server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.open_server():
            try:
                check_host(Headers(scope=scope).get("host"))
            except WrongHost as exc:
                await JSONResponse(problem(exc).model_dump(), status_code=exc.status)(scope, receive, send)
                return
        await self.app(scope, receive, send)
