"""Video probe with ffprobe: what a presenter video or still image is (``VideoInfo``, ``probe_video``, MP4 boxes).

The file is read through one descriptor (``ffmpeg_tools.open_input``) and no picture larger than the limit
(``video.max_presenter_pixels``) is ever decoded, not even by ffprobe: its decoders refuse it (``-max_pixels``)
and the probe says so (``PictureTooLarge``), before ``read_frames`` would decode it.

Conventions
-----------
* ``VideoInfo.rotation`` is the clockwise rotation, in degrees (0/90/180/270), that turns the stored
  pixels upright -- the angle ffmpeg's autorotate applies. iPhone portrait videos read 90.
"""

from __future__ import annotations

import json
import math
import re
import struct
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal, TypedDict

from heygemd.errors import DecodeError, NotMedia, NoVideoStream, PictureTooLarge, PresenterTooLong
from heygemd.fsutil import InputFile, input_path
from heygemd.pipeline.colour import YuvMatrix
from heygemd.pipeline.ffmpeg_argv import ffprobe_command
from heygemd.pipeline.ffmpeg_tools import open_input, run_probe
from heygemd.settings import VideoSettings

MAX_PIXELS: int = VideoSettings.model_fields["max_presenter_pixels"].default
"""The default limit (``video.max_presenter_pixels``)."""

DECODER_HEADROOM = 2
"""ffmpeg's decoders are held to this many times the limit (``decoder_max_pixels``): they check the buffer of a
picture, its width rounded up to 64, so a picture within the limit must never reach their ceiling. The exact check
is the probe's, from the stream's size."""

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

    ``source`` is the file as ``probe_video`` was given it: an open ``InputFile`` (read through its descriptor by
    every later step) or a path (opened again by each). ``path`` names it in messages.

    ``width``/``height`` are those of the delivered frames (upright, even). ``fps`` is the constant
    rate frames are delivered at: the nominal rate of a CFR stream, the average rate rounded to an
    integer for VFR, ``still_fps`` for stills; always within [1, 60]. ``frame_count`` is exactly how
    many frames ``read_frames`` yields (1 for a still). ``duration`` is in seconds (a still lasts
    1/fps). ``codec``/``pix_fmt``/``bit_depth`` describe the source stream (e.g. "hevc",
    "yuv420p10le", 10). ``stream_index`` is the container index of the video stream used (cover art
    and other attached pictures are skipped); ``hdr`` is true for PQ/HLG transfer.
    """

    source: Path | InputFile
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
    max_pixels: int = MAX_PIXELS
    """The limit the probe checked; the decoder of ``read_frames`` refuses any larger picture too."""

    @property
    def path(self) -> Path:
        """The file as the user knows it (errors name it)."""
        return input_path(self.source)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one delivered BGR frame."""
        return self.width * self.height * 3


class _CommonFields(TypedDict):
    """The ``VideoInfo`` fields that a still and a video fill in alike."""

    source: Path | InputFile
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
    max_pixels: int


def probe_video(
    source: Path | InputFile,
    still_fps: float = 25.0,
    max_pixels: int = MAX_PIXELS,
    max_seconds: float = math.inf,
) -> VideoInfo:
    """Probe a presenter video or still image with ffprobe.

    Raises NotMedia (missing, empty, not an audio/video/image file), NotRegularFile (a FIFO, device, socket or
    folder), UnsafePath (a symbolic link), PictureTooLarge (more than ``max_pixels`` pixels, from the header: the
    picture is not decoded), PresenterTooLong (a video of more than ``max_seconds``, from the header: nothing is
    decoded; a render's presenter is held to ``video.max_presenter_seconds``, an output or a file scored is not
    held to any), NoVideoStream (audio only, e.g. an MP3 even with cover art), DecodeError (truncated MP4, no frames,
    unusable size). Every message names the file (``source.path``).
    """
    with open_input(source) as media:
        return _probe(media, source, still_fps, max_pixels, max_seconds)


