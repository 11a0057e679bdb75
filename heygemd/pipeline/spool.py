"""The frame spool behind ping-pong and loop: decoded frames kept on disk so they can be replayed in any order.

One anonymous file in the work folder (``tempfile.TemporaryFile``: never visible by name, gone when closed or
when the process dies) holds the frames of one video, appended in source order, read back by index.

Frames come in as the decoder delivered them: BGR (width*height*3 bytes) or, for 8-bit 4:2:0 sources
(``probe.DecodedYuv``), the decoder's own yuv420p frames before their conversion to BGR (half the bytes;
``frames.read_frames`` hands them over). Either way ``load`` returns BGR: a yuv spool converts a frame back with
the conversion (``colour.yuv420p_to_bgr``) and matrix (``yuv``) that made the forward frame, so the backward
frames are the forward ones bit for bit.

* ``raw``: each BGR frame as it is, width*height*3 bytes (1080p: 6.2 MB a frame); no CPU cost.
* ``x264`` / ``ffv1`` / ``utvideo``: lossless codecs (x264 at ``-qp 0``; the frames come back bit for bit).
  Frames are encoded by ffmpeg in segments of a few frames (``segment_frames``, about ``SEGMENT_BYTES`` of the
  frames as appended), each segment a small NUT stream appended to the file (x264: one IDR frame, then P/B
  frames). Reading a frame decodes its whole segment once (an ffmpeg reading that byte range of the file), so
  a backward pass costs one decode per frame and memory holds one segment. A BGR-fed ``x264`` spool (10-bit,
  4:4:4, HDR sources) is stored as ``ffv1`` would store it: lossless H.264 of BGR is larger than ffv1.
  Measured (bench/README.md, "Spool size"), as % of the raw BGR frames: ``x264`` of yuv420p 8-9 %
  on the demo presenter and 8-14 % on grainy camera-like H.264 footage at phone bitrates, at 0.4-0.7x the CPU
  of ``ffv1`` of BGR (the old default: 14-37 %); ``ffv1`` of yuv420p 8-17 %, ``utvideo`` 11-19 % at the least
  CPU to write. Extreme grain (sigma 8 kept by CRF 18) takes about 24 % losslessly with any codec: there the
  ``x264`` spool turns near-lossless after the first segment that ends above ``TARGET_RATIO`` (about 12 % from
  there on), its frames within a few levels of the forward ones.

Disk space is checked before anything is written (the expected size, ``EXPECTED_RATIO`` of the raw BGR size
for the codecs) and again before every segment (room for the segment as raw BGR), so a full disk gives
DiskFull before it fills rather than a failed write.
"""

from __future__ import annotations

import io
import os
import tempfile
from array import array
from pathlib import Path
from typing import BinaryIO, Literal, cast

import numpy as np
import structlog

from heygemd.errors import DecodeError, DiskFull, EncodeError
from heygemd.pipeline.colour import YuvMatrix, yuv420p_bytes, yuv420p_to_bgr
from heygemd.pipeline.ffmpeg_argv import Input, ffmpeg_command, raw_input, raw_output
from heygemd.pipeline.ffmpeg_tools import ToolProcess, disk_error

log = structlog.get_logger(__name__)

SpoolCodec = Literal["raw", "x264", "ffv1", "utvideo"]
CODECS: tuple[SpoolCodec, ...] = ("raw", "x264", "ffv1", "utvideo")

SEGMENT_BYTES = 24 << 20
"""Raw bytes of one codec segment as appended (also the memory a read-back holds): of yuv420p 720p 18 frames, 1080p
8, 360p 32 (the cap); of BGR half as many. Each segment costs an ffmpeg start to write and one to read back (~0.1 s
of CPU each here), so fewer, longer segments are cheaper, and x264 compresses them better."""
MAX_SEGMENT_FRAMES = 32
EXPECTED_RATIO: dict[tuple[str, str], float] = {
    ("raw", "bgr24"): 1.0,
    ("x264", "yuv420p"): 0.3,
    ("ffv1", "yuv420p"): 0.3,
    ("utvideo", "yuv420p"): 0.35,
    ("x264", "bgr24"): 0.4,
    ("ffv1", "bgr24"): 0.4,
    ("utvideo", "bgr24"): 0.45,
}
"""Spool size / raw BGR size assumed by the free-space check before the spool is written, by codec and the
pixel format fed to it: a margin over the worst measured (extreme grain, bench/README.md): x264 of yuv420p
24 %, ffv1 24 %, utvideo 19 % (less grainy footage); of BGR ffv1 37 %, utvideo 39 %."""

