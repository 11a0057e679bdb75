"""Frames in: the presenter's frames streamed from ffmpeg, and scheduled to the output's length.

Frames are never all held in memory: ``read_frames`` streams BGR frames from one ffmpeg process and
``ScheduledFrames`` replays them forward/backward through an on-disk spool.

Conventions
-----------
* Frames are BGR uint8 arrays of shape (height, width, 3), upright (rotation metadata applied) and of
  even width and height (at most one pixel column/row cropped at the right/bottom).
* Colours: the reader converts with the matrix the input is tagged with (BT.601 when untagged): itself for
  8-bit 4:2:0 video (``probe.DecodedYuv``, ``colour``), else through ffmpeg's swscale.
"""

from __future__ import annotations

import functools
import itertools
import re
import subprocess
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np
import structlog

from heygemd.errors import DecodeError
from heygemd.fsutil import InputFile
from heygemd.pipeline.colour import yuv420p_bytes, yuv420p_to_bgr
from heygemd.pipeline.ffmpeg_argv import Input, ffmpeg_command, file_input, rate_arg, raw_output
from heygemd.pipeline.ffmpeg_tools import ToolProcess, open_input, run_probe
from heygemd.pipeline.hw_codecs import Decoder, decoder_args
from heygemd.pipeline.probe import VideoInfo, decoder_max_pixels, refused_picture
from heygemd.pipeline.spool import CODECS, FrameSpool, SpoolCodec
from heygemd.settings import LoopMode

log = structlog.get_logger(__name__)

SHORTFALL_FRAMES = 2
SHORTFALL_RATIO = 0.01
"""read_frames pads a stream that ends early by at most max(SHORTFALL_FRAMES, SHORTFALL_RATIO * count)
frames (rounding of duration * fps); a larger gap means a damaged/truncated file: DecodeError."""

_TRANSPOSE = {90: "transpose=clock", 180: "hflip,vflip", 270: "transpose=cclock"}
_DECODE_TO_BGR = "scale=flags=accurate_rnd,format=bgr24"
"""ffmpeg's conversion of the frames ``read_frames`` does not convert itself (10-bit, 4:4:4, HDR, non-square
pixels, stills): accurate_rnd removes a ~2 level darkening that swscale's fast path adds per round trip."""


# --------------------------------------------------------------------------------------------------
# Reading frames


def _has_filter(name: str) -> bool:
    return name in _filters(tuple(ffmpeg_command([], ["-filters"])))


@functools.lru_cache(maxsize=4)
def _filters(argv: tuple[str, ...]) -> frozenset[str]:
    """The filter names ``argv`` (``ffmpeg -filters``) lists (asked once per ffmpeg binary and process)."""
    result = run_probe(argv, Path(argv[0]), timeout=30.0)
    return frozenset(re.findall(r"^\s*\S+\s+(\S+)\s", result.stdout.decode(errors="replace"), re.M))


def decode_filters(info: VideoInfo) -> str:
    """The -vf chain: (still rotation) -> (square pixels) -> (HDR tone-map) -> fps -> even crop."""
    parts: list[str] = []
    if info.is_still and info.rotation in _TRANSPOSE:
        parts.append(_TRANSPOSE[info.rotation])
    if info.square_size is not None:
        parts.append(f"scale={info.square_size[0]}:{info.square_size[1]},setsar=1")
    if info.hdr and _has_filter("zscale"):
        parts.append(
            "zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=hable:desat=0,"
            "zscale=t=bt709:m=bt709:r=tv,format=yuv420p"
        )
    if not info.is_still:
        parts.append(f"fps={rate_arg(info.fps)}")
    parts.append(f"crop={info.width}:{info.height}:0:0")
    return ",".join(parts)


