"""Fixtures for the farm tests: a real redis-server per test, farms whose processes are always killed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.conftest import media, pytest_runtest_makereport  # noqa: F401 - shared fixtures and hook
from tests.farm.farm import REDIS_SERVER, Farm, RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.fail("redis-server is not installed (deploy/setup.sh installs it)")
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def farm_factory(
    request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer
) -> Iterator[Callable[..., Farm]]:
    made: list[Farm] = []

    def make(name: str = "farm", **options: Any) -> Farm:
        farm = Farm(tmp_path / name, redis_server.url, **options)
        made.append(farm)
        return farm

    yield make
    for farm in made:
        farm.stop_all()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for farm in made:
            print(farm.diagnostics())
