"""Colour conversion between the 8-bit 4:2:0 frames ffmpeg decodes and encodes and the engines' BGR frames.

OpenCV does the arithmetic (a resize of the chroma planes and one matrix per pixel) and releases the GIL, so
the decode and encode stages convert in their own threads, for less CPU than swscale with ``accurate_rnd`` and
outside ffmpeg's single filter thread (measured in bench/README.md, "Colour conversions").

Conventions
-----------
* A yuv420p frame is one C-contiguous uint8 buffer of ``width * height * 3 // 2`` bytes: the Y plane, then
  U (Cb), then V (Cr), each chroma plane at half width and half height, as ffmpeg's rawvideo lays it out.
* ``YuvMatrix`` names the matrix (the Kr/Kb pair of the standard) and the range: limited ("tv": Y 16-235,
  chroma 16-240) or full ("pc": 0-255).
* Each chroma sample stands for the centre of its 2x2 block of pixels, as swscale (ffmpeg 5.1) treats it
  both ways. Through these two functions a frame's round trip (yuv420p -> BGR -> yuv420p) is closer to where it
  started than through swscale's: mean error 0.003 luma / 0.08 chroma levels, against 0.86 / 0.76.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

_KR_KB = {
    "bt709": (0.2126, 0.0722),
    "bt470bg": (0.299, 0.114),
    "smpte170m": (0.299, 0.114),
    "fcc": (0.30, 0.11),
    "smpte240m": (0.212, 0.087),
    "bt2020nc": (0.2627, 0.0593),
}
"""The luma weights of red and blue for each ffmpeg ``color_space`` converted here (ycgco and bt2020c are not
a Kr/Kb matrix: ffmpeg converts those)."""

UNTAGGED_SPACE = "bt470bg"
"""The matrix of an untagged frame: BT.601, as swscale assumes."""


@dataclass(frozen=True)
class YuvMatrix:
    """A Y'CbCr matrix and range: ``kr``/``kb`` are the luma weights of red and blue; ``full_range`` is JPEG's
    0-255 coding instead of the limited 16-235/16-240."""

    kr: float
    kb: float
    full_range: bool = False

    @classmethod
    def for_tags(cls, color_space: str, color_range: str, *, full_range_format: bool = False) -> YuvMatrix | None:
        """The matrix for ffmpeg's frame tags (``color_space`` "unknown" is BT.601; ``color_range`` "unknown" is
        limited) and pixel format (``full_range_format``: a full-range one such as yuvj420p, whatever its range tag);
        None for a colour space this module does not convert."""
        space = UNTAGGED_SPACE if color_space in ("unknown", "unspecified", "") else color_space
        if space not in _KR_KB or color_range not in ("tv", "pc", "unknown", "unspecified", ""):
            return None
        kr, kb = _KR_KB[space]
        full = color_range == "pc" or full_range_format
        return cls(kr, kb, full)

    def _scales(self) -> tuple[float, float, float, float]:
        """(luma scale, luma offset, chroma scale, chroma offset) from 0-255 R'G'B' to the coded levels."""
        if self.full_range:
            return 1.0, 0.0, 1.0, 128.0
        return 219.0 / 255.0, 16.0, 224.0 / 255.0, 128.0

    @cached_property
    def from_bgr(self) -> np.ndarray:
        """The 3x4 matrix taking (B, G, R, 1) to (Y, Cb, Cr) levels."""
        kr, kb = self.kr, self.kb
        kg = 1.0 - kr - kb
        y_scale, y_offset, c_scale, c_offset = self._scales()
        rgb = np.array(
            [
                [kr, kg, kb],
                [-kr / (2 * (1 - kb)), -kg / (2 * (1 - kb)), 0.5],
                [0.5, -kg / (2 * (1 - kr)), -kb / (2 * (1 - kr))],
            ]
        ) * np.array([[y_scale], [c_scale], [c_scale]])
        return np.hstack([rgb[:, ::-1], np.array([[y_offset], [c_offset], [c_offset]])]).astype(np.float32)

    @cached_property
    def to_bgr(self) -> np.ndarray:
        """The 3x4 matrix taking (Y, Cb, Cr, 1) levels to (B, G, R)."""
        forward = self.from_bgr.astype(np.float64)
        inverse = np.linalg.inv(forward[:, :3])
        return np.hstack([inverse, -inverse @ forward[:, 3:]]).astype(np.float32)


BT709_TV = YuvMatrix(0.2126, 0.0722)
"""What heygemd encodes: BT.709, limited range (tagged so by ``encode``)."""


def yuv420p_bytes(width: int, height: int) -> int:
    """The size of one yuv420p frame (``width`` and ``height`` even)."""
    return width * height * 3 // 2


def _planes(buffer: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    flat = buffer.reshape(-1)
    if flat.size != yuv420p_bytes(width, height):
        raise ValueError(f"a {width}x{height} yuv420p frame has {yuv420p_bytes(width, height)} bytes, got {flat.size}")
    luma, chroma = width * height, width * height // 4
    return (
        flat[:luma].reshape(height, width),
        flat[luma : luma + chroma].reshape(height // 2, width // 2),
        flat[luma + chroma :].reshape(height // 2, width // 2),
    )


def yuv420p_to_bgr(yuv: np.ndarray | memoryview, width: int, height: int, matrix: YuvMatrix, out: np.ndarray) -> None:
    """Convert one yuv420p frame into ``out``, a (height, width, 3) uint8 BGR array (rounded, saturated).

    Chroma is interpolated bilinearly at the luma positions. The result depends only on the
    bytes and the matrix, so a frame read back from a spool of those bytes converts to the same BGR, bit for bit.
    """
    y, u, v = _planes(np.frombuffer(yuv, dtype=np.uint8), width, height)
    if out.shape != (height, width, 3) or out.dtype != np.uint8:
        raise ValueError(f"expected a ({height}, {width}, 3) output, got {out.shape}")
    size = (width, height)
    u_full = cv2.resize(u, size, interpolation=cv2.INTER_LINEAR)
    v_full = cv2.resize(v, size, interpolation=cv2.INTER_LINEAR)
    cv2.merge([y, u_full, v_full], dst=out)
    cv2.transform(out, matrix.to_bgr, dst=out)


def bgr_to_yuv420p(frame: np.ndarray, matrix: YuvMatrix, out: np.ndarray) -> None:
    """Convert a (height, width, 3) uint8 BGR frame into ``out``, a yuv420p buffer of ``yuv420p_bytes``.

    Luma per pixel; each chroma sample from the mean of its 2x2 block of pixels (the box filter of a 2:1
    reduction), rounded and saturated.
    """
    height, width = frame.shape[:2]
    y, u, v = _planes(out, width, height)
    m = matrix.from_bgr
    # One 3x4 transform and a channel copy: OpenCV's 1x4 transform has no vector path and costs 4x as much.
    cv2.extractChannel(cv2.transform(frame, m), 0, dst=y)
    half = cv2.transform(cv2.resize(frame, (width // 2, height // 2), interpolation=cv2.INTER_AREA), m)
    cv2.extractChannel(half, 1, dst=u)
    cv2.extractChannel(half, 2, dst=v)
