"""Audio in: decode any common audio with ffmpeg, and the exact Wav2Lip mel features.

``wav2lip_mel`` and ``mel_chunks`` are a public contract (scripts outside the package use them): they
reproduce the official Wav2Lip ``audio.melspectrogram`` and the ``inference.py`` chunking loop.
``AudioFeatures`` is what the pipeline uses: the mel of the whole audio (padded with silence at the tail)
and exactly one 16-column mel window per output video frame, so the output is as long as the audio.

The audio is read through one descriptor (``ffmpeg_tools.open_input``), refused from its header when longer than
``video.max_audio_seconds`` (``AudioTooLong``), and streamed from ffmpeg into one buffer sized from that header,
never past the limit, with the stop flag polled while it decodes.

No torch here: the engines are the only modules that import it. The mel bank and the window are librosa's,
stored as it computes them (``MEL_TABLES``); the STFT is numpy's rfft over strided frames, in pieces, which is
how ``librosa.stft`` computes them (``tests/pipeline/test_audio.py`` checks both against librosa, to a few units in
the last place: librosa and numpy are not pinned).
"""

from __future__ import annotations

import functools
import json
import math
import os
import select
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heygemd.errors import AudioTooLong, DecodeError, Interrupted, NoAudioStream, NotMedia, SilentAudio
from heygemd.fsutil import InputFile, input_path
from heygemd.pipeline.engine_contract import FrameFeatures
from heygemd.pipeline.ffmpeg_argv import AUDIO_INPUT_MAX_PIXELS, audio_input, ffmpeg_command, ffprobe_command
from heygemd.pipeline.ffmpeg_tools import ToolProcess, open_input, run_probe, stderr_text
from heygemd.settings import VideoSettings

SAMPLE_RATE = 16000
"""Sample rate of every Wav2Lip feature (hparams.sample_rate)."""
N_FFT = 800
HOP_LENGTH = 200
WIN_LENGTH = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0
MEL_STEP_SIZE = 16
"""Mel columns in one window fed to the model (16 columns = 200 ms)."""
MEL_FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH  # 80.0

STFT_BLOCK_FRAMES = 4800
"""Mel columns computed at once (60 s of audio)."""

DECODE_TIMEOUT_S = 1800.0
"""Longest an audio decode may take (hours of audio decode in well under a minute; a hung share does not)."""

MAX_SECONDS: float = VideoSettings.model_fields["max_audio_seconds"].default
"""The default limit (``video.max_audio_seconds``)."""

BUFFER_MARGIN = 1.02
"""The decoded samples are given room for the probed duration times this, plus a second (a header's duration is
an estimate for some formats); a longer stream gets more room, never past the limit."""

POLL_SECONDS = 0.25
"""Longest a read waits for ffmpeg before looking at the stop flag again."""

TAIL_PAD_SECONDS = 0.5
"""Silence appended before computing the mel, so every frame of the audio gets its own full window.

A frame ``i < ceil(duration * fps)`` starts at mel column ``int(i * 80 / fps) <= 80 * duration`` and needs 16
columns after it; 0.19 s of padding covers that at any frame rate, 0.5 s leaves a margin.
"""


@dataclass(frozen=True)
class _AudioStream:
    """What ffprobe says of the first audio stream."""

    channels: int
    duration: float | None
    """Seconds, from the stream or else the container; None when neither states it."""


def _probe_audio(media: InputFile) -> _AudioStream:
    """The first audio stream of ``media``; NotMedia / NoAudioStream when there is none."""
    path = media.path
    if media.size() == 0:
        raise NotMedia(
            "the file is empty (0 bytes)",
            path=path,
            hint="The file may still be copying, or the export failed; copy it again.",
        )
    cmd = ffprobe_command(
        media.url,
        ["-show_entries", "stream=codec_type,channels,duration:format=duration", "-of", "json"],
        max_pixels=AUDIO_INPUT_MAX_PIXELS,
    )
    proc = run_probe(cmd, path, pass_fds=media.pass_fds)
    if proc.returncode != 0:
        reason = _last_line(proc.stderr).replace(media.url + ": ", "")
        raise NotMedia(f"not a readable media file ({reason})", path=path)
    try:
        data = json.loads(proc.stdout or b"{}")
    except json.JSONDecodeError as exc:
        raise NotMedia(f"ffprobe gave unreadable output ({exc})", path=path) from None
    streams = data.get("streams", [])
    types = [str(s.get("codec_type", "")) for s in streams]
    if not types:
        raise NotMedia("the file holds no audio or video streams", path=path)
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not audio:
        raise NoAudioStream(f"the file has no audio stream (streams: {', '.join(sorted(set(types)))})", path=path)
    duration = _seconds(audio[0].get("duration")) or _seconds((data.get("format") or {}).get("duration"))
    return _AudioStream(channels=max(1, int(audio[0].get("channels") or 1)), duration=duration)


