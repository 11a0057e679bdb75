"""Frames out: the lip-synced video encoded with ffmpeg (``VideoWriter``, ``plain_transcode``) and its poster.

``VideoWriter`` pipes frames into one ffmpeg process that also muxes the original audio. Every output
is written under a temporary name in its final directory and renamed into place only when complete.

Conventions
-----------
* Colours: the writer converts BGR to yuv420p with the BT.709 matrix (limited range) itself
  (``colour.bgr_to_yuv420p``, in the calling thread) and tags the stream so.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from heygemd.errors import DiskFull, EncodeError, NoAudioStream
from heygemd.fsutil import InputFile, atomic_writer, input_path, publish_written
from heygemd.names import temp_path
from heygemd.pipeline.colour import BT709_TV, bgr_to_yuv420p, yuv420p_bytes
from heygemd.pipeline.ffmpeg_argv import audio_input, ffmpeg_command, media_url, rate_arg, raw_input
from heygemd.pipeline.ffmpeg_tools import ToolProcess, disk_error, is_disk_full, open_input
from heygemd.pipeline.frames import decode_filters, video_input
from heygemd.pipeline.hw_codecs import Encoder, encoder_args
from heygemd.pipeline.probe import VideoInfo
from heygemd.settings import VideoSettings

_VIDEO = VideoSettings.model_fields
"""Encoder defaults are the settings' own (``video.crf``, ``video.preset``, ``video.audio_bitrate``)."""

_ENCODE_COLOUR = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]
_ENCODE_FILTER = "scale=out_color_matrix=bt709:out_range=tv:flags=accurate_rnd,format=yuv420p"
"""ffmpeg's own conversion to what ``VideoWriter`` encodes, for ``plain_transcode``: yuv420p with the BT.709
matrix, limited range."""


def _encode_args(crf: int, preset: str, audio_bitrate: str, duration: float, encoder: Encoder) -> list[str]:
    return [
        *encoder_args(encoder, crf, preset),
        "-pix_fmt",
        "yuv420p",
        *_ENCODE_COLOUR,
        "-c:a",
        "aac",
        "-b:a",
        str(audio_bitrate),
        "-t",
        f"{duration:.6f}",
        "-movflags",
        "+faststart",
        "-map_metadata",
        "-1",
    ]


def _encode_failure(tail: str, out_path: Path, audio_path: Path) -> Exception:
    if is_disk_full(tail):
        return DiskFull(f"no space left while encoding: {tail}", path=out_path)
    if "matches no streams" in tail and "1:a" in tail:
        return NoAudioStream("the audio file has no audio stream", path=audio_path)
    return EncodeError(f"ffmpeg failed: {tail}", path=out_path)


def _publish(temp: Path, out_path: Path) -> None:
    """fsync ``temp``, rename it to ``out_path`` and fsync the directory (tolerant of shares that refuse that)."""
    try:
        publish_written(temp, out_path)
    except OSError as exc:
        raise disk_error(exc, out_path, "finishing the output") from exc


