"""Shared fixtures: real media made on the spot (espeak-ng speech, the astronaut presenter)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def heygemd_bin() -> Path:
    """The console script of the environment running the tests."""
    import sys

    candidate = Path(sys.executable).parent / "heygemd"
    if not candidate.exists():
        found = shutil.which("heygemd")
        assert found, "heygemd is not installed in this environment (pip install -e .)"
        candidate = Path(found)
    return candidate


# Nothing in the tests may reach the Hugging Face hub: the MuseTalk loaders read local files only.
import os  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def musetalk_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random MuseTalk 1.5 model folder (``models/musetalk/`` layout, official file formats), built once."""
    from bench.musetalk_weights import build_folder

    return build_folder(tmp_path_factory.mktemp("models") / "musetalk")


@pytest.fixture(scope="session")
def latentsync_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LatentSync 1.6 model folder (``models/latentsync/`` layout, official file formats), built once."""
    from bench.latentsync_weights import build_folder

    return build_folder(tmp_path_factory.mktemp("models") / "latentsync")


@pytest.fixture
def nested():
    """``nested(top, levels, name="d")``: ``top`` with a chain of ``levels`` folders nested below it (and a file at
    the bottom), made through descriptors, so any depth and path length work. Removed again at teardown with
    heygemd's own remover: pytest's cleanup (shutil.rmtree) fails on a tree nested ~1000 deep."""
    from heygemd.fsutil import remove_tree

    made: list[Path] = []

    def make(top: Path, levels: int, name: str = "d") -> Path:
        top.mkdir(parents=True)
        made.append(top)
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in range(levels):
                os.mkdir(name, dir_fd=fd)
                inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = inner
            os.close(os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
        finally:
            os.close(fd)
        return top

    yield make
    for top in made:
        if os.path.lexists(top):
            remove_tree(top)