def _seconds(text: object) -> float | None:
    try:
        value = float(str(text))
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _last_line(stderr: bytes) -> str:
    return stderr_text(stderr.decode("utf-8", "replace").splitlines()[-1:])


def _too_long(path: Path, duration: float | None, max_seconds: float) -> AudioTooLong:
    """AudioTooLong for an audio of ``duration`` seconds (None: longer than the limit, by decoding it)."""

    def clock(seconds: float) -> str:  # 2:00:00.0
        hours, tenths = divmod(round(seconds * 10), 36000)
        minutes, tenths = divmod(tenths, 600)
        return f"{hours}:{minutes:02d}:{tenths / 10:04.1f}"

    lasts = clock(duration) if duration is not None else f"more than {clock(max_seconds)}"
    return AudioTooLong(
        f"the audio lasts {lasts}; a job takes at most {clock(max_seconds)} of audio",
        path=path,
        hint=f"Split it into parts of at most {clock(max_seconds)}, one job each (e.g. ffmpeg -i {path.name} "
        f"-f segment -segment_time {int(max_seconds)} -c copy {path.stem}-%02d{path.suffix}), "
        "or raise video.max_audio_seconds.",
    )


def decode_audio(
    source: Path | InputFile,
    sample_rate: int = SAMPLE_RATE,
    *,
    max_seconds: float = MAX_SECONDS,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Decode the first audio stream of ``source`` to float32 mono samples at ``sample_rate``.

    Works for any file ffmpeg reads: WAV, MP3, M4A/AAC, FLAC, OGG/Opus, or the sound track of a video. The first
    audio stream is the one the output is muxed with, so mouth and sound come from the same track. Channels are
    averaged, as the reference's librosa.load does (ffmpeg's own down-mix is louder by 3 dB for stereo).
    NaN/Inf samples become 0. An open ``InputFile`` is read through its descriptor.

    An audio whose header says it lasts more than ``max_seconds`` is refused before decoding; one whose header
    understates it stops decoding at ``max_seconds``. The samples stream from ffmpeg into one buffer sized from
    the header (never larger than the limit allows), one second at a time, and ``should_stop`` is polled between
    them (Interrupted: ffmpeg is ended).

    Raises NotMedia (not a media file), NotRegularFile / UnsafePath (a path that is not a regular file),
    NoAudioStream (media without sound), AudioTooLong, SilentAudio (zero samples), DecodeError (ffmpeg failed
    mid-way), Interrupted, ToolMissing (no ffmpeg/ffprobe).
    """
    rate = int(sample_rate)
    with open_input(source) as media:
        stream = _probe_audio(media)
        if stream.duration is not None and stream.duration > max_seconds:
            raise _too_long(media.path, stream.duration, max_seconds)
        cmd = ffmpeg_command([audio_input(media)], ["-map", "0:a:0", "-ar", str(rate), "-f", "f32le", "pipe:1"])
        proc = ToolProcess(cmd, stdout=True, pass_fds=media.pass_fds)
    path = media.path
    try:
        samples = _stream_samples(proc, path, stream, rate, max_seconds, should_stop or (lambda: False))
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise DecodeError("ffmpeg did not exit after the audio ended", path=path) from None
    finally:
        proc.kill()
    if code != 0:
        reason = proc.stderr_tail().splitlines()[-1].replace(media.url + ": ", "")
        raise DecodeError(f"could not decode the audio ({reason})", path=path)
    if samples.size == 0:
        raise SilentAudio("the audio stream holds no samples", path=path)
    return np.nan_to_num(samples, copy=False, nan=0.0, posinf=0.0, neginf=0.0)


def _stream_samples(
    proc: ToolProcess,
    path: Path,
    stream: _AudioStream,
    rate: int,
    max_seconds: float,
    stop: Callable[[], bool],
) -> np.ndarray:
    """ffmpeg's interleaved float32 output, one second at a time, averaged over the channels into one buffer."""
    channels = stream.channels
    limit = int(max_seconds * rate)
    if stream.duration is None:
        samples = np.empty(min(limit, 60 * rate), np.float32)  # grown as it fills
    else:
        samples = np.empty(min(limit, int(stream.duration * BUFFER_MARGIN * rate) + rate), np.float32)
    second = np.empty(rate * channels, dtype="<f4")
    view = second.data.cast("B")
    frame_bytes = 4 * channels
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + DECODE_TIMEOUT_S
    count = filled = 0
    ended = False
    while not ended:
        if time.monotonic() > deadline:
            raise DecodeError(f"ffmpeg did not finish decoding the audio within {DECODE_TIMEOUT_S:.0f} s", path=path)
        if not select.select([fd], [], [], POLL_SECONDS)[0]:
            if stop():
                raise Interrupted("stopped while decoding the audio", path=path)
            continue
        got = os.readv(fd, [view[filled:]])
        filled += got
        ended = got == 0
        if filled < len(view) and not ended:
            continue
        frames = filled // frame_bytes  # at the end, a partial last frame is dropped
        if count + frames > limit:
            raise _too_long(path, None, max_seconds)
        if count + frames > samples.size:
            samples = _grown(samples, count, count + frames, limit)
        interleaved = second[: frames * channels]
        if channels == 1:
            samples[count : count + frames] = interleaved
        else:
            samples[count : count + frames] = interleaved.reshape(frames, channels).mean(axis=1, dtype=np.float32)
        count += frames
        filled = 0
        if stop():
            raise Interrupted("stopped while decoding the audio", path=path)
    return samples[:count]


