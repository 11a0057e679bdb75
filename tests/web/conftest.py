"""Fixtures for the web tests: the real app over temporary folders, tiny real media."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from heygemd.settings import Settings
from heygemd.web.app import create_app
from tests.daemon.conftest import daemon_factory, media, pytest_runtest_makereport  # noqa: F401  (shared)
from tests.web.webserver import ORIGIN, WebProcess, settings_for


@pytest.fixture(autouse=True)
def no_heygemd_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("HEYGEMD_"):
            monkeypatch.delenv(key)


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., tuple[TestClient, Settings]]]:
    """``make_client(web="token = ...")``: the real app over tmp_path/inbox, outbox, as a browser on this machine
    reaches it (base URL ``ORIGIN``); ``address``: the client's address; other keywords go to ``create_app``."""
    clients: list[TestClient] = []

    def make(
        web: str = "", root: Path | None = None, address: str = "testclient", **app_options: Any
    ) -> tuple[TestClient, Settings]:
        settings = settings_for(root or tmp_path, web)
        client = TestClient(
            create_app(settings, **app_options), base_url=ORIGIN, follow_redirects=False, client=(address, 50000)
        )
        clients.append(client)
        return client, settings

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def web_process() -> Iterator[Callable[..., WebProcess]]:
    """Start real heygemd processes; each is stopped in teardown."""
    started: list[WebProcess] = []

    def start(config: Path, command: str = "web", env: dict[str, str] | None = None) -> WebProcess:
        proc = WebProcess(config, command, env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def faceless(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test pattern without a face: its video fails with NO_FACE."""
    from tests.pipeline.media import lavfi_clip

    return lavfi_clip(tmp_path_factory.mktemp("web-faceless") / "pattern.mp4", size="320x180", seconds=1)
