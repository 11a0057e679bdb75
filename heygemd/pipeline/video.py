"""Streaming video I/O with ffmpeg: probe, frame reader, output schedule, spool, writer, poster.

Frames are never all held in memory: ``read_frames`` streams BGR frames from one ffmpeg process,
``ScheduledFrames`` replays them forward/backward through an on-disk spool, and ``VideoWriter`` pipes
frames into one ffmpeg process that also muxes the original audio. Every output is written under a
temporary name in its final directory and renamed into place only when complete.

Conventions
-----------
* Frames are BGR uint8 arrays of shape (height, width, 3), upright (rotation metadata applied) and of
  even width and height (at most one pixel column/row cropped at the right/bottom).
* ``VideoInfo.rotation`` is the clockwise rotation, in degrees (0/90/180/270), that turns the stored
  pixels upright -- the angle ffmpeg's autorotate applies. iPhone portrait videos read 90.
* Colours: the writer converts BGR to yuv420p with the BT.709 matrix (limited range) and tags the
  stream so; the reader converts with the matrix the input is tagged with (BT.601 when untagged).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import struct
import subprocess
import tempfile
from array import array
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Generator, Iterator, Literal

import cv2
import numpy as np

from heygemd.errors import DecodeError, DiskFull, EncodeError, NoAudioStream, NotMedia, NoVideoStream
from heygemd.pipeline.ffmpeg_tools import ToolProcess, find_tool, is_disk_full, media_url, run_probe

__all__ = [
    "VideoInfo",
    "probe_video",
    "read_frames",
    "frame_schedule",
    "output_frame_count",
    "ScheduledFrames",
    "VideoWriter",
    "write_poster",
    "plain_transcode",
    "top_level_atoms",
    "find_tool",
]

log = logging.getLogger(__name__)

MIN_FPS = 1.0
MAX_FPS = 60.0
VFR_TOLERANCE = 0.01
"""Relative difference between r_frame_rate and avg_frame_rate above which a stream counts as VFR."""

STILL_FORMATS = re.compile(r"^(image2|[a-z0-9]+_pipe)$")
"""ffprobe format names of single-image demuxers (png_pipe, jpeg_pipe, webp_pipe, bmp_pipe, image2, ...)."""

NOT_MEDIA_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf", "ass", "srt", "webvtt", "subviewer", "lrc"})
"""Formats ffprobe 'recognises' in plain text files (ANSI art, subtitles): not presenter media."""

NOT_MEDIA_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})

HDR_TRANSFERS = frozenset({"smpte2084", "arib-std-b67"})
"""color_transfer values of HDR (PQ, HLG) video, tone-mapped to SDR when ffmpeg has zscale."""

SHORTFALL_FRAMES = 2
SHORTFALL_RATIO = 0.01
"""read_frames pads a stream that ends early by at most max(SHORTFALL_FRAMES, SHORTFALL_RATIO * count)
frames (rounding of duration * fps); a larger gap means a damaged/truncated file: DecodeError."""

_TRANSPOSE = {90: "transpose=clock", 180: "hflip,vflip", 270: "transpose=cclock"}

_ENCODE_COLOUR = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]
_ENCODE_FILTER = "scale=out_color_matrix=bt709:out_range=tv:flags=accurate_rnd,format=yuv420p"
_DECODE_TO_BGR = "scale=flags=accurate_rnd,format=bgr24"
"""accurate_rnd on both conversions removes a ~2 level darkening that swscale's fast path adds per round
trip (BGR -> yuv420p -> BGR mean error 1.9 instead of 2.8 levels) at ~2 ms per 720p frame."""


# --------------------------------------------------------------------------------------------------
# Probe


@dataclass(frozen=True)
class VideoInfo:
    """What ``read_frames`` will deliver for one presenter file, from ffprobe.

    ``width``/``height`` are those of the delivered frames (upright, even). ``fps`` is the constant
    rate frames are delivered at: the nominal rate of a CFR stream, the average rate rounded to an
    integer for VFR, ``still_fps`` for stills; always within [1, 60]. ``frame_count`` is exactly how
    many frames ``read_frames`` yields (1 for a still). ``duration`` is in seconds (a still lasts
    1/fps). ``codec``/``pix_fmt``/``bit_depth`` describe the source stream (e.g. "hevc",
    "yuv420p10le", 10). ``stream_index`` is the container index of the video stream used (cover art
    and other attached pictures are skipped); ``hdr`` is true for PQ/HLG transfer.
    """

    path: Path
    width: int
    height: int
    fps: float
    frame_count: int
    duration: float
    is_still: bool
    rotation: int
    codec: str
    pix_fmt: str
    bit_depth: int
    is_vfr: bool
    has_audio: bool
    stream_index: int = 0
    hdr: bool = False

    @property
    def frame_bytes(self) -> int:
        """Bytes of one delivered BGR frame."""
        return self.width * self.height * 3


def probe_video(path: Path, still_fps: float = 25.0) -> VideoInfo:
    """Probe a presenter video or still image with ffprobe.

    Raises NotMedia (missing, empty, not an audio/video/image file), NoVideoStream (audio only,
    e.g. an MP3 even with cover art), DecodeError (truncated MP4, no frames, unusable size).
    Every message names ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise NotMedia("no such file", path=path)
    if path.stat().st_size == 0:
        raise NotMedia("the file is empty", path=path)
    ffprobe = find_tool("ffprobe")
    result = run_probe(
        [ffprobe, "-v", "error", "-hide_banner", "-show_format", "-show_streams", "-of", "json", media_url(path)],
        path,
    )
    stderr = result.stderr.decode("utf-8", errors="replace").strip()
    if result.returncode != 0:
        _raise_probe_failure(path, stderr)
    try:
        data = json.loads(result.stdout.decode("utf-8", errors="replace") or "{}")
    except json.JSONDecodeError as exc:
        raise DecodeError(f"ffprobe printed unreadable output ({exc})", path=path) from None

    fmt = data.get("format") or {}
    streams = data.get("streams") or []
    format_name = str(fmt.get("format_name", ""))
    video = _pick_video_stream(streams)
    if format_name in NOT_MEDIA_FORMATS or (video is not None and video.get("codec_name") in NOT_MEDIA_CODECS):
        raise NotMedia(f"not a video or image (ffprobe reads it as '{format_name}')", path=path)
    has_audio = any(s.get("codec_type") == "audio" for s in streams)
    if video is None:
        if has_audio:
            raise NoVideoStream("the file holds audio but no video or picture", path=path)
        raise NotMedia(f"no audio or video streams (format '{format_name or 'unknown'}')", path=path)

    if "mp4" in format_name or "mov" in format_name:
        _check_mp4_complete(path)

    is_still = bool(STILL_FORMATS.match(format_name))
    if is_still:
        rotation = _still_rotation(ffprobe, path)
    else:
        rotation = _stream_rotation(video)
    raw_w, raw_h = int(video.get("width") or 0), int(video.get("height") or 0)
    if rotation in (90, 270):
        raw_w, raw_h = raw_h, raw_w
    width, height = raw_w - raw_w % 2, raw_h - raw_h % 2
    if width < 2 or height < 2:
        raise DecodeError(f"unusable picture size {raw_w}x{raw_h}", path=path)

    codec = str(video.get("codec_name", "unknown"))
    pix_fmt = str(video.get("pix_fmt", ""))
    common = dict(
        path=path, width=width, height=height, is_still=is_still, rotation=rotation, codec=codec,
        pix_fmt=pix_fmt, bit_depth=_bit_depth(video), has_audio=has_audio, stream_index=int(video.get("index", 0)),
        hdr=video.get("color_transfer") in HDR_TRANSFERS,
    )
    if is_still:
        fps = _clamp_fps(still_fps)
        return VideoInfo(fps=fps, frame_count=1, duration=1.0 / fps, is_vfr=False, **common)

    r_rate = _rate(video.get("r_frame_rate"))
    avg_rate = _rate(video.get("avg_frame_rate"))
    nominal = avg_rate or r_rate
    is_vfr = bool(avg_rate and r_rate and abs(r_rate - avg_rate) / avg_rate > VFR_TOLERANCE)
    if not nominal:
        raise DecodeError("ffprobe reports no frame rate", path=path)
    fps = _clamp_fps(float(round(nominal)) if is_vfr else nominal)
    duration = _duration(video, fmt)
    nb_frames = _int_or_none(video.get("nb_frames"))
    if nb_frames == 0:
        raise DecodeError("the video stream holds no frames", path=path)
    if nb_frames is not None and not is_vfr and fps == nominal and (
        duration is None or abs(nb_frames - duration * fps) <= 1.0
    ):
        frame_count = nb_frames  # exact; but an MP4 edit list (a trimmed copy) hides some samples: use duration
    elif duration is not None:
        frame_count = int(round(duration * fps))
    else:
        raise DecodeError("ffprobe reports neither a frame count nor a duration", path=path)
    if duration is None:
        duration = frame_count / fps
    if frame_count < 1:
        if duration > 0:
            frame_count = 1  # a single-frame animation (e.g. a GIF): deliver that frame
        else:
            raise DecodeError("the video stream holds no frames", path=path)
    return VideoInfo(fps=fps, frame_count=frame_count, duration=duration, is_vfr=is_vfr, **common)


