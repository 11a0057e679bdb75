"""Video probe with ffprobe: what a presenter video or still image is (``VideoInfo``, ``probe_video``, MP4 boxes).

Conventions
-----------
* ``VideoInfo.rotation`` is the clockwise rotation, in degrees (0/90/180/270), that turns the stored
  pixels upright -- the angle ffmpeg's autorotate applies. iPhone portrait videos read 90.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal, TypedDict

from heygemd.errors import DecodeError, NotMedia, NoVideoStream
from heygemd.pipeline.colour import YuvMatrix
from heygemd.pipeline.ffmpeg_tools import find_tool, media_url, run_probe

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


_DECODED_YUV_FORMATS = ("yuv420p", "yuvj420p")


@dataclass(frozen=True)
class DecodedYuv:
    """The decoder's own frames of a video whose conversion to BGR heygemd does itself (``colour``): 8-bit 4:2:0
    with square pixels and no HDR tone-mapping, in a colour space ``YuvMatrix`` knows."""

    pix_fmt: Literal["yuv420p", "yuvj420p"]
    """As the decoder delivers them (yuvj420p: full range, as MJPEG and some phones' H.264 decode)."""
    matrix: YuvMatrix
    """From the first decoded frame's colour tags (BT.601 when untagged, as swscale)."""


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
    square_size: tuple[int, int] | None = None
    """(w, h) the upright frames are scaled to first when the source has non-square pixels (None: square)."""
    yuv: DecodedYuv | None = None
    """Set when ``read_frames`` takes the decoder's own frames and converts them itself (None: ffmpeg does)."""

    @property
    def frame_bytes(self) -> int:
        """Bytes of one delivered BGR frame."""
        return self.width * self.height * 3


class _CommonFields(TypedDict):
    """The ``VideoInfo`` fields that a still and a video fill in alike."""

    path: Path
    width: int
    height: int
    is_still: bool
    rotation: int
    codec: str
    pix_fmt: str
    bit_depth: int
    has_audio: bool
    stream_index: int
    hdr: bool
    square_size: tuple[int, int] | None


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
    sar = _sample_aspect(video.get("sample_aspect_ratio"))
    if sar != 1:  # non-square pixels (anamorphic, DV): delivered stretched to square pixels, as players show them
        raw_w = max(2, round(raw_w * sar))
    if rotation in (90, 270):
        raw_w, raw_h = raw_h, raw_w
    width, height = raw_w - raw_w % 2, raw_h - raw_h % 2
    if width < 2 or height < 2:
        raise DecodeError(f"unusable picture size {raw_w}x{raw_h}", path=path)

    codec = str(video.get("codec_name", "unknown"))
    pix_fmt = str(video.get("pix_fmt", ""))
    common = _CommonFields(
        path=path,
        width=width,
        height=height,
        is_still=is_still,
        rotation=rotation,
        codec=codec,
        pix_fmt=pix_fmt,
        bit_depth=_bit_depth(video),
        has_audio=has_audio,
        stream_index=int(video.get("index", 0)),
        hdr=video.get("color_transfer") in HDR_TRANSFERS,
        square_size=(raw_w, raw_h) if sar != 1 else None,
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
    if (
        nb_frames is not None
        and not is_vfr
        and fps == nominal
        and (duration is None or abs(nb_frames - duration * fps) <= 1.0)
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
    converted_here = not common["hdr"] and sar == 1 and pix_fmt in _DECODED_YUV_FORMATS
    yuv = _decoded_yuv(ffprobe, video, path) if converted_here else None
    return VideoInfo(fps=fps, frame_count=frame_count, duration=duration, is_vfr=is_vfr, yuv=yuv, **common)


def _decoded_yuv(ffprobe: str, stream: dict, path: Path) -> DecodedYuv | None:
    """The first decoded frame's pixel format and colour tags (the stream's may differ from the frames'), or None
    when that frame is not 8-bit 4:2:0 or its colour space is one ffmpeg should convert (ycgco, bt2020c)."""
    result = run_probe(
        [
            ffprobe,
            "-v",
            "error",
            "-select_streams",
            str(stream.get("index", 0)),
            "-read_intervals",
            "%+#1",
            "-show_entries",
            "frame=pix_fmt,color_space,color_range",
            "-of",
            "json",
            media_url(path),
        ],
        path,
    )
    try:
        frames = json.loads(result.stdout.decode("utf-8", errors="replace") or "{}").get("frames") or []
    except json.JSONDecodeError:
        frames = []
    if result.returncode != 0 or not frames:
        return None  # ffmpeg converts whatever read_frames can decode; its errors are read_frames' to report
    pix_fmt = frames[0].get("pix_fmt")
    if pix_fmt not in _DECODED_YUV_FORMATS:
        return None
    matrix = YuvMatrix.for_tags(
        str(frames[0].get("color_space", "unknown")),
        str(frames[0].get("color_range", "unknown")),
        full_range_format=pix_fmt == "yuvj420p",
    )
    return None if matrix is None else DecodedYuv(pix_fmt, matrix)


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
        [
            ffprobe,
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-read_intervals",
            "%+#1",
            "-show_frames",
            "-show_entries",
            "frame_side_data",
            "-of",
            "json",
            media_url(path),
        ],
        path,
    )
    if result.returncode != 0:
        raise DecodeError(
            f"the image cannot be decoded: {_last_line(result.stderr.decode(errors='replace'))}", path=path
        )
    frames = json.loads(result.stdout.decode("utf-8", errors="replace") or "{}").get("frames") or []
    if not frames:
        raise DecodeError("the image holds no picture", path=path)
    return _stream_rotation(frames[0])


def _normalise_rotation(degrees: float) -> int:
    return int(round(degrees / 90.0)) * 90 % 360


def _sample_aspect(text: object) -> Fraction:
    """The stream's sample (pixel) aspect ratio; 1 when unset, "0:1" or malformed."""
    try:
        num, _, den = str(text or "1:1").partition(":")
        value = Fraction(int(num), int(den or 1))
    except (ValueError, ZeroDivisionError):
        return Fraction(1)
    return value if value > 0 else Fraction(1)


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
