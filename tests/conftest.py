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