def _raise_probe_failure(path: Path, stderr: str) -> None:
    """Map a failed ffprobe run to the error a user can act on."""
    reason = _last_line(stderr.replace(media_url(path) + ": ", ""))
    lowered = stderr.lower()
    if "moov atom not found" in lowered and _starts_like_mp4(path):
        raise DecodeError(
            "incomplete MP4/MOV (no 'moov' index; the copy is truncated or the recording was not finished)",
            path=path,
        )
    if "permission denied" in lowered:
        raise DecodeError("permission denied", path=path, hint="Make the file readable by the heygemd user.")
    if "input/output error" in lowered:
        raise DecodeError(f"the file cannot be read ({reason})", path=path)
    raise NotMedia(f"not a readable audio/video/image file ({reason})", path=path)


MP4_FIRST_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})


def _starts_like_mp4(path: Path) -> bool:
    """Whether the file begins with an MP4/MOV box header (so a missing 'moov' means truncation)."""
    with open(path, "rb") as f:
        head = f.read(8)
    return len(head) == 8 and head[4:8] in MP4_FIRST_BOXES


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _pick_video_stream(streams: list[dict]) -> dict | None:
    """The first video stream that is not an attached picture (MP3/M4A cover art)."""
    for stream in streams:
        if stream.get("codec_type") != "video":
            continue
        if (stream.get("disposition") or {}).get("attached_pic") == 1:
            continue
        return stream
    return None


