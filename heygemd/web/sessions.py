"""The login sessions of the pages: a dated, signed cookie value that expires and that logging out ends.

A value is ``<issued>.<nonce>.<subject>.<signature>``: the Unix second it was issued, 16 random bytes (hex), whose
session it is (an account's id, or ``token`` for a login with web.token), and an HMAC-SHA256 of the three under a
key drawn at random when the server starts. It holds no secret. It is valid until ``issued + lifetime``; logging
out puts its nonce on a revocation list kept until then. A restart draws a new key, so it ends every session (log
in again). Whether its account still exists, and its role, are looked up at every request (``auth``): removing the
account ends its sessions.
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

    def _sign(self, issued: int, nonce: str, subject: str) -> str:
        return hmac.new(self._key, f"{issued}.{nonce}.{subject}".encode("ascii"), hashlib.sha256).hexdigest()

    def issue(self, subject: str) -> str:
        """A new session of ``subject`` (letters and digits), valid for ``lifetime_s`` from now."""
        if not subject.isascii() or not subject.isalnum():
            raise ValueError(f"{subject!r} cannot be a session's subject")
        issued, nonce = int(self._clock()), secrets.token_hex(16)
        return f"{issued}.{nonce}.{subject}.{self._sign(issued, nonce, subject)}"

    def _parse(self, value: str) -> tuple[int, str, str] | None:
        """The issue time, nonce and subject of a value this server signed, else None."""
        parts = value.split(".")
        if len(parts) != 4:
            return None
        issued_text, nonce, subject, signature = parts
        if not (issued_text + nonce + subject).isascii() or not issued_text.isdigit():
            return None
        if not nonce.isalnum() or not subject.isalnum():
            return None
        issued = int(issued_text)
        expected = self._sign(issued, nonce, subject).encode("ascii")
        if not hmac.compare_digest(signature.encode("ascii", "replace"), expected):
            return None
        return issued, nonce, subject

    def subject(self, value: str) -> str | None:
        """Whose session ``value`` is, when this server issued it and it has not expired nor been logged out."""
        parsed = self._parse(value)
        if parsed is None:
            return None
        issued, nonce, subject = parsed
        now = self._clock()
        if issued - CLOCK_SKEW_S <= now < issued + self.lifetime_s and nonce not in self._revoked:
            return subject
        return None

    def revoke(self, value: str) -> None:
        """End the session ``value`` (logging out); the list forgets it once it would have expired anyway."""
        now = self._clock()
        self._revoked = {n: until for n, until in self._revoked.items() if until > now}
        parsed = self._parse(value)
        if parsed is not None:
            issued, nonce, _subject = parsed
            self._revoked[nonce] = issued + self.lifetime_s