def _probe(
    media: InputFile, source: Path | InputFile, still_fps: float, max_pixels: int, max_seconds: float
) -> VideoInfo:
    path = media.path
    if media.size() == 0:
        raise NotMedia("the file is empty", path=path)
    result = _run_ffprobe(["-show_format", "-show_streams", "-of", "json"], media, max_pixels)
    stderr = result.stderr.decode("utf-8", errors="replace").strip()
    refused = refused_picture(stderr, path, max_pixels)  # a picture in the file its decoder did not allocate
    if result.returncode != 0:
        if refused is not None:
            raise refused
        _raise_probe_failure(media, stderr)
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
        _check_mp4_complete(media)

    raw_w, raw_h = int(video.get("width") or 0), int(video.get("height") or 0)
    if refused is not None and not (raw_w and raw_h):  # the presenter's own picture (not, say, its cover art)
        raise refused
    sar = _sample_aspect(video.get("sample_aspect_ratio"))
    if max(raw_w * raw_h, round(raw_w * sar) * raw_h) > max_pixels:  # stored, or as delivered (square pixels)
        raise picture_too_large(path, max(raw_w, round(raw_w * sar)), raw_h, max_pixels)
    is_still = bool(STILL_FORMATS.match(format_name))
    if is_still:
        rotation = _still_rotation(media, max_pixels)
    else:
        rotation = _stream_rotation(video)
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
        source=source,
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
        max_pixels=max_pixels,
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
    if max(duration, frame_count / fps) > max_seconds:
        raise presenter_too_long(path, max(duration, frame_count / fps), max_seconds)
    converted_here = not common["hdr"] and sar == 1 and pix_fmt in _DECODED_YUV_FORMATS
    yuv = _decoded_yuv(video, media, max_pixels) if converted_here else None
    return VideoInfo(fps=fps, frame_count=frame_count, duration=duration, is_vfr=is_vfr, yuv=yuv, **common)


def decoder_max_pixels(max_pixels: int) -> int:
    """The ceiling ffmpeg's decoders are held to for a limit of ``max_pixels`` (see ``DECODER_HEADROOM``)."""
    return min(2**31 - 1, DECODER_HEADROOM * max_pixels)


def _run_ffprobe(options: list[str], media: InputFile, max_pixels: int) -> subprocess.CompletedProcess[bytes]:
    """ffprobe with ``options`` on ``media``, read through its descriptor, its decoders held to the ceiling of
    ``max_pixels``."""
    argv = ffprobe_command(media.url, options, max_pixels=decoder_max_pixels(max_pixels))
    return run_probe(argv, media.path, pass_fds=media.pass_fds)


_REFUSED_PICTURE = re.compile(r"Picture size (\d+)x(\d+) exceeds specified max pixel count")


def refused_picture(stderr: str, path: Path, max_pixels: int) -> PictureTooLarge | None:
    """The error for a picture an ffmpeg decoder refused to allocate (its size as the decoder says it, the width
    maybe rounded up), from its stderr; None when it refused none."""
    match = _REFUSED_PICTURE.search(stderr)
    if match is None:
        return None
    return picture_too_large(path, int(match[1]), int(match[2]), max_pixels, exact=False)


def picture_too_large(path: Path, width: int, height: int, max_pixels: int, *, exact: bool = True) -> PictureTooLarge:
    """PictureTooLarge for a ``width`` x ``height`` presenter (``exact=False``: about that size), its hint the
    largest size within ``max_pixels`` at the same shape, with the ffmpeg command that scales it so."""
    scale = math.sqrt(max_pixels / (width * height))
    fit_w, fit_h = max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)
    size = f"{width}x{height}, {width * height:,} pixels" if exact else f"about {width}x{height}"
    return PictureTooLarge(
        f"the picture is {size}; presenters of at most {max_pixels:,} pixels are taken",
        path=path,
        hint=f"Scale it down to at most {fit_w}x{fit_h}, e.g. ffmpeg -i {path.name} -vf scale={fit_w}:-2 "
        f"{path.stem}-smaller{path.suffix} (or raise video.max_presenter_pixels).",
    )


