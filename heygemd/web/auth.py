"""Who may talk to the web server, and from where.

- No token configured: only a loopback bind is allowed (``check_bind``), and only requests addressed to a
  loopback name (``Host: localhost``, ``127.0.0.0/8``, ``[::1]``, any port) are answered (``check_host``): a web
  page whose own name an attacker rebinds to 127.0.0.1 (DNS rebinding) gets nothing. Every such request is let in.
- A token configured: every request must carry it, as ``Authorization: Bearer <token>`` (the API) or as the
  session cookie the login form sets (the pages: HttpOnly, SameSite=Strict). The cookie holds an HMAC of the
  token, not the token itself.
- State-changing requests (POST, PUT, PATCH, DELETE) not made with the bearer header must come from the
  dashboard's own origin (scheme, name and port): an ``Origin`` (or, without it, ``Referer``) naming another site
  is refused. A browser
  always sends ``Origin`` on a cross-site POST; with a cookie session one of the two headers is required.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
from urllib.parse import urlsplit

from pydantic import SecretStr

from heygemd.errors import ConfigError
from heygemd.settings import WebSettings
from heygemd.web.problems import CrossSite, Unauthorized, WrongHost

COOKIE = "heygemd_session"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only accepts connections from this machine."""
    if host.casefold() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(web: WebSettings) -> None:
    """Refuse to serve on a non-loopback address without a token (raises ConfigError)."""
    if not is_loopback(web.host) and not token_value(web.token):
        raise ConfigError(
            f"web.host = {web.host!r} is reachable from other machines, but no web.token is set; refusing to start",
            hint="Set a long random token in HEYGEMD_WEB__TOKEN (e.g. from `openssl rand -hex 32`), "
            'or bind web.host = "127.0.0.1" behind a reverse proxy.',
        )


def check_host(host: str | None) -> None:
    """Refuse a request not addressed to a loopback name (raises WrongHost); only for a server without a token."""
    try:
        name = urlsplit(f"//{host}").hostname if host else None
    except ValueError:  # a malformed port or IPv6 literal
        name = None
    if not name or not is_loopback(name):
        raise WrongHost(f"this server has no web.token and answers only to localhost, not to Host: {host!r}")


def token_value(token: SecretStr | None) -> str:
    return token.get_secret_value() if token is not None else ""


class Via(enum.Enum):
    """How a request was let in."""

    OPEN = "open"  # no token configured (loopback only)
    BEARER = "bearer"
    COOKIE = "cookie"


class Gate:
    """Checks requests against the configured token."""

    def __init__(self, token: SecretStr | None) -> None:
        self._token = token_value(token)

    @property
    def required(self) -> bool:
        return bool(self._token)

    def session_value(self) -> str:
        """What the session cookie holds: an HMAC of the token (the token itself never goes into a cookie)."""
        return hmac.new(self._token.encode("utf-8"), b"heygemd-web-session", hashlib.sha256).hexdigest()

    def token_matches(self, candidate: str) -> bool:
        return bool(self._token) and hmac.compare_digest(candidate.encode("utf-8"), self._token.encode("utf-8"))

    def admit(self, authorization: str | None, cookie: str | None) -> Via:
        """How the request is let in; Unauthorized when it carries no valid token or session."""
        if not self._token:
            return Via.OPEN
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.casefold() == "bearer" and self.token_matches(value.strip()):
                return Via.BEARER
            raise Unauthorized("the bearer token is wrong")
        if cookie and hmac.compare_digest(cookie.encode("utf-8"), self.session_value().encode("utf-8")):
            return Via.COOKIE
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
