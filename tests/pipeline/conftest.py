"""Fixtures of the probe/frames/encode tests: a media folder per test module, an H.264 clip, its exact frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.pipeline.media import lavfi_clip, lavfi_reference


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def h264(media: Path) -> Path:
    return lavfi_clip(media / "演讲 视频 1.mp4")


@pytest.fixture(scope="module")
def reference() -> list[np.ndarray]:
    return lavfi_reference()
