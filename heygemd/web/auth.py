"""Who may talk to the web server, and from where; who each request is (a :class:`Principal`, with a role).

- No token configured and no account (``heygemd users``): only a loopback bind is allowed (``check_bind``), and
  only requests addressed to a loopback name (``Host: localhost``, ``127.0.0.0/8``, ``[::1]``, any port) are
  answered (``check_host``): a web page whose own name an attacker rebinds to 127.0.0.1 (DNS rebinding) gets
  nothing. Every such request is let in, as ``local``, an admin.
- A token or accounts configured: every request must carry a secret: ``Authorization: Bearer <secret>`` (the API:
  web.token, an admin key of its own; or an account's API key, ``hgd_...``), or the session cookie the login form
  sets (the pages: HttpOnly, SameSite=Strict; logged in with an account's name and password, or with web.token).
  The cookie holds a dated, signed session value of the account that expires after web.session_hours and that
  logging out, or removing the account, ends (``sessions``), never a secret. Off loopback the token must be set and
  at least MIN_TOKEN_BYTES long (``check_bind``). Wrong secrets are throttled per client address and per account
  (``throttle``), and logged.
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
from dataclasses import dataclass
from urllib.parse import urlsplit

import structlog
from pydantic import SecretStr
from starlette.requests import Request

from heygemd.accounts import KEY_PREFIX, Accounts, Role
from heygemd.errors import ConfigError
from heygemd.settings import MIN_SECRET_BYTES, WebSettings
from heygemd.web import throttle
from heygemd.web.problems import CrossSite, Unauthorized, WrongHost
from heygemd.web.sessions import Sessions
from heygemd.web.throttle import FailureThrottle

log = structlog.get_logger("heygemd.web")

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
    (raises ConfigError). Accounts do not replace it: removing the last one would open the server."""
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

    OPEN = "open"  # no token and no account configured (loopback only)
    BEARER = "bearer"
    COOKIE = "cookie"
    SCRAPER = "scraper"  # web.metrics_token: GET /metrics only


TOKEN = "token"
"""The name of whoever uses web.token (an admin key of its own), and its sessions' subject."""
LOCAL = "local"
"""The name of whoever uses a loopback server without a token or accounts (an admin)."""


@dataclass(frozen=True)
class Principal:
    """Who a request is: an account's ``name`` (or ``token``, ``local``, ``metrics``), its ``role``, how it was
    let in (``via``)."""

    name: str
    role: Role
    via: Via

    @property
    def submitter(self) -> str:
        """What jobs it submits record as ``submitted_by``: ``web anna``."""
        return f"web {self.name}"

    def asking(self, client: str) -> str:
        """Who asks, for a cancel request and the logs: ``web anna from 10.0.0.7``."""
        return f"web {self.name} from {client}"


