"""The decoder's own 4:2:0 frames, tapped for the ping-pong spool.

A spooled read (``frames.read_frames`` with a ``yuv_sink``) has its one ffmpeg write every frame twice: as BGR
to stdout (the forward pass) and, split off before the BGR conversion, as the decoder's yuv420p to a second
pipe (``YuvTap``). The spool stores those (half the bytes of BGR, and no colour round trip) and converts them
back with the same conversion and colour tags (``yuv_spool_format``), so backward frames equal forward frames
bit for bit.
"""

from __future__ import annotations

import json
import os
import select
from collections.abc import Callable
from pathlib import Path

from heygemd.errors import DecodeError
from heygemd.pipeline.ffmpeg_tools import find_tool, media_url, run_probe
from heygemd.pipeline.probe import VideoInfo
from heygemd.pipeline.spool import SpoolPixFmt

_SPOOL_COLOUR_SPACES = frozenset(
    {"unknown", "bt709", "fcc", "bt470bg", "smpte170m", "smpte240m", "ycgco", "bt2020nc", "bt2020c"}
)
_SPOOL_RANGES = frozenset({"unknown", "tv", "pc"})


def yuv_spool_format(info: VideoInfo) -> tuple[SpoolPixFmt, str] | None:
    """The decoder's pixel format (yuv420p, or yuvj420p for full range) and the ``setparams`` filter that tags a
    spooled frame as the decoder tagged the forward frames; None when the spool must take BGR frames instead.

    The BGR conversion picks its matrix and range from these tags, so with them a yuv420p frame read back from
    the spool converts to exactly the BGR of the forward pass. Only 8-bit 4:2:0 video with square pixels and
    no HDR tone-mapping is spooled as yuv420p (the decoder's frames reach the conversion unchanged); the tags
    are those of the first decoded frame (ffprobe).
    """
    if info.is_still or info.hdr or info.square_size is not None or info.pix_fmt not in ("yuv420p", "yuvj420p"):
        return None
    result = run_probe(
        [
            find_tool("ffprobe"),
            "-v",
            "error",
            "-select_streams",
            str(info.stream_index),
            "-read_intervals",
            "%+#1",
            "-show_entries",
            "frame=pix_fmt,color_space,color_range",
            "-of",
            "json",
            media_url(info.path),
        ],
        info.path,
    )
    try:
        frames = json.loads(result.stdout.decode("utf-8", errors="replace") or "{}").get("frames") or []
    except json.JSONDecodeError:
        frames = []
    pix_fmt = frames[0].get("pix_fmt") if result.returncode == 0 and frames else None
    if pix_fmt not in ("yuv420p", "yuvj420p"):
        return None  # the BGR spool works for whatever read_frames can decode
    space, tv_or_pc = frames[0].get("color_space", "unknown"), frames[0].get("color_range", "unknown")
    if space not in _SPOOL_COLOUR_SPACES or tv_or_pc not in _SPOOL_RANGES:
        return None
    return ("yuv420p" if pix_fmt == "yuv420p" else "yuvj420p"), f"setparams=colorspace={space}:range={tv_or_pc}"


class YuvTap:
    """The second output of a spooled read: the decoder's yuv420p frames on a pipe, each handed whole to a sink."""

    def __init__(self, frame_bytes: int, sink: Callable[[memoryview], None], path: Path):
        self.path = path
        """The user's video, named by errors."""
        self.read_fd, self.write_fd = os.pipe()
        self.frames = 0
        """Frames handed to the sink."""
        self.eof = False
        self._sink = sink
        self._frame = memoryview(bytearray(frame_bytes))
        self._filled = 0

    def pump(self) -> None:
        """Read once from the pipe (blocks until it holds data or ends); hand on the frame it completes."""
        n = os.readv(self.read_fd, [self._frame[self._filled :]])
        if n == 0:
            self.eof = True
            return
        self._filled += n
        if self._filled == len(self._frame):
            self._filled = 0
            self._sink(self._frame)
            self.frames += 1

    def drain(self) -> None:
        """Read to the end of the pipe."""
        while not self.eof:
            self.pump()
        if self._filled:
            raise DecodeError(f"ffmpeg ended in the middle of yuv frame {self.frames}", path=self.path)

    def repeat_last(self) -> None:
        """Hand the last complete frame on once more (padding after a short stream)."""
        self._sink(self._frame)
        self.frames += 1

    def close_write_end(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self) -> None:
        self.close_write_end()
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1


def read_into_tapped(fd: int, buffer: memoryview, tap: YuvTap) -> int:
    """Fill ``buffer`` from the descriptor ``fd`` (return the bytes read: fewer only at EOF) while serving
    ``tap`` whenever its pipe has data, so ffmpeg never blocks on one output while we wait on the other (the
    order it writes them in is its own)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.register(tap.read_fd, select.POLLIN)
    filled = 0
    while filled < len(buffer):
        if not tap.eof:
            ready = {ready_fd for ready_fd, _ in poller.poll()}  # readable, or its writer gone (POLLHUP)
            if tap.read_fd in ready:
                tap.pump()
                if tap.eof:
                    poller.unregister(tap.read_fd)
            if fd not in ready:
                continue
        n = os.readv(fd, [buffer[filled:]])
        if not n:
            break
        filled += n
    return filled
