"""Who may talk to the web server, and from where.

- No token configured: only a loopback bind is allowed (``check_bind``), and only requests addressed to a
  loopback name (``Host: localhost``, ``127.0.0.0/8``, ``[::1]``, any port) are answered (``check_host``): a web
  page whose own name an attacker rebinds to 127.0.0.1 (DNS rebinding) gets nothing. Every such request is let in.
- A token configured: every request must carry it, as ``Authorization: Bearer <token>`` (the API) or as the
  session cookie the login form sets (the pages: HttpOnly, SameSite=Strict). The cookie holds a dated, signed
  session value that expires after web.session_hours and that logging out ends (``sessions``), never the token.
  Off loopback the token must be at least MIN_TOKEN_BYTES long (``check_bind``). Wrong tokens are throttled
  per client address (``throttle``).
- ``web.metrics_token`` (optional, with a token configured) opens ``GET /metrics`` and nothing else: a scraper
  holding it can read the metrics, never a job; elsewhere it is a wrong token like any other.
- State-changing requests (POST, PUT, PATCH, DELETE) not made with the bearer header must come from the
  dashboard's own origin (scheme, name and port): an ``Origin`` (or, without it, ``Referer``) naming another site
  is refused. A browser always sends ``Origin`` on a cross-site POST; with a cookie session one of the two
  headers is required.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from pydantic import SecretStr
from starlette.requests import Request

from heygemd.errors import ConfigError
from heygemd.settings import MIN_SECRET_BYTES, WebSettings
from heygemd.web.problems import CrossSite, Unauthorized, WrongHost
from heygemd.web.sessions import Sessions
from heygemd.web.throttle import FailureThrottle

COOKIE = "heygemd_session"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MIN_TOKEN_BYTES = MIN_SECRET_BYTES


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only accepts connections from this machine."""
    if host.casefold() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(web: WebSettings) -> None:
    """Refuse to serve on a non-loopback address without a token, or with one shorter than MIN_TOKEN_BYTES
    (raises ConfigError)."""
    if is_loopback(web.host):
        return
    token = token_value(web.token)
    hint = (
        "Set a long random token in HEYGEMD_WEB__TOKEN (e.g. from `openssl rand -hex 32`), "
        'or bind web.host = "127.0.0.1" behind a reverse proxy.'
    )
    if not token:
        raise ConfigError(
            f"web.host = {web.host!r} is reachable from other machines, but no web.token is set; refusing to start",
            hint=hint,
        )
    if len(token.encode("utf-8")) < MIN_TOKEN_BYTES:
        raise ConfigError(
            f"web.host = {web.host!r} is reachable from other machines, but web.token is only "
            f"{len(token.encode('utf-8'))} bytes long; it must be at least {MIN_TOKEN_BYTES} bytes; refusing to start",
            hint=hint,
        )


def check_host(host: str | None) -> None:
    """Refuse a request not addressed to a loopback name (raises WrongHost); only for a server without a token."""
    try:
        name = urlsplit(f"//{host}").hostname if host else None
    except ValueError:  # a malformed port or IPv6 literal
        name = None
    if not name or not is_loopback(name):
        raise WrongHost(f"this server has no web.token and answers only to localhost, not to Host: {host!r}")


def client_address(request: Request) -> str:
    """The client's address (behind a reverse proxy on loopback: from its X-Forwarded-For, as uvicorn reads it)."""
    return request.client.host if request.client else "?"


def token_value(token: SecretStr | None) -> str:
    return token.get_secret_value() if token is not None else ""


class Via(enum.Enum):
    """How a request was let in."""

    OPEN = "open"  # no token configured (loopback only)
    BEARER = "bearer"
    COOKIE = "cookie"
    SCRAPER = "scraper"  # web.metrics_token: GET /metrics only


class Gate:
    """Checks requests against the configured token, issues and ends login sessions, throttles wrong tokens
    per client address; ``clock`` is the wall clock (Unix seconds)."""

    def __init__(self, web: WebSettings, clock: Callable[[], float] = time.time) -> None:
        self._token = token_value(web.token)
        self._metrics_token = token_value(web.metrics_token)
        self.sessions = Sessions(web.session_hours * 3600, clock)
        self._throttle = FailureThrottle(clock)

    @property
    def required(self) -> bool:
        return bool(self._token)

    def _try_token(self, candidate: str, client: str, *, scraper: bool = False) -> Via | None:
        """Which token ``candidate`` is (the metrics token counts only for a ``scraper``), None for a wrong one,
        which counts against ``client`` (TooManyFailures while ``client`` has too many, and then the candidate is
        not even looked at)."""
        self._throttle.check(client)
        given = candidate.encode("utf-8")
        if hmac.compare_digest(given, self._token.encode("utf-8")):
            return Via.BEARER
        if scraper and self._metrics_token and hmac.compare_digest(given, self._metrics_token.encode("utf-8")):
            return Via.SCRAPER
        self._throttle.failed(client)
        return None

    def login(self, candidate: str, client: str) -> str | None:
        """A new session value for the right token, None for a wrong one (TooManyFailures when throttled)."""
        return self.sessions.issue() if self._token and self._try_token(candidate, client) is not None else None

    def admit(self, authorization: str | None, cookie: str | None, client: str, *, scraper: bool = False) -> Via:
        """How the request from address ``client`` is let in; Unauthorized when it carries no valid token or
        session, TooManyFailures when ``client`` guessed wrong too often. ``scraper``: the request is for
        /metrics, which web.metrics_token opens too."""
        if not self._token:
            return Via.OPEN
        if authorization:
            scheme, _, value = authorization.partition(" ")
            via = self._try_token(value.strip(), client, scraper=scraper) if scheme.casefold() == "bearer" else None
            if via is None:
                raise Unauthorized("the bearer token is wrong")
            return via
        if cookie:
            if self.sessions.valid(cookie):
                return Via.COOKIE
            raise Unauthorized("the session is over (it expired, or it was logged out); log in again")
        raise Unauthorized("this server needs a token and the request carries none")


def check_same_origin(
    method: str, via: Via, scheme: str, host: str | None, origin: str | None, referer: str | None
) -> None:
    """Refuse a state-changing request that a page on another site made (raises CrossSite): its ``Origin`` (or
    ``Referer``) must name this server's ``scheme`` and ``host`` (the Host header, port included)."""
    if method.upper() not in UNSAFE_METHODS or via is Via.BEARER:
        return
    source = origin if origin is not None else referer
    if source is None:
        if via is Via.COOKIE:
            raise CrossSite("a state-changing request with a session cookie carries neither Origin nor Referer")
        return  # a non-browser client (curl, a script) on a token-less loopback server
    parts = urlsplit(source)
    if source == "null" or not host or (parts.scheme, parts.netloc.casefold()) != (scheme, host.casefold()):
        raise CrossSite(f"a request from {source!r} may not change anything on this server")
