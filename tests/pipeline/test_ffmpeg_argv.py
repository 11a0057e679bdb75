"""The command lines heygemd runs, as ffmpeg_argv puts them together: pinned for a decode, an encode and a probe,
each recorded as it starts a real ffmpeg/ffprobe on real files."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from heygemd.fsutil import InputFile
from heygemd.pipeline import encode, frames, probe
from heygemd.pipeline.encode import VideoWriter
from heygemd.pipeline.ffmpeg_argv import media_url
from heygemd.pipeline.frames import read_frames
from heygemd.pipeline.probe import decoder_max_pixels, probe_video
from tests.pipeline.media import FPS, H, W, ffprobe_json, sine

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")


def recorded(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str) -> list[list[str]]:
    """The argv of every call of ``module.name`` (ToolProcess, run_probe) from now on; the call still runs."""
    calls: list[list[str]] = []
    real: Callable[..., Any] = getattr(module, name)

    def recording(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        calls.append(list(argv))
        return real(argv, *args, **kwargs)

    monkeypatch.setattr(module, name, recording)
    return calls


def test_a_probe_reads_the_file_through_its_descriptor_with_its_decoders_held(h264, monkeypatch) -> None:
    probes = recorded(monkeypatch, probe, "run_probe")
    with InputFile.open(h264) as media:
        info = probe_video(media)
        limit = str(decoder_max_pixels(info.max_pixels))
        assert probes[0] == [
            *[FFPROBE, "-hide_banner", "-v", "error", "-max_pixels", limit],
            *["-show_format", "-show_streams", "-of", "json", media.url],
        ]
    assert (info.width, info.height, info.frame_count) == (W, H, FPS)


def test_a_decode_reads_the_file_through_its_descriptor_with_its_decoders_held(h264, monkeypatch) -> None:
    started = recorded(monkeypatch, frames, "ToolProcess")
    with InputFile.open(h264) as media:
        info = probe_video(media)
        decoded = list(read_frames(info))
        url = media.url
    assert started == [
        [
            *[FFMPEG, "-nostdin", "-hide_banner", "-v", "error"],
            *["-max_pixels", str(decoder_max_pixels(info.max_pixels)), "-i", url],
            *["-map", "0:0", "-an", "-sn", "-dn", "-vf", f"fps=25/1,crop={W}:{H}:0:0", "-frames:v", str(FPS)],
            *["-f", "rawvideo", "-pix_fmt", "yuv420p", "pipe:1"],
        ]
    ]
    assert len(decoded) == FPS and decoded[0].shape == (H, W, 3)


def test_an_encode_with_x264_muxes_the_audio_file(h264, media, tmp_path, monkeypatch) -> None:
    started = recorded(monkeypatch, encode, "ToolProcess")
    pictures = list(read_frames(probe_video(h264)))
    out = tmp_path / "out.mp4"
    with InputFile.open(sine(media / "argv.wav", seconds=1)) as sound:
        writer = VideoWriter(out, W, H, FPS, sound, 1.0, crf=20, preset="veryfast", audio_bitrate="96k")
        with writer:
            for picture in pictures:
                writer.write(picture)
        url = sound.url
    assert started == [
        [
            *[FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-y"],
            *["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{W}x{H}", "-r", f"{FPS}/1", "-i", "pipe:0"],
            *["-max_pixels", str(4096 * 4096), "-i", url],
            *["-map", "0:v:0", "-map", "1:a:0", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20"],
            *["-pix_fmt", "yuv420p", "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"],
            *["-color_range", "tv", "-c:a", "aac", "-b:a", "96k", "-t", "1.000000", "-movflags", "+faststart"],
            *["-map_metadata", "-1", media_url(writer.temp_path)],
        ]
    ]
    streams = {s["codec_type"]: s["codec_name"] for s in ffprobe_json(out)["streams"]}
    assert streams == {"video": "h264", "audio": "aac"}