def _stream_rotation(stream: dict) -> int:
    """Clockwise degrees to make a video stream upright: display-matrix side data, else the rotate tag."""
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return _normalise_rotation(-float(side["rotation"]))
    tag = (stream.get("tags") or {}).get("rotate")
    if tag is not None:
        try:
            return _normalise_rotation(float(tag))
        except ValueError:
            return 0
    return 0


def _still_rotation(ffprobe: str, path: Path) -> int:
    """Clockwise degrees to make an image upright, from the decoded frame's EXIF display matrix."""
    result = run_probe(
        [ffprobe, "-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1", "-show_frames",
         "-show_entries", "frame_side_data", "-of", "json", media_url(path)],
        path,
    )
    if result.returncode != 0:
        raise DecodeError(f"the image cannot be decoded: {_last_line(result.stderr.decode(errors='replace'))}",
                          path=path)
    frames = json.loads(result.stdout.decode("utf-8", errors="replace") or "{}").get("frames") or []
    if not frames:
        raise DecodeError("the image holds no picture", path=path)
    return _stream_rotation(frames[0])


def _normalise_rotation(degrees: float) -> int:
    return int(round(degrees / 90.0)) * 90 % 360


def _bit_depth(stream: dict) -> int:
    raw = _int_or_none(stream.get("bits_per_raw_sample"))
    if raw:
        return raw
    match = re.search(r"p(\d{1,2})(le|be)$", str(stream.get("pix_fmt", "")))
    return int(match.group(1)) if match else 8


