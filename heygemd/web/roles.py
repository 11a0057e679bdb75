"""The one place that decides what a request may do: a FastAPI dependency per role (``VIEWER``, ``EDITOR``,
``ADMIN``), put on every route (:mod:`heygemd.web.app`, ``api``, ``pages``). Each lets the request in through the
gate (``auth``: who it is; the same-origin check for a change) and refuses a role below the one needed with
``403 FORBIDDEN_ROLE``, naming that role. Login, logout's form target, the static files and the favicon are the only
routes without one; ``/metrics`` has its own, which also lets the scraper's token in.

What each role may do: a viewer reads everything (jobs, files, logs, events, health, the API description); an
editor also submits, cancels and retries jobs (anyone's), changes the priority of a waiting job and adds and
removes library presenters; an admin also
deletes jobs and pauses or resumes the intake.
"""

from __future__ import annotations

from fastapi import Depends, Request

from heygemd.accounts import Role, allows
from heygemd.web.auth import COOKIE, Gate, Principal, check_same_origin, client_address
from heygemd.web.problems import ForbiddenRole

PRINCIPAL = "principal"
"""The request-state attribute holding who the request is, once let in."""


def gate_of(request: Request) -> Gate:
    gate: Gate = request.app.state.gate
    return gate


def authenticated(request: Request) -> Principal:
    """Who the request is (Unauthorized, TooManyFailures), after the same-origin check of a change (CrossSite).
    FastAPI runs it once per request, however many dependencies ask for it."""
    principal = gate_of(request).admit(
        request.headers.get("authorization"), request.cookies.get(COOKIE), client_address(request)
    )
    check_same_origin(
        request.method,
        principal.via,
        request.url.scheme,
        request.headers.get("host"),
        request.headers.get("origin"),
        request.headers.get("referer"),
    )
    setattr(request.state, PRINCIPAL, principal)
    return principal


class Require:
    """The dependency that lets in requests of ``role`` or above (tests find it on every route)."""

    def __init__(self, role: Role) -> None:
        self.role = role

    def __call__(self, principal: Principal = Depends(authenticated)) -> Principal:
        if not allows(principal.role, self.role):
            raise ForbiddenRole(
                f"{principal.name} has the {principal.role} role; this needs the {self.role} role (or above)"
            )
        return principal

    def __repr__(self) -> str:
        return f"Require({self.role!r})"


VIEWER = Require("viewer")
EDITOR = Require("editor")
ADMIN = Require("admin")


def principal_of(request: Request) -> Principal | None:
    """Who the request is, when a role dependency let it in (None on the login form)."""
    principal: Principal | None = getattr(request.state, PRINCIPAL, None)
    return principal
