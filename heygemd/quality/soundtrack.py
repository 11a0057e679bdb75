"""The sound of a video file as its frames hear it: the first audio stream, aligned to the video stream's start.

A file whose sound starts later than its picture (ffmpeg's ``-itsoffset``, an edit list) has silence before the
sound; one whose sound started earlier has its head cut. heygemd's own outputs start both at 0; any file checked by
``heygemd score`` may not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from heygemd.errors import DecodeError, NoAudioStream, SilentAudio
from heygemd.pipeline.audio import SAMPLE_RATE, AudioFeatures, features_from_samples, load_audio_features
from heygemd.pipeline.ffmpeg_argv import audio_input, ffmpeg_command, ffprobe_command
from heygemd.pipeline.ffmpeg_tools import open_input, run_probe, stderr_text
from heygemd.pipeline.probe import VideoInfo

DECODE_TIMEOUT_S = 1800.0


def speech_features(info: VideoInfo, audio: Path | None = None) -> AudioFeatures:
    """The speech to check ``info``'s video against: ``audio`` (a separate file, taken from its own start) or the
    video file's first audio stream, aligned to its video stream."""
    if audio is not None:
        return load_audio_features(audio)
    if not info.has_audio:
        raise NoAudioStream(
            "the video has no sound track to check it against",
            path=info.path,
            hint="Give the speech it should say with --audio.",
        )
    return features_from_samples(info.path, aligned_samples(info))


def aligned_samples(info: VideoInfo) -> np.ndarray:
    """16 kHz mono float32 samples of ``info.path``'s first audio stream, sample 0 at the video stream's start.

    Raises DecodeError when ffmpeg cannot decode it (or the file has no sound) and SilentAudio when it holds no
    samples."""
    first = int(round(_video_start(info) * SAMPLE_RATE))
    # pad with silence (or trim) so that the first sample is the one at the video's start
    output = ["-map", "0:a:0", "-af", f"aresample=async=1:first_pts={first}", "-ac", "1", "-ar", str(SAMPLE_RATE)]
    with open_input(info.source) as media:
        argv = ffmpeg_command([audio_input(media)], [*output, "-f", "f32le", "pipe:1"])
        proc = run_probe(argv, info.path, timeout=DECODE_TIMEOUT_S, pass_fds=media.pass_fds)
    if proc.returncode != 0:
        lines = proc.stderr.decode("utf-8", "replace").splitlines()[-3:]
        raise DecodeError(f"could not decode the sound track ({stderr_text(lines)})", path=info.path)
    usable = len(proc.stdout) - len(proc.stdout) % 4
    samples = np.frombuffer(proc.stdout[:usable], dtype="<f4")
    if samples.size == 0:
        raise SilentAudio("the sound track holds no samples", path=info.path)
    return np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def _video_start(info: VideoInfo) -> float:
    """When (s) the video stream ``info`` reads starts, after the file's start (ffmpeg counts time from the
    earliest stream's start); 0 when the file does not say."""
    options = ["-show_entries", "format=start_time:stream=index,start_time", "-of", "json"]
    with open_input(info.source) as media:
        proc = run_probe(ffprobe_command(media.url, options), info.path, pass_fds=media.pass_fds)
    try:
        found = json.loads(proc.stdout or b"{}")
        file_start = float(found.get("format", {}).get("start_time", 0.0))
        for stream in found.get("streams", []):
            if int(stream.get("index", -1)) == info.stream_index:
                return max(0.0, float(stream.get("start_time", file_start)) - file_start)
    except (ValueError, TypeError, AttributeError):
        pass
    return 0.0