def _rate(text: object) -> float:
    """'30000/1001' -> 29.97..., '0/0' or junk -> 0.0."""
    try:
        value = Fraction(str(text))
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(value) if value > 0 else 0.0


def _clamp_fps(fps: float) -> float:
    return min(MAX_FPS, max(MIN_FPS, float(fps)))


def _int_or_none(text: object) -> int | None:
    try:
        return int(str(text))
    except ValueError:
        return None


def _float_or_none(text: object) -> float | None:
    try:
        value = float(str(text))
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _duration(stream: dict, fmt: dict) -> float | None:
    """Stream duration, else the Matroska/WebM DURATION tag, else the container's duration."""
    value = _float_or_none(stream.get("duration"))
    if value is not None:
        return value
    tag = (stream.get("tags") or {}).get("DURATION")
    if tag:
        match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", str(tag).strip())
        if match:
            h, m, s = match.groups()
            return int(h) * 3600 + int(m) * 60 + float(s)
    return _float_or_none(fmt.get("duration"))


def top_level_atoms(path: Path) -> list[tuple[str, int, int]]:
    """The top-level boxes of an MP4/MOV file as (type, offset, size); a box running to EOF has its real size.

    Reads only the box headers. A box whose declared size reaches past the end of the file is
    listed with that declared size, so callers can detect truncation.
    """
    atoms: list[tuple[str, int, int]] = []
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        offset = 0
        while offset + 8 <= file_size:
            f.seek(offset)
            size, kind = struct.unpack(">I4s", f.read(8))
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0]
            elif size == 0:
                size = file_size - offset
            name = kind.decode("latin-1")
            if size < 8:
                atoms.append((name, offset, size))
                break
            atoms.append((name, offset, size))
            offset += size
    return atoms


def _check_mp4_complete(path: Path) -> None:
    """DecodeError when a top-level MP4 box runs past the end of the file (an interrupted copy)."""
    file_size = os.path.getsize(path)
    for name, offset, size in top_level_atoms(path):
        if size < 8 or offset + size > file_size:
            raise DecodeError(
                f"the file is truncated: its '{name}' box needs {offset + size} bytes but the file has {file_size}",
                path=path,
            )


# --------------------------------------------------------------------------------------------------
# Reading frames


def _rate_arg(fps: float) -> str:
    """An exact ffmpeg rate for ``fps`` (29.97002997 -> '30000/1001')."""
    rate = Fraction(fps).limit_denominator(1001)
    return f"{rate.numerator}/{rate.denominator}"


def _has_filter(ffmpeg: str, name: str, path: Path) -> bool:
    result = run_probe([ffmpeg, "-hide_banner", "-filters"], path, timeout=30.0)
    return re.search(rf"^\s*\S+\s+{re.escape(name)}\s", result.stdout.decode(errors="replace"), re.M) is not None


def _decode_filters(info: VideoInfo, ffmpeg: str) -> str:
    """The -vf chain: (still rotation) -> (HDR tone-map) -> fps -> even crop."""
    parts: list[str] = []
    if info.is_still and info.rotation in _TRANSPOSE:
        parts.append(_TRANSPOSE[info.rotation])
    if info.hdr and _has_filter(ffmpeg, "zscale", info.path):
        parts.append(
            "zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=hable:desat=0,"
            "zscale=t=bt709:m=bt709:r=tv,format=yuv420p"
        )
    if not info.is_still:
        parts.append(f"fps={_rate_arg(info.fps)}")
    parts.append(f"crop={info.width}:{info.height}:0:0")
    return ",".join(parts)


def _decode_chain(info: VideoInfo, ffmpeg: str) -> str:
    """``_decode_filters`` followed by the conversion to BGR."""
    return _decode_filters(info, ffmpeg) + "," + _DECODE_TO_BGR


def _input_args(info: VideoInfo) -> list[str]:
    """Input options: stills are rotated by our own filter (ffmpeg 5.1 ignores EXIF, newer ones may not)."""
    return ["-noautorotate"] if info.is_still else []


