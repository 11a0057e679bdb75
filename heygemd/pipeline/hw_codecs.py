"""Which video decoder and encoder a render uses: NVDEC/NVENC on GPU servers, else the CPU (libx264).

``video.decoder = "auto"`` decodes with NVDEC (``-hwaccel cuda``) and ``video.encoder = "auto"`` encodes with
NVENC (``h264_nvenc``) when this ffmpeg has them *and* a GPU accepts them; that is asked once per process with
a one-frame trial (a build with NVENC but no GPU or driver fails it), so ``auto`` never fails a render on a
machine without a GPU. Naming ``nvdec`` / ``nvenc`` explicitly skips the trial and fails loudly when unusable.
"""

from __future__ import annotations

import functools
import subprocess
from typing import Literal

from heygemd.pipeline.ffmpeg_argv import Input, ffmpeg_command

DecoderSetting = Literal["auto", "cpu", "nvdec"]
EncoderSetting = Literal["auto", "libx264", "nvenc"]
Decoder = Literal["cpu", "nvdec"]
Encoder = Literal["libx264", "h264_nvenc"]

_TRIAL_SECONDS = 30.0


def choose_decoder(setting: DecoderSetting) -> Decoder:
    if setting == "auto":
        return "nvdec" if nvdec_works() else "cpu"
    return setting


def choose_encoder(setting: EncoderSetting) -> Encoder:
    if setting == "auto":
        return "h264_nvenc" if nvenc_works() else "libx264"
    return "h264_nvenc" if setting == "nvenc" else "libx264"


def decoder_args(decoder: Decoder) -> list[str]:
    """ffmpeg input options for ``decoder`` (frames still come back to system memory for our filters)."""
    return ["-hwaccel", "cuda"] if decoder == "nvdec" else []


def encoder_args(encoder: Encoder, crf: int, preset: str) -> list[str]:
    """ffmpeg video encoder options. NVENC's constant-quality ``-cq`` takes the CRF value (both 0-51, lower is
    better; NVENC at the same number is a little larger and comparable in quality); x264's preset does not
    apply to NVENC, which uses p5 (slow-ish, high quality; it is still far faster than the GPU engine needs)."""
    if encoder == "h264_nvenc":
        return ["-c:v", "h264_nvenc", "-preset", "p5", "-tune", "hq", "-rc", "vbr", "-cq", str(int(crf)), "-b:v", "0"]
    return ["-c:v", "libx264", "-preset", str(preset), "-crf", str(int(crf))]


def nvenc_works() -> bool:
    """Whether ffmpeg can encode one frame with h264_nvenc here (asked once per ffmpeg binary and process)."""
    gray = Input("color=c=gray:s=256x256:d=0.04", ["-f", "lavfi"])
    return _works(tuple(ffmpeg_command([gray], ["-frames:v", "1", "-c:v", "h264_nvenc", "-f", "null", "-"])))


def nvdec_works() -> bool:
    """Whether ffmpeg can open a CUDA device for decoding here (asked once per ffmpeg binary and process)."""
    gray = Input("color=c=gray:s=64x64:d=0.04", ["-f", "lavfi"])
    cuda = ["-init_hw_device", "cuda=gpu", "-filter_hw_device", "gpu"]
    return _works(tuple(ffmpeg_command([gray], ["-frames:v", "1", "-f", "null", "-"], global_options=cuda)))


@functools.lru_cache(maxsize=8)
def _works(argv: tuple[str, ...]) -> bool:
    """Whether ``argv`` exits 0 within ``_TRIAL_SECONDS``."""
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=_TRIAL_SECONDS, start_new_session=True
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0
