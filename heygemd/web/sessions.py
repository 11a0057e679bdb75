"""The login sessions of the pages: a dated, signed cookie value that expires and that logging out ends.

A value is ``<issued>.<nonce>.<signature>``: the Unix second it was issued, 16 random bytes (hex), and an
HMAC-SHA256 of both under a key drawn at random when the server starts. It holds nothing of the token. It is
valid until ``issued + lifetime``; logging out puts its nonce on a revocation list kept until then. A restart
draws a new key, so it ends every session (log in again).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable

CLOCK_SKEW_S = 60.0
"""How far in the future an issue time may lie (the wall clock stepped back a little since the login)."""


class Sessions:
    """Issues and checks session values; ``clock`` is the wall clock (Unix seconds)."""

    def __init__(self, lifetime_s: float, clock: Callable[[], float]) -> None:
        self.lifetime_s = lifetime_s
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._revoked: dict[str, float] = {}  # nonce -> when its value expires anyway

    def _sign(self, issued: int, nonce: str) -> str:
        return hmac.new(self._key, f"{issued}.{nonce}".encode("ascii"), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        """A new session value, valid for ``lifetime_s`` from now."""
        issued, nonce = int(self._clock()), secrets.token_hex(16)
        return f"{issued}.{nonce}.{self._sign(issued, nonce)}"

    def _parse(self, value: str) -> tuple[int, str] | None:
        """The issue time and nonce of a value this server signed, else None."""
        issued_text, _, rest = value.partition(".")
        nonce, _, signature = rest.partition(".")
        if not (issued_text + nonce).isascii() or not issued_text.isdigit() or not nonce.isalnum():
            return None
        issued = int(issued_text)
        if not hmac.compare_digest(signature.encode("ascii", "replace"), self._sign(issued, nonce).encode("ascii")):
            return None
        return issued, nonce

    def valid(self, value: str) -> bool:
        """Whether ``value`` is a session this server issued, not expired and not logged out."""
        parsed = self._parse(value)
        if parsed is None:
            return False
        issued, nonce = parsed
        now = self._clock()
        return issued - CLOCK_SKEW_S <= now < issued + self.lifetime_s and nonce not in self._revoked

    def revoke(self, value: str) -> None:
        """End the session ``value`` (logging out); the list forgets it once it would have expired anyway."""
        now = self._clock()
        self._revoked = {n: until for n, until in self._revoked.items() if until > now}
        parsed = self._parse(value)
        if parsed is not None:
            issued, nonce = parsed
            self._revoked[nonce] = issued + self.lifetime_s
