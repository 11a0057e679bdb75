"""The BGR <-> yuv420p conversions (heygemd.pipeline.colour) against swscale, the real ffmpeg's conversion."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from heygemd.demo import presenter_frames
from heygemd.pipeline.colour import BT709_TV, YuvMatrix, bgr_to_yuv420p, yuv420p_bytes, yuv420p_to_bgr
from heygemd.pipeline.ffmpeg_tools import find_tool
from tests.pipeline.media import requires_ffmpeg

pytestmark = requires_ffmpeg

W, H = 320, 180


def _swscale(data: bytes, in_fmt: str, out_fmt: str, vf: str) -> np.ndarray:
    argv = [find_tool("ffmpeg"), "-v", "error", "-f", "rawvideo", "-pix_fmt", in_fmt, "-s", f"{W}x{H}"]
    argv += ["-i", "pipe:0", "-vf", vf, "-f", "rawvideo", "-pix_fmt", out_fmt, "pipe:1"]
    return np.frombuffer(subprocess.run(argv, input=data, capture_output=True, check=True).stdout, dtype=np.uint8)


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return next(presenter_frames(1.0, size=(W, H)))


def _planes_error(ours: np.ndarray, theirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    return diff[: W * H], diff[W * H :]


def test_bgr_to_yuv420p_matches_swscale_accurate_rnd(portrait):
    ours = np.empty(yuv420p_bytes(W, H), dtype=np.uint8)
    bgr_to_yuv420p(portrait, BT709_TV, ours)
    theirs = _swscale(
        portrait.tobytes(), "bgr24", "yuv420p", "scale=out_color_matrix=bt709:out_range=tv:flags=accurate_rnd"
    )
    luma, chroma = _planes_error(ours, theirs)
    assert luma.max() <= 1 and chroma.max() <= 3  # chroma: the two round the 2x2 mean differently
    assert luma.mean() < 0.1 and chroma.mean() < 0.3 and np.percentile(chroma, 99.9) <= 2


@pytest.mark.parametrize(
    ("space", "tv_or_pc", "in_fmt"),
    [("bt709", "tv", "yuv420p"), ("bt470bg", "tv", "yuv420p"), ("smpte170m", "pc", "yuvj420p")],
)
def test_yuv420p_to_bgr_matches_swscale(portrait, space, tv_or_pc, in_fmt):
    matrix = YuvMatrix.for_tags(space, tv_or_pc)
    assert matrix is not None and matrix.full_range == (tv_or_pc == "pc")
    yuv = np.empty(yuv420p_bytes(W, H), dtype=np.uint8)
    bgr_to_yuv420p(portrait, matrix, yuv)
    ours = np.empty((H, W, 3), dtype=np.uint8)
    yuv420p_to_bgr(yuv, W, H, matrix, ours)
    theirs = _swscale(
        yuv.tobytes(), in_fmt, "bgr24", f"setparams=colorspace={space}:range={tv_or_pc},scale=flags=accurate_rnd"
    ).reshape(H, W, 3)
    diff = np.abs(ours.astype(np.int16) - theirs)
    assert diff.mean() < 1.5  # swscale upsamples chroma with its own filter: they differ at sharp colour edges
    assert np.percentile(diff, 99) <= 8
    # ... where ours is the closer to the picture the frame was made from
    assert np.abs(ours.astype(np.int16) - portrait).mean() < np.abs(theirs.astype(np.int16) - portrait).mean()


def test_round_trip_is_closer_than_swscale(portrait):
    start = np.empty(yuv420p_bytes(W, H), dtype=np.uint8)
    bgr_to_yuv420p(portrait, BT709_TV, start)
    bgr = np.empty((H, W, 3), dtype=np.uint8)
    yuv420p_to_bgr(start, W, H, BT709_TV, bgr)
    back = np.empty_like(start)
    bgr_to_yuv420p(bgr, BT709_TV, back)
    via_swscale = _swscale(
        _swscale(
            start.tobytes(), "yuv420p", "bgr24", "setparams=colorspace=bt709:range=tv,scale=flags=accurate_rnd"
        ).tobytes(),
        "bgr24",
        "yuv420p",
        "scale=out_color_matrix=bt709:out_range=tv:flags=accurate_rnd",
    )
    ours = np.abs(back.astype(np.int16) - start).mean()
    theirs = np.abs(via_swscale.astype(np.int16) - start).mean()
    assert ours < theirs


def test_conversion_is_deterministic_and_writes_only_out(portrait):
    yuv = np.empty(yuv420p_bytes(W, H), dtype=np.uint8)
    bgr_to_yuv420p(portrait, BT709_TV, yuv)
    first, second = np.zeros((H, W, 3), np.uint8), np.full((H, W, 3), 255, np.uint8)
    yuv420p_to_bgr(memoryview(yuv.tobytes()), W, H, BT709_TV, first)
    yuv420p_to_bgr(yuv, W, H, BT709_TV, second)
    assert np.array_equal(first, second)


def test_matrices_and_tags():
    assert YuvMatrix.for_tags("unknown", "unknown") == YuvMatrix(0.299, 0.114, False)  # BT.601, as swscale
    assert YuvMatrix.for_tags("unknown", "unknown", full_range_format=True) == YuvMatrix(0.299, 0.114, True)
    assert YuvMatrix.for_tags("bt709", "tv", full_range_format=True) == YuvMatrix(0.2126, 0.0722, True)
    assert YuvMatrix.for_tags("ycgco", "tv") is None
    assert YuvMatrix.for_tags("bt2020c", "tv") is None
    # white and black land on the coded extremes, grey on the chroma zero
    yuv = np.empty(yuv420p_bytes(2, 2), dtype=np.uint8)
    for bgr, expected in [(255, (235, 128)), (0, (16, 128))]:
        bgr_to_yuv420p(np.full((2, 2, 3), bgr, np.uint8), BT709_TV, yuv)
        assert list(yuv) == [expected[0]] * 4 + [expected[1]] * 2


def test_sizes_are_checked(portrait):
    with pytest.raises(ValueError, match="yuv420p frame has"):
        yuv420p_to_bgr(np.zeros(10, np.uint8), W, H, BT709_TV, np.empty((H, W, 3), np.uint8))
    with pytest.raises(ValueError, match="output"):
        yuv420p_to_bgr(np.zeros(yuv420p_bytes(W, H), np.uint8), W, H, BT709_TV, np.empty((H, W), np.uint8))