def read_frames(info: VideoInfo) -> Iterator[np.ndarray]:
    """Yield exactly ``info.frame_count`` BGR frames (writable, (h, w, 3) uint8) from one ffmpeg process.

    The stream is resampled to ``info.fps`` (CFR), turned upright and cropped to even size. When
    ffmpeg delivers slightly fewer frames (duration rounding) the last frame is repeated; when it
    delivers far fewer, fails, or delivers none, DecodeError quotes ffmpeg's stderr. Closing the
    generator early kills and reaps ffmpeg.
    """
    ffmpeg = find_tool("ffmpeg")
    argv = [
        ffmpeg, "-nostdin", "-hide_banner", "-v", "error", *_input_args(info), "-i", media_url(info.path),
        "-map", f"0:{info.stream_index}", "-an", "-sn", "-dn",
        "-vf", _decode_chain(info, ffmpeg),
        "-frames:v", str(info.frame_count), "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1",
    ]
    proc = ToolProcess(argv, stdout=True)
    delivered = 0
    last: np.ndarray | None = None
    try:
        while delivered < info.frame_count:
            frame = np.empty((info.height, info.width, 3), dtype=np.uint8)
            got = _read_into(proc.stdout, memoryview(frame).cast("B"))
            if got == 0:
                break
            if got < info.frame_bytes:
                proc.wait()
                raise DecodeError(
                    f"ffmpeg ended in the middle of frame {delivered}: {proc.stderr_tail()}", path=info.path
                )
            delivered += 1
            last = frame
            yield frame
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise DecodeError(f"ffmpeg did not exit after {delivered} frames", path=info.path) from None
        if code != 0:
            raise DecodeError(f"ffmpeg failed after {delivered} frames (exit {code}): {proc.stderr_tail()}",
                              path=info.path)
        shortfall = info.frame_count - delivered
        if last is None:
            raise DecodeError(f"no frame could be decoded: {proc.stderr_tail()}", path=info.path)
        if shortfall > max(SHORTFALL_FRAMES, SHORTFALL_RATIO * info.frame_count):
            raise DecodeError(
                f"only {delivered} of {info.frame_count} frames could be decoded; the file is damaged or "
                f"truncated: {proc.stderr_tail()}",
                path=info.path,
            )
        if shortfall > 0:
            log.debug("%s: padding %d frame(s) by repeating the last", info.path, shortfall)
        for _ in range(shortfall):
            yield last.copy()
    finally:
        proc.kill()


def _read_into(stream: BinaryIO, buffer: memoryview) -> int:
    """Fill ``buffer`` from ``stream``; return the bytes read (less than its size only at EOF)."""
    filled = 0
    while filled < len(buffer):
        n = stream.readinto(buffer[filled:])
        if not n:
            break
        filled += n
    return filled


# --------------------------------------------------------------------------------------------------
# Output schedule


LoopMode = Literal["pingpong", "loop"]


def output_frame_count(duration: float, fps: float) -> int:
    """Frames an output of ``duration`` seconds at ``fps`` needs so video covers all of the audio."""
    return max(1, math.ceil(duration * fps - 1e-6))


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


SpoolCompression = Literal["none", "png"]