def video_input(info: VideoInfo, media: InputFile, options: Sequence[str] = ()) -> Input:
    """``media`` (``info``'s file, open) as an input, after ``options``: stills are rotated by our own filter
    (ffmpeg 5.1 ignores EXIF, newer ones may not); the decoder refuses pictures far larger than the probe allowed
    (a stream may grow midway)."""
    still = ["-noautorotate"] if info.is_still else []
    return file_input(media, decoder_max_pixels(info.max_pixels), [*still, *options])


def read_frames(
    info: VideoInfo,
    decoder: Decoder = "cpu",
    *,
    yuv_sink: Callable[[np.ndarray], None] | None = None,
) -> Generator[np.ndarray, None, None]:
    """Yield exactly ``info.frame_count`` BGR frames (writable, (h, w, 3) uint8) from one ffmpeg process.

    The stream is resampled to ``info.fps`` (CFR), turned upright and cropped to even size. When
    ffmpeg delivers slightly fewer frames (duration rounding) the last frame is repeated; when it
    delivers far fewer, fails, or delivers none, DecodeError quotes ffmpeg's stderr. Closing the
    generator early kills and reaps ffmpeg. ``decoder="nvdec"`` decodes on the GPU (``hw_codecs``); the frames
    come back to system memory for the same filters, so they are the same up to the decoder's rounding.
    ffmpeg reads ``info.source`` (an open ``InputFile``: through its descriptor); its decoder refuses pictures
    far larger than ``info.max_pixels`` (``probe.decoder_max_pixels``), and a stream that needed one fails with
    PictureTooLarge.

    With ``info.yuv`` set, ffmpeg delivers the decoder's own 4:2:0 frames and they are converted to BGR here
    (``colour.yuv420p_to_bgr``, in the calling thread: OpenCV releases the GIL); otherwise ffmpeg converts.
    ``yuv_sink`` (only with ``info.yuv``) is handed each of those yuv420p frames (padding included) just before
    its BGR frame is yielded; the buffer is reused for the next frame.
    """
    if yuv_sink is not None and info.yuv is None:
        raise ValueError("yuv_sink needs a video whose frames are converted here (info.yuv)")
    if info.yuv is None:
        out_pix_fmt, chain = "bgr24", decode_filters(info) + "," + _DECODE_TO_BGR
        yuv = None
    else:
        out_pix_fmt, chain = info.yuv.pix_fmt, decode_filters(info)
        yuv = np.empty(yuv420p_bytes(info.width, info.height), dtype=np.uint8)
    with open_input(info.source) as media:
        decoder_options = decoder_args(decoder) if not info.is_still else []
        argv = ffmpeg_command(
            [video_input(info, media, decoder_options)],
            ["-map", f"0:{info.stream_index}", "-an", "-sn", "-dn", "-vf", chain, "-frames:v", str(info.frame_count)]
            + raw_output(out_pix_fmt),
        )
        proc = ToolProcess(argv, stdout=True, pass_fds=media.pass_fds)
        url = media.url
    delivered = 0
    last: np.ndarray | None = None
    try:
        while delivered < info.frame_count:
            frame = np.empty((info.height, info.width, 3), dtype=np.uint8)
            target = frame if yuv is None else yuv
            got = _read_into(proc.stdout, target.data.cast("B"))
            if got == 0:
                break
            if got < target.nbytes:
                proc.wait()
                raise _decode_failure(proc, info, url, f"ffmpeg ended in the middle of frame {delivered}")
            if yuv is not None:
                assert info.yuv is not None
                if yuv_sink is not None:
                    yuv_sink(yuv)
                yuv420p_to_bgr(yuv, info.width, info.height, info.yuv.matrix, frame)
            delivered += 1
            last = frame
            yield frame
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise DecodeError(f"ffmpeg did not exit after {delivered} frames", path=info.path) from None
        if code != 0:
            raise _decode_failure(proc, info, url, f"ffmpeg failed after {delivered} frames (exit {code})")
        shortfall = info.frame_count - delivered
        if last is None:
            raise _decode_failure(proc, info, url, "no frame could be decoded")
        if shortfall > max(SHORTFALL_FRAMES, SHORTFALL_RATIO * info.frame_count):
            raise _decode_failure(
                proc,
                info,
                url,
                f"only {delivered} of {info.frame_count} frames could be decoded; the file is damaged or truncated",
            )
        if shortfall > 0:
            log.debug("padding frame(s) by repeating the last", path=str(info.path), frames=shortfall)
        for _ in range(shortfall):
            if yuv_sink is not None and yuv is not None:
                yuv_sink(yuv)  # still the last complete frame: a read that got nothing left it as it was
            yield last.copy()
    finally:
        proc.kill()


