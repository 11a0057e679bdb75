"""video.decoder / video.encoder: NVDEC/NVENC when ffmpeg and a GPU offer them, else the CPU."""

from __future__ import annotations

import numpy as np
import pytest

from heygemd.pipeline import hw_codecs
from heygemd.pipeline.encode import VideoWriter
from heygemd.pipeline.frames import read_frames
from heygemd.pipeline.probe import probe_video
from tests.pipeline.media import ffprobe_json, mad, sine

has_gpu_codecs = hw_codecs.nvenc_works() and hw_codecs.nvdec_works()


@pytest.mark.skipif(has_gpu_codecs, reason="needs a machine without a usable NVENC/NVDEC")
def test_auto_uses_the_cpu_without_a_gpu() -> None:
    assert hw_codecs.choose_encoder("auto") == "libx264"
    assert hw_codecs.choose_decoder("auto") == "cpu"


def test_explicit_choices_and_their_ffmpeg_options() -> None:
    assert hw_codecs.choose_encoder("libx264") == "libx264" and hw_codecs.choose_encoder("nvenc") == "h264_nvenc"
    assert hw_codecs.choose_decoder("cpu") == "cpu" and hw_codecs.choose_decoder("nvdec") == "nvdec"
    nvenc = hw_codecs.encoder_args("h264_nvenc", 18, "fast")
    assert nvenc[:2] == ["-c:v", "h264_nvenc"] and nvenc[nvenc.index("-cq") + 1] == "18"
    assert hw_codecs.encoder_args("libx264", 23, "fast") == ["-c:v", "libx264", "-preset", "fast", "-crf", "23"]
    assert hw_codecs.decoder_args("nvdec") == ["-hwaccel", "cuda"] and hw_codecs.decoder_args("cpu") == []


@pytest.mark.gpu
@pytest.mark.skipif(not has_gpu_codecs, reason="needs NVENC and NVDEC")
def test_nvenc_writes_h264_and_nvdec_reads_it_back(h264, media, tmp_path) -> None:
    info = probe_video(h264)
    cpu_frames = list(read_frames(info))
    gpu_frames = list(read_frames(info, "nvdec"))
    assert len(gpu_frames) == len(cpu_frames)
    assert max(mad(a, b) for a, b in zip(cpu_frames, gpu_frames, strict=True)) < 1.0
    out = tmp_path / "nvenc.mp4"
    audio = sine(media / "nvenc.wav", seconds=len(cpu_frames) / info.fps)
    with VideoWriter(
        out, info.width, info.height, info.fps, audio, len(cpu_frames) / info.fps, encoder="h264_nvenc"
    ) as writer:
        for frame in cpu_frames:
            writer.write(frame)
    stream = next(s for s in ffprobe_json(out)["streams"] if s["codec_type"] == "video")
    assert stream["codec_name"] == "h264"
    back = list(read_frames(probe_video(out)))
    assert np.mean([mad(a, b) for a, b in zip(cpu_frames, back, strict=True)]) < 3.0