TARGET_RATIO = 0.15
"""The size an ``x264`` spool of yuv420p aims at, of the raw BGR frames. When a segment ends larger, the segments
after it are encoded near-losslessly, at ``NEAR_LOSSLESS_QP``: footage whose grain makes even the lossless spool
larger (extreme grain, sigma 8 kept by CRF 18: 24 % lossless) then takes about 12 % from there on."""
NEAR_LOSSLESS_QP = 12
"""x264's quantiser for those segments. At 720p on extreme grain: 11.7 % of raw, and the decoder's values moved by a
mean of 0.68 levels, at most 7 (qp 8: 15.5 %, 0.44, 5), far below the grain itself."""

_FFV1_BGR = ["-c:v", "ffv1", "-level", "3", "-g", "1", "-slices", "4", "-pix_fmt", "bgr0"]
_X264_YUV = ["-c:v", "libx264", "-preset", "superfast", "-x264-params", "cabac=0"]
_CODEC_ARGS: dict[tuple[str, str], list[str]] = {
    ("x264", "yuv420p"): [*_X264_YUV, "-qp", "0"],
    ("ffv1", "yuv420p"): ["-c:v", "ffv1", "-level", "3", "-g", "1", "-slices", "4"],
    ("utvideo", "yuv420p"): ["-c:v", "utvideo", "-pred", "median"],
    ("x264", "bgr24"): _FFV1_BGR,
    ("ffv1", "bgr24"): _FFV1_BGR,
    ("utvideo", "bgr24"): ["-c:v", "utvideo", "-pred", "median", "-pix_fmt", "gbrp"],
}
"""Encoder options by codec and input pixel format, all lossless (but see ``TARGET_RATIO``). x264: superfast
(ultrafast is 15 % larger) with CAVLC instead of CABAC: 12 % larger but half the CPU to write and to read
(CABAC at these bitrates costs more to decode than ffv1 of BGR)."""


def free_bytes(directory: Path) -> int:
    """Free space (for unprivileged users) of the filesystem ``directory`` is on, or would be created on."""
    probe_dir = Path(directory)
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    stats = os.statvfs(probe_dir)
    return stats.f_bavail * stats.f_frsize


def require_free_space(directory: Path, needed: int, what: str = "the frame spool") -> None:
    """DiskFull naming ``directory`` when fewer than ``needed`` bytes are free there."""
    free = free_bytes(directory)
    if needed > free:
        raise DiskFull(
            f"{what} needs {needed / 1e9:.2f} GB but only {free / 1e9:.2f} GB are free",
            path=directory,
            hint="Free space in the temp folder, or point it elsewhere (TMPDIR), or use a shorter audio.",
        )