def _decode_failure(proc: ToolProcess, info: VideoInfo, url: str, what: str) -> Exception:
    """PictureTooLarge when the decoder refused a picture larger than the limit (the frames it dropped are why
    the decode failed), else DecodeError saying ``what`` happened, with ffmpeg's last words (the input it read
    as ``url`` left out: the message names the file)."""
    tail = proc.stderr_tail()
    refused = refused_picture(tail, info.path, info.max_pixels)
    return refused if refused is not None else DecodeError(f"{what}: {tail.replace(url + ': ', '')}", path=info.path)


def _read_into(stream: IO[bytes], buffer: memoryview) -> int:
    """Fill ``buffer`` from ``stream``; return the bytes read (less than its size only at EOF)."""
    filled = 0
    while filled < len(buffer):
        n = stream.readinto(buffer[filled:])  # type: ignore[attr-defined]  # a pipe: a BufferedReader
        if not n:
            break
        filled += n
    return filled


# --------------------------------------------------------------------------------------------------
# Output schedule


def frame_schedule(n_source: int, n_out: int, mode: LoopMode) -> Iterator[int]:
    """The source frame index for each of ``n_out`` output frames.

    ``n_out <= n_source``: 0..n_out-1 (the video is trimmed). Otherwise ``pingpong`` runs
    0..n-1, n-2..1, 0..n-1, ... (no frame repeated at a turn) and ``loop`` runs 0..n-1, 0..n-1, ...
    A single source frame gives all zeros. Raises ValueError at once for bad arguments.
    """
    if n_source < 1:
        raise ValueError(f"n_source must be >= 1, got {n_source}")
    if n_out < 0:
        raise ValueError(f"n_out must be >= 0, got {n_out}")
    if mode not in ("pingpong", "loop"):
        raise ValueError(f"mode must be 'pingpong' or 'loop', got {mode!r}")
    if n_source == 1:
        return itertools.repeat(0, n_out)
    if mode == "loop":
        return (i % n_source for i in range(n_out))
    period = 2 * n_source - 2
    return (k if k < n_source else period - k for k in (i % period for i in range(n_out)))


# --------------------------------------------------------------------------------------------------
# Scheduled frames with a spool