class Gate:
    """Checks requests against web.token and the accounts, issues and ends login sessions, throttles wrong
    secrets per client address and per account; ``clock`` is the wall clock (Unix seconds)."""

    def __init__(self, web: WebSettings, accounts: Accounts, clock: Callable[[], float] = time.time) -> None:
        self._token = token_value(web.token)
        self._metrics_token = token_value(web.metrics_token)
        self.accounts = accounts
        self.sessions = Sessions(web.session_hours * 3600, clock)
        self._throttle = FailureThrottle(clock)

    @property
    def required(self) -> bool:
        """Whether requests must carry a secret: a token or an account is configured (an account made while the
        server runs counts from then on)."""
        return bool(self._token) or self.accounts.any()

    @property
    def takes_token(self) -> bool:
        """Whether web.token is set (the login form then takes it too)."""
        return bool(self._token)

    def _refused(self, message: str) -> Unauthorized:
        """Unauthorized with ``message``, its hint naming the secrets this server takes: web.token, an account's
        API key (with the command that makes one), a login."""
        key = "an account's API key (`heygemd users key ACCOUNT KEYNAME` makes one)"
        if not self.accounts.any():
            return Unauthorized(message)
        if not self._token:
            return Unauthorized(message, hint=f"Send {key} as 'Authorization: Bearer <key>', or log in.")
        return Unauthorized(
            message, hint=f"Send web.token (HEYGEMD_WEB__TOKEN) or {key} as 'Authorization: Bearer ...', or log in."
        )

    def _failed(self, client: str, name: str | None, why: str) -> None:
        subjects = [throttle.address(client), *([throttle.account(name)] if name else [])]
        self._throttle.failed(*subjects)
        log.warning("web.login_failed", client=client, account=name or "", why=why)

    def _check_bearer(self, candidate: str, client: str, *, scraper: bool) -> Principal:
        """Who the bearer secret ``candidate`` is: web.token, an account's API key, or (for a ``scraper``) the
        metrics token. Unauthorized when it is none, which counts against ``client`` and the account a key names;
        TooManyFailures while either has too many (and then the candidate is not even looked at)."""
        claimed = self.accounts.key_account(candidate) if candidate.startswith(KEY_PREFIX) else None
        self._throttle.check(throttle.address(client), *([throttle.account(claimed)] if claimed else []))
        given = candidate.encode("utf-8")
        if self._token and hmac.compare_digest(given, self._token.encode("utf-8")):
            return Principal(TOKEN, "admin", Via.BEARER)
        if scraper and self._metrics_token and hmac.compare_digest(given, self._metrics_token.encode("utf-8")):
            return Principal("metrics", "viewer", Via.SCRAPER)
        found = self.accounts.check_key(candidate) if claimed else None
        if found is not None:
            return Principal(found[0].name, found[0].role, Via.BEARER)
        self._failed(client, claimed, "wrong bearer token" if claimed is None else "wrong or revoked API key")
        is_key = candidate.startswith(KEY_PREFIX)
        raise self._refused("the API key is wrong or revoked" if is_key else "the bearer token is wrong")

    def login(self, user: str, secret: str, client: str) -> str | None:
        """A new session value for an account's right password (``user`` given) or the right web.token (``user``
        empty), None for a wrong one; TooManyFailures when ``client`` or the account failed too often."""
        name = user.strip()
        self._throttle.check(throttle.address(client), *([throttle.account(name)] if name else []))
        if not name:
            if self._token and hmac.compare_digest(secret.encode("utf-8"), self._token.encode("utf-8")):
                return self.sessions.issue(TOKEN)
            self._failed(client, None, "wrong token")
            return None
        account = self.accounts.check_password(name, secret)
        if account is None:
            self._failed(client, name, "wrong name or password")
            return None
        log.info("web.logged_in", client=client, account=account.name)
        return self.sessions.issue(account.id)

    def admit(self, authorization: str | None, cookie: str | None, client: str, *, scraper: bool = False) -> Principal:
        """Who the request from address ``client`` is; Unauthorized when it carries no valid secret or session,
        TooManyFailures when ``client`` (or the account a key names) guessed wrong too often. ``scraper``: the
        request is for /metrics, which web.metrics_token opens too."""
        if not self.required:
            return Principal(LOCAL, "admin", Via.OPEN)
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.casefold() != "bearer":
                raise self._refused("the Authorization header is not 'Bearer <secret>'")
            return self._check_bearer(value.strip(), client, scraper=scraper)
        if cookie:
            subject = self.sessions.subject(cookie)
            if subject == TOKEN and self._token:
                return Principal(TOKEN, "admin", Via.COOKIE)
            account = self.accounts.by_id(subject) if subject is not None else None
            if account is not None:
                return Principal(account.name, account.role, Via.COOKIE)
            raise Unauthorized(
                "the session is over (it expired, it was logged out, or its account removed); log in again"
            )
        if not self._token:
            raise self._refused("this server needs a login or an API key and the request carries neither")
        raise self._refused("this server needs a token and the request carries none")


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
