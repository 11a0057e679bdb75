"""``GET /metrics``: the Prometheus exposition of :func:`heygemd.metrics.web_registry` (the jobs from the folders,
this machine's GPUs, this process's own series), in the format the scraper asks for (OpenMetrics or text 0.0.4).

It is let in like the API (the bearer token, a session; open on a loopback server without a token) and also by
``web.metrics_token``, the scraper's read-only token, which opens nothing else."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client.exposition import choose_encoder

from heygemd.metrics import web_registry
from heygemd.settings import Settings
from heygemd.web.auth import COOKIE, Gate, Principal, client_address

PATH = "/metrics"


def metrics_router(settings: Settings, gate: Gate) -> APIRouter:
    registry = web_registry(settings.paths, tuple(settings.intake.hours))
    router = APIRouter()

    def scraper(request: Request) -> Principal:  # any role, or the scraper's token
        return gate.admit(
            request.headers.get("authorization"), request.cookies.get(COOKIE), client_address(request), scraper=True
        )

    @router.get(PATH, include_in_schema=False, dependencies=[Depends(scraper)])
    def metrics(request: Request) -> Response:  # a plain def: the look at the folders runs in the thread pool
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(registry), media_type=content_type)

    return router