def _grown(samples: np.ndarray, count: int, needed: int, limit: int) -> np.ndarray:
    """A larger buffer holding ``samples[:count]``: twice the size, at least ``needed``, at most ``limit``."""
    larger = np.empty(min(limit, max(needed, 2 * samples.size)), np.float32)
    larger[:count] = samples[:count]
    return larger


MEL_TABLES = Path(__file__).with_name("wav2lip_mel.npz")
"""librosa's mel filter bank (``librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)``),
Hann window (``librosa.filters.get_window("hann", 800, fftbins=True)``) and the bank's band centres
(``librosa.mel_frequencies(n_mels=82, fmin=55, fmax=7600)[1:-1]``, for mouthwarp) as librosa computes them,
stored once (as Whisper ships its ``mel_filters.npz``): importing librosa in a render costs ~100 MiB of RSS
(numba, llvmlite, its audio I/O) for three constant tables. ``tests/pipeline/test_audio.py`` recomputes them
with librosa and compares them bit for bit (and says how to write the file again)."""


@functools.lru_cache(maxsize=1)
def _mel_tables() -> dict[str, np.ndarray]:
    with np.load(MEL_TABLES) as tables:
        arrays = {name: tables[name] for name in ("mel_basis", "hann_window", "band_hz")}
    for array in arrays.values():
        array.setflags(write=False)
    return arrays


def _mel_basis() -> np.ndarray:
    """float32 (80, 401) Slaney mel filter bank of the reference (librosa.filters.mel defaults: htk=False,
    norm='slaney')."""
    return _mel_tables()["mel_basis"]


def _hann_window() -> np.ndarray:
    """float64 (800,) periodic Hann window that librosa's ``stft(window="hann")`` applies."""
    return _mel_tables()["hann_window"]


def mel_band_hz() -> np.ndarray:
    """Read-only float64 (80,) centre frequency (Hz) of each mel band of the bank (Slaney scale)."""
    return _mel_tables()["band_hz"]


FFT_FRAMES = 256
"""Frames transformed at once within a mel block (as librosa does): the float64 and complex temporaries stay
~3 MB; a whole 60 s block at once took ~85 MB, and the glibc heap kept much of it."""