class VideoWriter:
    """Encode BGR frames to H.264 (``encoder``: libx264 or h264_nvenc, see ``hw_codecs``) + the original audio
    with ONE ffmpeg process; atomic on success.

    Frames are given as BGR of ``width`` x ``height`` (both even) and go to ffmpeg's stdin as rawvideo yuv420p
    (``colour.bgr_to_yuv420p``, BT.709 limited range) at ``fps``;
    ``audio`` (any file ffmpeg reads: WAV, MP3, M4A, a video's sound track; an open ``InputFile`` is read through
    its descriptor, a path is opened when ffmpeg starts) is the second input and is re-encoded to AAC. The output
    lasts ``duration`` seconds (write ``AudioFeatures.frame_count(fps)`` frames to cover it). It is written to
    a temporary name next to ``out_path`` (``names.temp_path``), fsynced and renamed into place when ffmpeg
    exits 0. An exception in the with-block kills ffmpeg, deletes the partial file and propagates.
    Raises EncodeError (stderr tail), DiskFull, or NoAudioStream (audio file without sound).
    """

    def __init__(
        self,
        out_path: Path,
        width: int,
        height: int,
        fps: float,
        audio: Path | InputFile,
        duration: float,
        *,
        crf: int = _VIDEO["crf"].default,
        preset: str = _VIDEO["preset"].default,
        audio_bitrate: str = _VIDEO["audio_bitrate"].default,
        encoder: Encoder = "libx264",
    ):
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"width and height must be positive and even for yuv420p, got {width}x{height}")
        if duration <= 0:
            raise ValueError(f"duration must be positive, got {duration}")
        self.out_path = Path(out_path)
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.audio = audio
        self.audio_path = input_path(audio)
        self.duration = float(duration)
        self.crf, self.preset, self.audio_bitrate = crf, preset, audio_bitrate
        self.encoder: Encoder = encoder
        self.temp_path = temp_path(self.out_path)
        self.frames_written = 0
        self._proc: ToolProcess | None = None
        self._yuv = np.empty(yuv420p_bytes(self.width, self.height), dtype=np.uint8)
        """The frame being written, converted (one buffer for the whole video)."""

    def __enter__(self) -> "VideoWriter":
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
            return
        self.close()

    def open(self) -> None:
        """Start ffmpeg (done by ``with``)."""
        if self._proc is not None:
            raise RuntimeError("VideoWriter is already open")
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        with open_input(self.audio) as audio:
            argv = ffmpeg_command(
                [raw_input("yuv420p", self.width, self.height, rate_arg(self.fps)), audio_input(audio)],
                [
                    *["-map", "0:v:0", "-map", "1:a:0"],
                    *_encode_args(self.crf, self.preset, self.audio_bitrate, self.duration, self.encoder),
                    media_url(self.temp_path),
                ],
                overwrite=True,
            )
            self._proc = ToolProcess(argv, stdin=True, pass_fds=audio.pass_fds)

    def write(self, frame_bgr: np.ndarray) -> None:
        """Append one frame: uint8 array of shape (height, width, 3), BGR."""
        if self._proc is None:
            raise RuntimeError("VideoWriter is not open; use it as a context manager")
        if frame_bgr.shape != (self.height, self.width, 3) or frame_bgr.dtype != np.uint8:
            raise ValueError(
                f"expected a ({self.height}, {self.width}, 3) uint8 frame, got {frame_bgr.shape} {frame_bgr.dtype}"
            )
        bgr_to_yuv420p(frame_bgr, BT709_TV, self._yuv)
        try:
            self._proc.stdin.write(self._yuv.data)
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


def plain_transcode(
    info: VideoInfo,
    out_path: Path,
    audio: Path | InputFile,
    duration: float,
    *,
    crf: int = _VIDEO["crf"].default,
    preset: str = _VIDEO["preset"].default,
    audio_bitrate: str = _VIDEO["audio_bitrate"].default,
    encoder: Encoder = "libx264",
) -> Path:
    """A plain ffmpeg decode + encode of ``info``'s video (looped to ``duration``) with ``audio``.

    Same decode filters (CFR, upright, even crop) and the same encoder settings as
    ``read_frames`` + ``VideoWriter``; the benchmark's baseline. Atomic like VideoWriter.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(out_path)
    loop = ["-loop", "1", "-framerate", rate_arg(info.fps)] if info.is_still else ["-stream_loop", "-1"]
    with open_input(info.source) as video, open_input(audio) as sound:
        argv = ffmpeg_command(
            [video_input(info, video, loop), audio_input(sound)],
            [
                *["-map", f"0:{info.stream_index}", "-map", "1:a:0"],
                *["-vf", decode_filters(info) + "," + _ENCODE_FILTER],
                *_encode_args(crf, preset, audio_bitrate, duration, encoder),
                media_url(temp),
            ],
            overwrite=True,
        )
        proc = ToolProcess(argv, pass_fds=(video.fd, sound.fd))
        audio_path = sound.path
    try:
        code = proc.wait()
    finally:
        proc.kill()
    if code != 0:
        temp.unlink(missing_ok=True)
        raise _encode_failure(f"ffmpeg exited with status {code}: {proc.stderr_tail()}", out_path, audio_path)
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
    try:
        with atomic_writer(path) as f:
            f.write(encoded.tobytes())
    except OSError as exc:
        raise disk_error(exc, path, "writing the poster") from exc
    return path