class ScheduledFrames:
    """Iterate ``(source_index, frame)`` for ``n_out`` output frames of ``info`` with bounded memory.

    When the schedule only moves forward (the audio is not longer than the video, or a still) the
    frames stream straight from ``read_frames``. Otherwise the first pass writes each decoded frame
    to an anonymous spool file in ``work_dir`` (opened with O_TMPFILE/unlinked at once, so it
    vanishes even if the process is killed) and later frames are read back with ``os.pread``.

    Disk use of the spool, per source frame: ``compression="none"`` (default) takes exactly
    width*height*3 bytes (1080p: 6.2 MB, i.e. 187 MB per second of 30 fps video) and costs no CPU;
    ``"png"`` (lossless, zlib level 1) takes about 40-55 % of that on camera-like frames but costs
    roughly 20 ms (360p) to 100 ms (720p) of one core per frame to write and half that to read.
    Before a raw spool is written its size is checked against the free space of ``work_dir``
    (DiskFull when it cannot fit). Use it as a context manager; leaving it kills ffmpeg and frees
    the spool. Iterate once.
    """

    def __init__(self, info: VideoInfo, n_out: int, mode: LoopMode, work_dir: Path, *,
                 compression: SpoolCompression = "none"):
        if compression not in ("none", "png"):
            raise ValueError(f"compression must be 'none' or 'png', got {compression!r}")
        self.info = info
        self.n_out = int(n_out)
        self.mode = mode
        self.work_dir = Path(work_dir)
        self.compression = compression
        self._schedule = frame_schedule(info.frame_count, self.n_out, mode)  # validates arguments
        self._source: Generator[np.ndarray, None, None] | None = None
        self._iter: Generator[tuple[int, np.ndarray], None, None] | None = None
        self._spool: BinaryIO | None = None
        self._offsets = array("q")
        self._lengths = array("q")
        self._started = False

    @property
    def needs_spool(self) -> bool:
        """Whether the schedule goes backward (audio longer than a multi-frame video)."""
        return self.info.frame_count > 1 and self.n_out > self.info.frame_count

    @property
    def spool_bytes(self) -> int:
        """Current size of the spool file in bytes (0 when there is none or it is closed)."""
        if self._spool is None or self._spool.closed:
            return 0
        return os.fstat(self._spool.fileno()).st_size

    def __len__(self) -> int:
        return self.n_out

    def __enter__(self) -> "ScheduledFrames":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
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
        if self._spool is not None and not self._spool.closed:
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
        self._source = read_frames(self.info)
        frame = next(self._source)
        self._release()
        for _ in range(self.n_out):
            yield 0, frame.copy()

    def _forward(self) -> Generator[tuple[int, np.ndarray], None, None]:
        self._source = read_frames(self.info)
        try:
            for index in self._schedule:  # 0..n_out-1 with n_out <= frame_count
                yield index, next(self._source)
        finally:
            self._release()

    def _spooled(self) -> Generator[tuple[int, np.ndarray], None, None]:
        n_source = self.info.frame_count
        if self.compression == "none":
            _require_free_space(self.work_dir, n_source * self.info.frame_bytes)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._spool = tempfile.TemporaryFile(prefix=".spool-", dir=self.work_dir, buffering=0)
        self._source = read_frames(self.info)
        try:
            # The schedule starts 0..n_source-1 in both modes: decode, spool, and pass each frame on.
            for index in range(n_source):
                frame = next(self._source)
                self._append(frame)  # before yielding: the consumer may draw on the frame
                yield index, frame
            source, self._source = self._source, None
            source.close()
            for index in itertools.islice(self._schedule, n_source, None):
                yield index, self._load(index)
        finally:
            self._release()

    def _append(self, frame: np.ndarray) -> None:
        assert self._spool is not None
        if self.compression == "png":
            ok, encoded = cv2.imencode(".png", frame, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            if not ok:
                raise EncodeError("could not compress a frame for the spool", path=self.info.path)
            data = memoryview(encoded).cast("B")
        else:
            data = memoryview(frame).cast("B")
        offset = self._offsets[-1] + self._lengths[-1] if self._offsets else 0
        try:
            _pwrite_all(self._spool.fileno(), data, offset)
        except OSError as exc:
            raise _disk_error(exc, self.work_dir, "writing the frame spool") from exc
        self._offsets.append(offset)
        self._lengths.append(len(data))

    def _load(self, index: int) -> np.ndarray:
        assert self._spool is not None
        offset, length = self._offsets[index], self._lengths[index]
        fd = self._spool.fileno()
        if self.compression == "png":
            data = _pread_all(fd, bytearray(length), offset)
            frame = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
            if frame is None:
                raise DecodeError(f"frame {index} in the spool is unreadable", path=self.info.path)
            return frame
        frame = np.empty((self.info.height, self.info.width, 3), dtype=np.uint8)
        _pread_all(fd, memoryview(frame).cast("B"), offset)
        return frame


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    written = 0
    while written < len(data):
        written += os.pwrite(fd, data[written:], offset + written)


def _pread_all(fd: int, buffer: bytearray | memoryview, offset: int) -> bytearray | memoryview:
    view = memoryview(buffer)
    filled = 0
    while filled < len(view):
        n = os.preadv(fd, [view[filled:]], offset + filled)
        if n == 0:
            raise OSError(f"spool ended at {offset + filled} bytes")
        filled += n
    return buffer


def _require_free_space(directory: Path, needed: int) -> None:
    probe_dir = directory
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    stats = os.statvfs(probe_dir)
    free = stats.f_bavail * stats.f_frsize
    if needed > free:
        raise DiskFull(
            f"the frame spool needs {needed / 1e9:.2f} GB but only {free / 1e9:.2f} GB are free", path=directory
        )


def _disk_error(exc: OSError, path: Path, doing: str) -> Exception:
    if exc.errno in (28, 122):  # ENOSPC, EDQUOT
        return DiskFull(f"no space left while {doing}", path=path)
    return EncodeError(f"{doing} failed: {exc}", path=path)


# --------------------------------------------------------------------------------------------------
# Writing


def _partial_path(out_path: Path) -> Path:
    """The temporary name an output is written under, in its final directory."""
    suffix = out_path.suffix or ".mp4"
    return out_path.with_name(f".{out_path.name}.partial{suffix}")


def _encode_args(crf: int, preset: str, audio_bitrate: str, duration: float) -> list[str]:
    return [
        "-c:v", "libx264", "-preset", str(preset), "-crf", str(int(crf)), "-pix_fmt", "yuv420p", *_ENCODE_COLOUR,
        "-c:a", "aac", "-b:a", str(audio_bitrate),
        "-t", f"{duration:.6f}", "-movflags", "+faststart", "-map_metadata", "-1",
    ]


def _encode_failure(tail: str, out_path: Path, audio_path: Path) -> Exception:
    if is_disk_full(tail):
        return DiskFull(f"no space left while encoding: {tail}", path=out_path)
    if "matches no streams" in tail and "1:a" in tail:
        return NoAudioStream("the audio file has no audio stream", path=audio_path)
    return EncodeError(f"ffmpeg failed: {tail}", path=out_path)


def _publish(temp: Path, out_path: Path) -> None:
    """fsync ``temp``, rename it to ``out_path`` and fsync the directory."""
    try:
        with open(temp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temp, out_path)
        dir_fd = os.open(out_path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise _disk_error(exc, out_path, "finishing the output") from exc


class VideoWriter:
    """Encode BGR frames to H.264 + the original audio with ONE ffmpeg process; atomic on success.

    Frames go to ffmpeg's stdin as rawvideo bgr24 of ``width`` x ``height`` (both even) at ``fps``;
    ``audio_path`` (any file ffmpeg reads: WAV, MP3, M4A, a video's sound track) is the second
    input and is re-encoded to AAC. The output lasts ``duration`` seconds (write
    ``output_frame_count(duration, fps)`` frames to cover it). It is written to
    ``.{name}.partial{suffix}`` next to ``out_path``, fsynced and renamed into place when ffmpeg
    exits 0. An exception in the with-block kills ffmpeg, deletes the partial file and propagates.
    Raises EncodeError (stderr tail), DiskFull, or NoAudioStream (audio file without sound).
    """

    def __init__(self, out_path: Path, width: int, height: int, fps: float, audio_path: Path, duration: float, *,
                 crf: int = 18, preset: str = "fast", audio_bitrate: str = "192k"):
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"width and height must be positive and even for yuv420p, got {width}x{height}")
        if duration <= 0:
            raise ValueError(f"duration must be positive, got {duration}")
        self.out_path = Path(out_path)
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.audio_path = Path(audio_path)
        self.duration = float(duration)
        self.crf, self.preset, self.audio_bitrate = crf, preset, audio_bitrate
        self.temp_path = _partial_path(self.out_path)
        self.frames_written = 0
        self._proc: ToolProcess | None = None

    def __enter__(self) -> "VideoWriter":
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.abort()
            return
        self.close()

    def open(self) -> None:
        """Start ffmpeg (done by ``with``)."""
        if self._proc is not None:
            raise RuntimeError("VideoWriter is already open")
        ffmpeg = find_tool("ffmpeg")
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{self.width}x{self.height}",
            "-r", _rate_arg(self.fps), "-i", "pipe:0",
            "-i", media_url(self.audio_path),
            "-map", "0:v:0", "-map", "1:a:0", "-vf", _ENCODE_FILTER,
            *_encode_args(self.crf, self.preset, self.audio_bitrate, self.duration),
            media_url(self.temp_path),
        ]
        self._proc = ToolProcess(argv, stdin=True)

    def write(self, frame_bgr: np.ndarray) -> None:
        """Append one frame: uint8 array of shape (height, width, 3), BGR."""
        if self._proc is None:
            raise RuntimeError("VideoWriter is not open; use it as a context manager")
        if frame_bgr.shape != (self.height, self.width, 3) or frame_bgr.dtype != np.uint8:
            raise ValueError(
                f"expected a ({self.height}, {self.width}, 3) uint8 frame, got {frame_bgr.shape} {frame_bgr.dtype}"
            )
        data = memoryview(np.ascontiguousarray(frame_bgr)).cast("B")
        try:
            self._proc.stdin.write(data)
        except BrokenPipeError:
            raise self._fail("ffmpeg stopped reading frames") from None
        self.frames_written += 1

    def close(self) -> None:
        """Finish: wait for ffmpeg, then fsync and rename the output into place (or clean up and raise)."""
        if self._proc is None:
            return
        try:
            if self.frames_written == 0:
                raise EncodeError("no frames were written", path=self.out_path)
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                raise self._fail("ffmpeg stopped reading frames") from None
            code = self._proc.wait()
            if code != 0:
                raise self._fail(f"ffmpeg exited with status {code}")
            self._proc = None
            _publish(self.temp_path, self.out_path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Kill ffmpeg and delete the partial file; nothing appears at ``out_path``."""
        if self._proc is not None:
            self._proc.kill()
            self._proc = None
        self.temp_path.unlink(missing_ok=True)

    def _fail(self, what: str) -> Exception:
        assert self._proc is not None
        self._proc.kill()
        tail = self._proc.stderr_tail()
        self._proc = None
        self.temp_path.unlink(missing_ok=True)
        return _encode_failure(f"{what}: {tail}", self.out_path, self.audio_path)


def plain_transcode(info: VideoInfo, out_path: Path, audio_path: Path, duration: float, *,
                    crf: int = 18, preset: str = "fast", audio_bitrate: str = "192k") -> Path:
    """A plain ffmpeg decode + encode of ``info``'s video (looped to ``duration``) with ``audio_path``.

    Same decode filters (CFR, upright, even crop) and the same encoder settings as
    ``read_frames`` + ``VideoWriter``; the benchmark's baseline. Atomic like VideoWriter.
    """
    ffmpeg = find_tool("ffmpeg")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    temp = _partial_path(out_path)
    loop = ["-loop", "1", "-framerate", _rate_arg(info.fps)] if info.is_still else ["-stream_loop", "-1"]
    argv = [
        ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-y",
        *_input_args(info), *loop, "-i", media_url(info.path), "-i", media_url(Path(audio_path)),
        "-map", f"0:{info.stream_index}", "-map", "1:a:0",
        "-vf", _decode_filters(info, ffmpeg) + "," + _ENCODE_FILTER,
        *_encode_args(crf, preset, audio_bitrate, duration), media_url(temp),
    ]
    proc = ToolProcess(argv)
    try:
        code = proc.wait()
    finally:
        proc.kill()
    if code != 0:
        temp.unlink(missing_ok=True)
        raise _encode_failure(f"ffmpeg exited with status {code}: {proc.stderr_tail()}", out_path, Path(audio_path))
    _publish(temp, out_path)
    return out_path


def write_poster(frame_bgr: np.ndarray, path: Path, max_side: int = 640) -> Path:
    """Save ``frame_bgr`` as a JPEG no larger than ``max_side`` on its longer side, atomically."""
    path = Path(path)
    height, width = frame_bgr.shape[:2]
    scale = max_side / max(height, width)
    image = frame_bgr
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(frame_bgr, size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise EncodeError("could not encode the poster JPEG", path=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.partial.jpg")
    try:
        with open(temp, "wb") as f:
            f.write(encoded.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise _disk_error(exc, path, "writing the poster") from exc
    return path