def _stft_magnitude(segment: np.ndarray) -> np.ndarray:
    """``abs(librosa.stft(segment, n_fft=800, hop_length=200, win_length=800, window="hann", center=False))``:
    float32 (401, frames), frame t the windowed ``segment[t*hop : t*hop + n_fft]``."""
    frames = np.lib.stride_tricks.sliding_window_view(segment, N_FFT)[::HOP_LENGTH]
    magnitude = np.empty((len(frames), N_FFT // 2 + 1), dtype=np.float32)
    for first in range(0, len(frames), FFT_FRAMES):
        spectrum = np.fft.rfft(_hann_window() * frames[first : first + FFT_FRAMES], axis=-1)
        magnitude[first : first + FFT_FRAMES] = np.abs(spectrum.astype(np.complex64))
    return magnitude.T


def wav2lip_mel(wav: np.ndarray) -> np.ndarray:
    """The Wav2Lip mel spectrogram of 16 kHz mono ``wav``: float32 (80, 1 + len(wav) // 200) in [-4, 4].

    Exactly the reference ``audio.melspectrogram``: pre-emphasis 0.97; STFT (n_fft 800, hop 200, Hann window
    800, centred); magnitude; Slaney mel bank (80 bands, 55-7600 Hz); ``20*log10(max(1e-5, x)) - 20`` dB;
    symmetric normalisation ``clip(8 * (S + 100) / 100 - 4, -4, 4)``.

    The reference ran on librosa < 0.10, whose ``stft`` padded the centred frames with ``pad_mode='reflect'``;
    librosa 0.10 changed the default to 'constant'. We pass 'reflect' explicitly so the edge columns match the
    checkpoints' training features. Reflect padding needs more than 400 samples.
    """
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if wav.size <= N_FFT // 2:
        raise ValueError(f"wav2lip_mel needs more than {N_FFT // 2} samples, got {wav.size}")
    # y[n] = x[n] - 0.97 x[n-1] with y[0] = x[0]: scipy.signal.lfilter([1, -0.97], [1], x), without its import cost
    wav = np.asarray(wav, dtype=np.float64)
    emphasised = np.empty_like(wav)
    emphasised[:1] = wav[:1]
    emphasised[1:] = wav[1:] - PREEMPHASIS * wav[:-1]
    # Centring = reflect-padding n_fft/2 on both sides; then frame t covers padded[t*hop : t*hop + n_fft]. Done in
    # blocks of frames (each block is an uncentred STFT of its own slice, bit for bit the same frames), so memory
    # stays flat however long the audio: the whole-file complex spectrum of a 10-minute lesson is 150 MB.
    padded = np.pad(emphasised.astype(np.float32), N_FFT // 2, mode="reflect")
    n_frames = 1 + wav.size // HOP_LENGTH
    mel = np.empty((N_MELS, n_frames), dtype=np.float32)
    for first in range(0, n_frames, STFT_BLOCK_FRAMES):
        last = min(n_frames, first + STFT_BLOCK_FRAMES)
        segment = padded[first * HOP_LENGTH : (last - 1) * HOP_LENGTH + N_FFT]
        mel[:, first:last] = normalize_mel(np.dot(_mel_basis(), _stft_magnitude(segment)))
    return mel


def normalize_mel(amplitude: np.ndarray) -> np.ndarray:
    """Mel magnitudes -> Wav2Lip features: ``clip(8 * ((20*log10(max(1e-5, x)) - 20 + 100) / 100) - 4, -4, 4)``.

    -100 dB and below (after the -20 dB reference) map to -4, 0 dB and above to +4; float32, same shape.
    """
    min_level = np.float32(10.0 ** (MIN_LEVEL_DB / 20.0))  # 1e-5
    db = 20.0 * np.log10(np.maximum(min_level, amplitude)) - REF_LEVEL_DB
    normalised = 2 * MAX_ABS_VALUE * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
    return np.clip(normalised, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


def mel_db(mel: np.ndarray) -> np.ndarray:
    """The inverse of ``normalize_mel`` (within its clipping): each value's level in dB, -100 (silence) .. 0."""
    m = np.clip(np.asarray(mel, dtype=np.float64), -MAX_ABS_VALUE, MAX_ABS_VALUE)
    return (m + MAX_ABS_VALUE) / (2 * MAX_ABS_VALUE) * -MIN_LEVEL_DB + MIN_LEVEL_DB


def mel_chunks(mel: np.ndarray, fps: float) -> np.ndarray:
    """The reference inference chunking: float32 (N, 80, 16), one window per video frame.

    For i = 0, 1, ...: ``start = int(i * 80 / fps)`` (computed as the reference does, ``i * (80 / fps)``);
    when ``start + 16 > T`` the last 16 columns are appended and the loop stops, else ``mel[:, start:start + 16]``.
    (This yields ~3 fewer windows than the audio has frames; ``AudioFeatures.chunks`` pads the audio to avoid that.)
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    n_cols = mel.shape[1]
    if n_cols < MEL_STEP_SIZE:
        raise ValueError(f"mel has {n_cols} columns, fewer than one window ({MEL_STEP_SIZE})")
    multiplier = MEL_FRAMES_PER_SECOND / fps
    chunks: list[np.ndarray] = []
    i = 0
    while True:
        start = int(i * multiplier)
        if start + MEL_STEP_SIZE > n_cols:
            chunks.append(mel[:, n_cols - MEL_STEP_SIZE :])
            break
        chunks.append(mel[:, start : start + MEL_STEP_SIZE])
        i += 1
    return np.stack(chunks).astype(np.float32, copy=False)


def window_starts(fps: float, start: int, stop: int) -> np.ndarray:
    """First mel column of the windows of frames ``start..stop-1``: ``int(i * (80 / fps))``, as in ``mel_chunks``."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    frames = np.arange(start, stop, dtype=np.int64)
    return np.floor(frames * (MEL_FRAMES_PER_SECOND / fps)).astype(np.int64)


@dataclass(frozen=True, eq=False)
class AudioFeatures:
    """The speech audio of a job, ready for any frame rate.

    ``source`` is the file as it was decoded: an open ``InputFile`` (the encoder muxes the output's sound from
    its descriptor) or a path. ``duration`` is the length of the decoded audio in seconds (before padding);
    ``mel`` is the read-only float32 (80, T) Wav2Lip mel of that audio followed by ``TAIL_PAD_SECONDS`` of silence.
    """

    source: Path | InputFile
    duration: float
    mel: np.ndarray
    prompts: FrameFeatures | None = None
    """Engine-specific per-frame features (e.g. MuseTalk's Whisper prompts), computed once per job by the engine
    that needs them (``LipSyncSession.audio``); None for engines that read the mel only."""

    @property
    def path(self) -> Path:
        """The file as the user knows it (errors name it)."""
        return input_path(self.source)

    def frame_count(self, fps: float) -> int:
        """Video frames that cover the whole audio at ``fps``: ``max(1, ceil(duration * fps))``.

        The encoder cuts the video at the audio's exact duration, so the last frame may show for less than 1/fps.
        """
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        return max(1, math.ceil(self.duration * fps - 1e-9))

    def windows(self, fps: float, start: int = 0, stop: int | None = None) -> np.ndarray:
        """float32 (stop - start, 80, 16) mel windows of frames ``start..stop-1`` (default: all frames).

        Frame i gets the reference window ``mel[:, int(i*80/fps):+16]``; use this for batches of a long audio
        instead of materialising every window at once.
        """
        count = self.frame_count(fps)
        stop = count if stop is None else stop
        if not 0 <= start <= stop <= count:
            raise ValueError(f"frames {start}..{stop} outside 0..{count}")
        starts = window_starts(fps, start, stop)
        if starts.size and starts[-1] + MEL_STEP_SIZE > self.mel.shape[1]:
            # Padding guarantees this never happens for a mel built by features_from_samples.
            raise ValueError(f"mel of {self.mel.shape[1]} columns too short for frame {stop - 1} at {fps} fps")
        offsets = np.arange(MEL_STEP_SIZE)
        columns = starts[:, None] + offsets[None, :]  # (N, 16)
        return np.ascontiguousarray(self.mel[:, columns].transpose(1, 0, 2), dtype=np.float32)

    def chunks(self, fps: float) -> np.ndarray:
        """float32 (frame_count(fps), 80, 16): the reference chunking of the padded mel, one window per frame."""
        return self.windows(fps)

    def loudness(self, fps: float) -> np.ndarray:
        """float32 (frame_count(fps),) speech energy per frame in [0, 1].

        The mean over the 80 bands of the two centre columns of each frame's window, mapped from the mel range
        [-4, 4] to [0, 1]: silence is 0, loud speech approaches 1. Used to pick a poster frame with an open mouth.
        """
        starts = window_starts(fps, 0, self.frame_count(fps))
        band_mean = self.mel.mean(axis=0)
        centre = MEL_STEP_SIZE // 2
        level = (band_mean[starts + centre - 1] + band_mean[starts + centre]) / 2.0
        return np.clip((level + MAX_ABS_VALUE) / (2 * MAX_ABS_VALUE), 0.0, 1.0).astype(np.float32)


def features_from_samples(source: Path | InputFile, wav: np.ndarray) -> AudioFeatures:
    """AudioFeatures of already decoded 16 kHz mono ``wav`` (``source`` is where it came from)."""
    source = source if isinstance(source, InputFile) else Path(source)  # kept: a video's sound is muxed from it
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if wav.size == 0:
        raise SilentAudio("the audio holds no samples", path=input_path(source))
    padded = np.concatenate([wav, np.zeros(int(round(TAIL_PAD_SECONDS * SAMPLE_RATE)), dtype=np.float32)])
    mel = wav2lip_mel(padded)
    mel.setflags(write=False)
    return AudioFeatures(source=source, duration=wav.size / SAMPLE_RATE, mel=mel)


def load_audio_features(source: Path | InputFile) -> AudioFeatures:
    """Decode ``source`` once (see ``decode_audio`` for the errors) and compute its padded Wav2Lip mel."""
    return features_from_samples(source, decode_audio(source, SAMPLE_RATE))
