"""Frames out (heygemd.pipeline.encode) against the real ffmpeg/ffprobe, with tiny media made on the spot."""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from heygemd.demo import presenter_frames
from heygemd.errors import EncodeError, NoAudioStream
from heygemd.pipeline.encode import VideoWriter, plain_transcode, write_poster
from heygemd.pipeline.ffmpeg_tools import is_disk_full
from heygemd.pipeline.frames import read_frames
from heygemd.pipeline.probe import probe_video, top_level_atoms
from tests.pipeline.media import FPS, H, W, ffmpeg, ffmpeg_children, ffprobe_json, mad, requires_ffmpeg, sine

pytestmark = requires_ffmpeg


# --- writer ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("audio_kind", ["wav", "mp3", "video's track"])
def test_video_writer_output(audio_kind, tmp_path):
    audio_dir = tmp_path / "in"
    audio_dir.mkdir()
    if audio_kind == "wav":
        audio = sine(audio_dir / "声音 文件.wav", 1.23)
    elif audio_kind == "mp3":
        audio = sine(audio_dir / "voice.mp3", 1.23, "-c:a", "libmp3lame")
    else:
        audio = audio_dir / "with sound.mp4"
        ffmpeg(
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=64x48:rate=10:duration=2",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=300:duration=1.23",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
            str(audio),
        )
        assert probe_video(audio).has_audio
    audio_duration = float(ffprobe_json(audio)["format"]["duration"])
    out = tmp_path / "输出 目录" / "讲话 视频 1.mp4"
    n = math.ceil(audio_duration * FPS)  # frames that cover the audio
    written = list(presenter_frames(n / FPS, FPS, (W, H)))
    assert len(written) == n
    with VideoWriter(out, W, H, FPS, audio, audio_duration) as writer:
        for frame in written:
            writer.write(frame)
    assert sorted(os.listdir(out.parent)) == [out.name]  # no partial file left
    probe = ffprobe_json(out)
    (video,) = [s for s in probe["streams"] if s["codec_type"] == "video"]
    (sound,) = [s for s in probe["streams"] if s["codec_type"] == "audio"]
    assert (video["codec_name"], video["pix_fmt"], sound["codec_name"]) == ("h264", "yuv420p", "aac")
    assert (video["width"], video["height"]) == (W, H)
    assert float(probe["format"]["duration"]) == pytest.approx(audio_duration, abs=1 / FPS)
    assert float(video["duration"]) == pytest.approx(audio_duration, abs=1 / FPS)
    names = [name for name, _, _ in top_level_atoms(out)]
    assert names.index("moov") < names.index("mdat")  # faststart
    # Colours survive the BGR -> yuv420p (BT.709) -> BGR round trip.
    back = list(read_frames(probe_video(out)))
    assert len(back) == n
    assert all(mad(a, b) < 4 for a, b in zip(back, written, strict=True))
    bias = np.mean([(a.astype(np.int16) - b).mean(axis=(0, 1)) for a, b in zip(back, written, strict=True)], axis=0)
    assert np.all(np.abs(bias) < 1.5), bias  # a BT.601/BT.709 mix-up shifts colours by 3-4 levels


def make_sine(directory: Path, seconds: float = 1.0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return sine(directory / "tone.wav", seconds)


def test_video_writer_exception_leaves_nothing(tmp_path):
    audio = make_sine(tmp_path / "in")
    out = tmp_path / "out" / "result.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(out, W, H, FPS, audio, 1.0) as writer:
            writer.write(np.zeros((H, W, 3), np.uint8))
            assert writer.temp_path.parent == out.parent and len(ffmpeg_children()) == 1
            raise RuntimeError("boom")
    assert os.listdir(out.parent) == []
    assert ffmpeg_children() == []


def test_video_writer_ffmpeg_failure_is_encode_error(tmp_path):
    audio = make_sine(tmp_path / "in")
    out = tmp_path / "out" / "result.mp4"
    with pytest.raises(EncodeError) as err:
        with VideoWriter(out, W, H, FPS, audio, 1.0, preset="no-such-preset") as writer:
            for _ in range(25):
                writer.write(np.zeros((H, W, 3), np.uint8))
    assert "result.mp4" in err.value.message and "preset" in err.value.message.lower()
    assert os.listdir(out.parent) == [] and ffmpeg_children() == []


def test_video_writer_audio_without_sound_is_named(h264, tmp_path):
    out = tmp_path / "result.mp4"
    with pytest.raises(NoAudioStream) as err:
        with VideoWriter(out, W, H, FPS, h264, 1.0) as writer:
            for _ in range(25):
                writer.write(np.zeros((H, W, 3), np.uint8))
    assert h264.name in err.value.message
    assert os.listdir(tmp_path) == []


def test_video_writer_rejects_bad_frames_and_sizes(tmp_path):
    audio = make_sine(tmp_path / "in")
    with pytest.raises(ValueError):
        VideoWriter(tmp_path / "odd.mp4", 161, 120, FPS, audio, 1.0)
    with pytest.raises(ValueError):
        with VideoWriter(tmp_path / "x.mp4", W, H, FPS, audio, 1.0) as writer:
            writer.write(np.zeros((H, W + 2, 3), np.uint8))
    assert not (tmp_path / "x.mp4").exists() and ffmpeg_children() == []


def test_disk_full_messages_are_recognised():
    assert is_disk_full("av_interleaved_write_frame(): No space left on device")
    assert not is_disk_full("Invalid data found when processing input")


# --- poster, plain transcode -----------------------------------------------------------------------


def test_write_poster_scales_and_is_atomic(tmp_path):
    frame = next(presenter_frames(0.04, FPS, (320, 180)))
    poster = write_poster(frame, tmp_path / "海报 1.jpg", max_side=100)
    assert os.listdir(tmp_path) == ["海报 1.jpg"]
    image = cv2.imdecode(np.fromfile(poster, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (56, 100, 3)
    assert mad(image, cv2.resize(frame, (100, 56), interpolation=cv2.INTER_AREA)) < 6


def test_plain_transcode_matches_settings_and_audio_length(h264, tmp_path):
    audio = make_sine(tmp_path / "in", seconds=1.5)  # longer than the 1 s clip: the video loops
    out = plain_transcode(probe_video(h264), tmp_path / "out" / "plain.mp4", audio, 1.5, crf=23, preset="ultrafast")
    probe = ffprobe_json(out)
    kinds = sorted((s["codec_type"], s["codec_name"]) for s in probe["streams"])
    assert kinds == [("audio", "aac"), ("video", "h264")]
    assert float(probe["format"]["duration"]) == pytest.approx(1.5, abs=1 / FPS)
    assert os.listdir(out.parent) == ["plain.mp4"]