def presenter_too_long(path: Path, seconds: float, max_seconds: float) -> PresenterTooLong:
    """PresenterTooLong for a presenter of ``seconds``, its hint the ffmpeg command that cuts it to the limit."""
    return PresenterTooLong(
        f"the video lasts {_seconds(seconds)} s; presenters of at most {_seconds(max_seconds)} s are taken",
        path=path,
        hint=f"Cut it to the part you need (e.g. ffmpeg -i {path.name} -t {max_seconds:g} -c copy "
        f"{path.stem}-cut{path.suffix}), or raise video.max_presenter_seconds.",
    )


def _seconds(value: float) -> str:
    """Seconds for people: 1.2, 3,600, 36,000.5."""
    return f"{value:,.1f}".removesuffix(".0")


def _decoded_yuv(stream: dict, media: InputFile, max_pixels: int) -> DecodedYuv | None:
    """The first decoded frame's pixel format and colour tags (the stream's may differ from the frames'), or None
    when that frame is not 8-bit 4:2:0 or its colour space is one ffmpeg should convert (ycgco, bt2020c)."""
    result = _run_ffprobe(
        [
            "-select_streams",
            str(stream.get("index", 0)),
            "-read_intervals",
            "%+#1",
            "-show_entries",
            "frame=pix_fmt,color_space,color_range",
            "-of",
            "json",
        ],
        media,
        max_pixels,
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


def _raise_probe_failure(media: InputFile, stderr: str) -> None:
    """Map a failed ffprobe run to the error a user can act on."""
    path = media.path
    reason = _last_line(stderr.replace(media.url + ": ", ""))
    lowered = stderr.lower()
    if "moov atom not found" in lowered and _starts_like_mp4(media):
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


def _starts_like_mp4(media: InputFile) -> bool:
    """Whether the file begins with an MP4/MOV box header (so a missing 'moov' means truncation)."""
    head = media.read_at(0, 8)
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


def _still_rotation(media: InputFile, max_pixels: int) -> int:
    """Clockwise degrees to make an image upright, from the decoded frame's EXIF display matrix."""
    path = media.path
    result = _run_ffprobe(
        [
            "-select_streams",
            "v:0",
            "-read_intervals",
            "%+#1",
            "-show_frames",
            "-show_entries",
            "frame_side_data",
            "-of",
            "json",
        ],
        media,
        max_pixels,
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


def top_level_atoms(source: Path | InputFile) -> list[tuple[str, int, int]]:
    """The top-level boxes of an MP4/MOV file as (type, offset, size); a box running to EOF has its real size.

    Reads only the box headers. A box whose declared size reaches past the end of the file is
    listed with that declared size, so callers can detect truncation.
    """
    atoms: list[tuple[str, int, int]] = []
    with open_input(source) as media:
        file_size = media.size()
        offset = 0
        while offset + 8 <= file_size:
            head = media.read_at(offset, 16)
            size, kind = struct.unpack(">I4s", head[:8])
            if size == 1:  # a 64-bit size follows; where the file ends before it, the box needs its 16 bytes at least
                size = struct.unpack(">Q", head[8:16])[0] if len(head) == 16 else 16
            elif size == 0:
                size = file_size - offset
            name = kind.decode("latin-1")
            if size < 8:
                atoms.append((name, offset, size))
                break
            atoms.append((name, offset, size))
            offset += size
    return atoms


def _check_mp4_complete(media: InputFile) -> None:
    """DecodeError when a top-level MP4 box runs past the end of the file (an interrupted copy)."""
    path = media.path
    file_size = media.size()
    for name, offset, size in top_level_atoms(media):
        if size < 8 or offset + size > file_size:
            raise DecodeError(
                f"the file is truncated: its '{name}' box needs {offset + size} bytes but the file has {file_size}",
                path=path,
            )