def segment_frames(frame_bytes: int) -> int:
    """Frames per codec segment for frames of ``frame_bytes``."""
    return max(2, min(MAX_SEGMENT_FRAMES, SEGMENT_BYTES // max(frame_bytes, 1)))


class FrameSpool:
    """Append frames of one size in order, then ``load(index)`` any of them as BGR. Close to free the file.
    ``yuv``: the frames are yuv420p of this matrix (the codecs only), else BGR."""

    def __init__(
        self,
        work_dir: Path,
        width: int,
        height: int,
        fps_arg: str,
        codec: SpoolCodec,
        *,
        source: Path,
        frames_expected: int,
        yuv: YuvMatrix | None = None,
    ):
        self.layout = "bgr24" if yuv is None else "yuv420p"
        """The key of EXPECTED_RATIO and the codec options (a full-range yuvj420p frame is laid out as yuv420p)."""
        if (codec, self.layout) not in EXPECTED_RATIO:
            raise ValueError(f"codec must be one of {', '.join(CODECS)} ('raw' takes BGR), got {codec!r}/{self.layout}")
        self.work_dir = Path(work_dir)
        self.width, self.height = width, height
        self.bgr_bytes = width * height * 3
        self.yuv = yuv
        self.frame_bytes = self.bgr_bytes if yuv is None else yuv420p_bytes(width, height)
        """Bytes of one appended frame."""
        self.fps_arg = fps_arg
        self.codec = codec
        self.source = source
        """The user's video, named by errors."""
        self.segment = 1 if codec == "raw" else segment_frames(self.frame_bytes)
        expected = frames_expected * self.bgr_bytes * EXPECTED_RATIO[codec, self.layout]
        require_free_space(self.work_dir, int(expected))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO = tempfile.TemporaryFile(prefix=".spool-", dir=self.work_dir, buffering=0)
        self._count = 0
        self._starts = array("q")
        """Byte offset of each segment (raw: of each frame); the file's size ends the last one."""
        self._encoder: ToolProcess | None = None
        self.qp = 0
        """x264's quantiser for the next segment: 0 (lossless) unless a segment ended above ``TARGET_RATIO``."""
        self._cached_segment = -1
        self._cache = np.empty((0, self.frame_bytes), dtype=np.uint8)
        """The frames of the segment decoded last, as appended."""

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Current size of the spool file (0 once closed)."""
        if self._file.closed:
            return 0
        return os.fstat(self._file.fileno()).st_size

    def append(self, frame: np.ndarray) -> None:
        """Store the next frame: a (height, width, 3) uint8 BGR array, or (``yuv``) a yuv420p frame's bytes."""
        data = np.ascontiguousarray(frame).data.cast("B")
        if len(data) != self.frame_bytes:
            raise ValueError(f"a {self.layout} frame of {self.width}x{self.height} has {self.frame_bytes} bytes")
        if self._count % self.segment == 0:
            self._finish_segment()
            self._starts.append(self.nbytes)
            if self.codec != "raw":
                require_free_space(self.work_dir, self.segment * self.bgr_bytes)
                self._encoder = self._start_encoder()
        try:
            if self._encoder is None:
                _pwrite_all(self._file.fileno(), data, self._starts[-1])
            else:
                self._encoder.stdin.write(data)
        except BrokenPipeError:
            raise self._encoder_failure("the spool encoder stopped reading") from None
        except OSError as exc:
            raise disk_error(exc, self.work_dir, "writing the frame spool") from exc
        self._count += 1

    def finish(self) -> None:
        """End the last segment: every appended frame can be loaded. Called by the first ``load``."""
        self._finish_segment()

    def load(self, index: int) -> np.ndarray:
        """A new (writable) array holding frame ``index``."""
        if not 0 <= index < self._count:
            raise IndexError(f"frame {index} is not in the spool ({self._count} frames)")
        self.finish()
        segment, offset = divmod(index, self.segment)
        end = self._starts[segment + 1] if segment + 1 < len(self._starts) else self.nbytes
        if self.codec == "raw":
            frame = np.empty((self.height, self.width, 3), dtype=np.uint8)
            _pread_all(self._file.fileno(), frame.data.cast("B"), self._starts[segment])
            return frame
        if segment != self._cached_segment:
            self._decode_segment(segment, self._starts[segment], end)
        if self.yuv is None:
            return self._cache[offset].reshape(self.height, self.width, 3).copy()
        frame = np.empty((self.height, self.width, 3), dtype=np.uint8)
        yuv420p_to_bgr(self._cache[offset], self.width, self.height, self.yuv, frame)
        return frame

    def close(self) -> None:
        """Stop a running encoder and free the file. Safe to call more than once."""
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            encoder.kill()
        if not self._file.closed:
            self._file.close()
        self._cache = self._cache[:0]

    # ---------------------------------------------------------------- codec segments

    def _start_encoder(self) -> ToolProcess:
        # the layout: yuvj420p frames go in as yuv420p, the same bytes, unconverted (``yuv`` knows the range)
        codec = _CODEC_ARGS[self.codec, self.layout] if self.qp == 0 else [*_X264_YUV, "-qp", str(self.qp)]
        argv = ffmpeg_command(
            [raw_input(self.layout, self.width, self.height, self.fps_arg)], [*codec, "-f", "nut", "pipe:1"]
        )
        # stdout is the spool file itself: the segment is appended at its end (the shared file offset).
        os.lseek(self._file.fileno(), 0, os.SEEK_END)
        return ToolProcess(argv, stdin=True, stdout_fd=self._file.fileno())

    def _finish_segment(self) -> None:
        encoder = self._encoder
        if encoder is None:
            return
        try:
            encoder.stdin.close()
        except BrokenPipeError:
            raise self._encoder_failure("the spool encoder stopped reading") from None
        code = encoder.wait()
        self._encoder = None
        if code != 0:
            tail = encoder.stderr_tail()
            encoder.kill()
            if "no space left" in tail.lower():
                raise DiskFull(f"no space left while writing the frame spool: {tail}", path=self.work_dir)
            raise EncodeError(f"the spool encoder failed (exit {code}): {tail}", path=self.source)
        frames = self._count - (len(self._starts) - 1) * self.segment
        ratio = (self.nbytes - self._starts[-1]) / (frames * self.bgr_bytes)
        if (self.codec, self.layout) == ("x264", "yuv420p") and ratio > TARGET_RATIO and self.qp == 0:
            self.qp = NEAR_LOSSLESS_QP
            log.info("spool.near_lossless", path=str(self.source), segment_ratio=round(ratio, 3), qp=self.qp)

    def _encoder_failure(self, what: str) -> Exception:
        encoder, self._encoder = self._encoder, None
        tail = ""
        if encoder is not None:
            encoder.kill()
            tail = encoder.stderr_tail()
        if "no space left" in tail.lower():
            return DiskFull(f"no space left while writing the frame spool: {tail}", path=self.work_dir)
        return EncodeError(f"{what}: {tail}", path=self.source)

    def _decode_segment(self, segment: int, start: int, end: int) -> None:
        count = min(self.segment, self._count - segment * self.segment)
        if len(self._cache) < self.segment:
            self._cache = np.empty((self.segment, self.frame_bytes), dtype=np.uint8)
        fd = self._file.fileno()
        segment_url = f"subfile,,start,{start},end,{end},,:/proc/self/fd/{fd}"
        argv = ffmpeg_command([Input(segment_url, ["-f", "nut"])], raw_output(self.layout))
        self._cached_segment = -1
        proc = ToolProcess(argv, stdout=True, pass_fds=(fd,))
        stream = cast(io.BufferedIOBase, proc.stdout)
        try:
            for i in range(count):
                view = self._cache[i].data.cast("B")
                got = 0
                while got < len(view):
                    n = stream.readinto(view[got:])
                    if not n:
                        break
                    got += n
                if got < len(view):
                    proc.wait()
                    raise DecodeError(
                        f"segment {segment} of the frame spool ended after {i} frames: {proc.stderr_tail()}",
                        path=self.source,
                    )
            code = proc.wait()
            if code != 0:
                raise DecodeError(
                    f"the frame spool could not be read (exit {code}): {proc.stderr_tail()}", path=self.source
                )
        finally:
            proc.kill()
        self._cached_segment = segment


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    written = 0
    while written < len(data):
        written += os.pwrite(fd, data[written:], offset + written)


def _pread_all(fd: int, buffer: memoryview, offset: int) -> None:
    filled = 0
    while filled < len(buffer):
        n = os.preadv(fd, [buffer[filled:]], offset + filled)
        if n == 0:
            raise OSError(f"spool ended at {offset + filled} bytes")
        filled += n
