"""The FastAPI application: the HTTP API under /api (``api``), the pages (``pages``), static files from the
package.

Every request except the static files, the favicon and the login form passes the token gate (``auth``);
state-changing ones also the same-origin check. A server without a token answers only requests addressed to a
loopback name (``LoopbackOnly``). Errors are answered as JSON ``{code, message, hint}`` (the API) or an error
page (the pages).
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
from heygemd.control import Control
from heygemd.errors import HeygemdError
from heygemd.settings import Settings
from heygemd.web.api import api_router
from heygemd.web.auth import COOKIE, Gate, Via, check_host, check_same_origin, client_address
from heygemd.web.catalog import Catalog
from heygemd.web.metrics import PATH as METRICS_PATH
from heygemd.web.metrics import metrics_router
from heygemd.web.openapi import document
from heygemd.web.pages import SIGNED_IN, Renderer, pages_router
from heygemd.web.problems import Problem, Unauthorized, WebError, WrongHost, http_status, problem

STATIC = Path(__file__).with_name("static")


class LoginNeeded(Exception):
    """A page was asked for without a session: answered with a redirect to the login form."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


def create_app(
    settings: Settings, *, control: Control | None = None, clock: Callable[[], float] = time.time
) -> FastAPI:
    """The application for ``settings`` (paths, web limits and token); ``control``: how it acts on jobs (default:
    a single host's); ``clock``: the wall clock that sessions and the throttle of wrong tokens go by."""
    control = control if control is not None else Control(settings)
    gate = Gate(settings.web, clock)
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
        "Authenticate with 'Authorization: Bearer <web.token>'.",
    )
    render = Renderer(catalog, gate)

    # -- guards

    def admit(request: Request) -> Via:
        return gate.admit(request.headers.get("authorization"), request.cookies.get(COOKIE), client_address(request))

    def same_origin(request: Request, via: Via) -> None:
        check_same_origin(
            request.method,
            via,
            request.url.scheme,
            request.headers.get("host"),
            request.headers.get("origin"),
            request.headers.get("referer"),
        )

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
        setattr(request.state, SIGNED_IN, True)
        return via

    # -- error answers

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/") or request.url.path in ("/openapi.json", METRICS_PATH)

    @app.exception_handler(HeygemdError)
    async def on_error(request: Request, exc: HeygemdError) -> Response:
        status = http_status(exc)
        headers = exc.headers if isinstance(exc, WebError) else {}
        if wants_json(request):
            return JSONResponse(problem(exc).model_dump(), status_code=status, headers=headers)
        page = render(request, "error.html", status_code=status, error=problem(exc))
        page.headers.update(headers)
        return page

    @app.exception_handler(LoginNeeded)
    async def on_login_needed(request: Request, exc: LoginNeeded) -> Response:
        return RedirectResponse(f"/login?next={urllib.parse.quote(exc.next_url, safe='')}", status_code=303)

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

    app.include_router(api_router(settings, catalog, control, api_guard))
    app.include_router(metrics_router(settings, gate))

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(api_guard)])
    def openapi(request: Request) -> dict[str, Any]:
        return document(app.openapi(), settings.web.public_url or str(request.base_url).rstrip("/"))

    app.include_router(pages_router(settings, catalog, gate, render, app, page_guard, same_origin))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    if not gate.required:
        app.add_middleware(LoopbackOnly)
    return app


class LoopbackOnly:
    """ASGI middleware of a server without a token: every request, static files included, must be addressed to a
    loopback name (``auth.check_host``), else it is answered 421 WRONG_HOST before any route sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            try:
                check_host(Headers(scope=scope).get("host"))
            except WrongHost as exc:
                await JSONResponse(problem(exc).model_dump(), status_code=exc.status)(scope, receive, send)
                return
        await self.app(scope, receive, send)
