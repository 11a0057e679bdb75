"""Fixtures for the daemon process tests: tiny generated media, daemons that are always killed in teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.daemon_process import Daemon, Media


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    from heygemd.demo import presenter_video, speech_wav

    root = tmp_path_factory.mktemp("media")
    return Media(
        speech=speech_wav(
            root / "speech.wav", sentences=("Hello there, this is a test.",), pause_seconds=0.3, lead_seconds=0.2
        ),
        long_speech=speech_wav(
            root / "long.wav",
            sentences=("Hello there, this is a test.", "The mouth follows every word.", "Then it stops."),
            pause_seconds=0.3,
            lead_seconds=0.2,
        ),
        face_a=presenter_video(root / "face_a.mp4", seconds=1.0, size=(320, 180)),
        face_b=presenter_video(root / "face_b.mp4", seconds=1.2, size=(320, 180)),
        face_large=presenter_video(root / "face_large.mp4", seconds=1.2, size=(960, 540)),
    )


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def daemon_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Make daemons under tmp_path; each is SIGKILLed in teardown, and its logs printed when the test failed."""
    made: list[Daemon] = []

    def make(name: str = "d", **options: Any) -> Daemon:
        daemon = Daemon(tmp_path / name, **options)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.kill()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for daemon in made:
            print(daemon.diagnostics())