class ScheduledFrames:
    """Iterate ``(source_index, frame)`` for ``n_out`` output frames of ``info`` with bounded memory.

    When the schedule only moves forward (the audio is not longer than the video, or a still) the
    frames stream straight from ``read_frames``. Otherwise the first pass writes each decoded frame
    to an anonymous spool file in ``work_dir`` (opened with O_TMPFILE/unlinked at once, so it
    vanishes even if the process is killed) and later frames are read back with ``os.pread``.

    Disk use of the spool (``spool.FrameSpool``), per source frame: ``codec="raw"`` (the default here) takes
    exactly width*height*3 bytes (1080p: 6.2 MB, i.e. 187 MB per second of 30 fps video) and costs no CPU;
    the lossless codecs are fed the decoder's own yuv420p frames (``VideoInfo.yuv``; else BGR) and
    give back exactly the forward frames: ``"x264"`` (the ``video.spool`` default of a render) takes 7-14 % of
    raw on camera-like footage, ``"ffv1"`` 8-17 %, ``"utvideo"`` 11-19 %. On extreme grain ``x264`` turns
    near-lossless after its first segment (``spool.TARGET_RATIO``). Before the spool is written its
    expected size is checked against the free space of ``work_dir`` (DiskFull when it cannot fit), and again
    before every segment. Use it as a context manager; leaving it kills ffmpeg and frees the spool. Iterate once.
    """

    def __init__(
        self,
        info: VideoInfo,
        n_out: int,
        mode: LoopMode,
        work_dir: Path,
        *,
        codec: SpoolCodec = "raw",
        decoder: Decoder = "cpu",
    ):
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
        self.info = info
        self.n_out = int(n_out)
        self.mode = mode
        self.work_dir = Path(work_dir)
        self.codec: SpoolCodec = codec
        self.decoder: Decoder = decoder
        self._schedule = frame_schedule(info.frame_count, self.n_out, mode)  # validates arguments
        self._source: Generator[np.ndarray, None, None] | None = None
        self._iter: Generator[tuple[int, np.ndarray], None, None] | None = None
        self._spool: FrameSpool | None = None
        self._started = False

    @property
    def needs_spool(self) -> bool:
        """Whether the schedule goes backward (audio longer than a multi-frame video)."""
        return self.info.frame_count > 1 and self.n_out > self.info.frame_count

    @property
    def spool_bytes(self) -> int:
        """Current size of the spool file in bytes (0 when there is none or it is closed)."""
        return self._spool.nbytes if self._spool is not None else 0

    def __len__(self) -> int:
        return self.n_out

    def __enter__(self) -> "ScheduledFrames":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop ffmpeg (if still decoding) and delete the spool. Safe to call more than once."""
        iterator, self._iter = self._iter, None
        if iterator is not None:
            iterator.close()
        self._release()

    def _release(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            source.close()  # runs read_frames' finally: kills and reaps ffmpeg
        if self._spool is not None:
            self._spool.close()  # the file was never linked into work_dir: closing frees it

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if self._started:
            raise RuntimeError("ScheduledFrames can be iterated only once")
        self._started = True
        if self.info.frame_count == 1:
            self._iter = self._repeat_single()
        elif self.needs_spool:
            self._iter = self._spooled()
        else:
            self._iter = self._forward()
        return self._iter

    def _repeat_single(self) -> Generator[tuple[int, np.ndarray], None, None]:
        if self.n_out == 0:
            return
        self._source = read_frames(self.info, self.decoder)
        frame = next(self._source)
        self._release()
        for _ in range(self.n_out):
            yield 0, frame.copy()

    def _forward(self) -> Generator[tuple[int, np.ndarray], None, None]:
        self._source = read_frames(self.info, self.decoder)
        try:
            for index in self._schedule:  # 0..n_out-1 with n_out <= frame_count
                yield index, next(self._source)
        finally:
            self._release()

    def _spooled(self) -> Generator[tuple[int, np.ndarray], None, None]:
        n_source = self.info.frame_count
        yuv = self.info.yuv if self.codec != "raw" else None
        self._spool = FrameSpool(
            self.work_dir,
            self.info.width,
            self.info.height,
            rate_arg(self.info.fps),
            self.codec,
            source=self.info.path,
            frames_expected=n_source,
            yuv=None if yuv is None else yuv.matrix,
        )
        sink = None if yuv is None else self._spool.append  # the decoder's own 4:2:0 frames
        self._source = read_frames(self.info, self.decoder, yuv_sink=sink)
        try:
            # The schedule starts 0..n_source-1 in both modes: decode, spool, and pass each frame on.
            for index in range(n_source):
                frame = next(self._source)
                if sink is None:
                    self._spool.append(frame)  # before yielding: the consumer may draw on the frame
                yield index, frame
            source, self._source = self._source, None
            source.close()
            for index in itertools.islice(self._schedule, n_source, None):
                yield index, self._spool.load(index)
        finally:
            self._release()
