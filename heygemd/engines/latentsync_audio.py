"""LatentSync's audio conditioning: Whisper encoder states, cut into one 50-token window per video frame.

The reference (latentsync/whisper/audio2feature.py ``audio2feat`` + ``feature2chunks``, its vendored
whisper/audio.py ``log_mel_spectrogram`` and whisper/transcribe.py):

1. log-mel of the **whole** recording: STFT (400-sample Hann window, hop 160, centred with reflected edges), the
   last frame dropped, power through librosa's 80-band mel filters (the reference's assets/mel_filters.npz is
   ``librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)``), ``log10(max(x, 1e-10))``, then
   ``max(x, peak - 8)`` with the peak of the whole recording, then ``(x + 4) / 4``;
2. 3000-frame (30 s) segments of that log-mel, each padded with 0.0 in the log-mel domain to 3000 frames, through
   the encoder: 5 states (the embedding and 4 blocks, without ``ln_post``) of (1500, 384); a segment of ``r`` mel
   frames keeps its first ``int(r / 2)`` steps; segments concatenate: T steps, 50 per second;
3. frame i at ``fps`` takes the steps ``c - 4 .. c + 5`` around ``c = int(i * 50 / fps)``, each clamped to
   ``[0, T - 1]``, flattened step-major to (50, 384) (token ``5 * step + state``); the frames are those the
   reference's loop appends: up to and including the first i with ``int(i * (50 / fps)) > T``.

Deliberate difference: ``fps`` is the presenter's true frame rate (the reference resamples every video to 25 fps).
Memory: the log-mel's peak is found in a first pass over the segments, then each segment's log-mel is made again
and encoded; one segment is in memory at a time, and its states go to a ``feature_store.StepStore`` (an unlinked
temporary file) from which each batch of frames reads back only the steps its windows need.
"""

from __future__ import annotations

import math
from functools import lru_cache

import librosa
import numpy as np
import torch
import torch.nn.functional as F

from heygemd.engines.feature_store import StepStore
from heygemd.engines.latentsync_config import AUDIO_FEAT_LENGTH
from heygemd.engines.latentsync_whisper import WhisperEncoder

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 80
SEGMENT_FRAMES = 3000
"""Log-mel frames per encoder input: 30 s."""
STEPS_PER_SECOND = 50
"""Encoder steps per second of audio (two mel frames each)."""
LEFT_STEPS = AUDIO_FEAT_LENGTH[0] * 2
RIGHT_STEPS = (AUDIO_FEAT_LENGTH[1] + 1) * 2
WINDOW_STEPS = LEFT_STEPS + RIGHT_STEPS
"""Encoder steps per frame window (10)."""
HIDDEN_STATES = 5
"""Encoder states per step: the embedding and the 4 blocks of whisper tiny."""
WIDTH = 384
"""Width of one state (whisper tiny's ``n_audio_state``), the UNet's ``cross_attention_dim``."""
TOKENS = WINDOW_STEPS * HIDDEN_STATES


@lru_cache(maxsize=1)
def mel_filters() -> torch.Tensor:
    """(80, 201) float32: the mel filterbank the reference loads from whisper/assets/mel_filters.npz."""
    return torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS))


def log_mel(wav: np.ndarray, first: int, stop: int) -> torch.Tensor:
    """(80, stop - first) ``log10`` mel power of the STFT frames ``first..stop-1`` of the whole of ``wav``, as
    ``torch.stft(wav, center=True)`` frames them (the signal reflected at its ends), before the normalisation."""
    half = N_FFT // 2
    index = np.arange(first * HOP_LENGTH - half, (stop - 1) * HOP_LENGTH + half)
    last = wav.size - 1
    index = np.abs(index)  # reflected at the start, without repeating sample 0
    index = np.where(index > last, 2 * last - index, index)  # and at the end
    window = torch.hann_window(N_FFT)
    stft = torch.stft(torch.from_numpy(wav[index]), N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True)
    power = stft.abs() ** 2
    return torch.clamp(mel_filters() @ power, min=1e-10).log10()


class WhisperStates:
    """The encoder states of one recording (T steps), ready to be windowed at any frame rate (``windows``).

    Computed once per job and shared by every video of it. ``close`` frees the backing file.
    """

    def __init__(self, wav: np.ndarray, encoder: WhisperEncoder, device: torch.device, dtype: torch.dtype):
        wav = np.ascontiguousarray(np.asarray(wav, dtype=np.float32).reshape(-1))
        frames = wav.size // HOP_LENGTH
        if wav.size <= N_FFT // 2 or frames < 2:
            raise ValueError(f"audio of {wav.size} samples: LatentSync needs at least {2 * HOP_LENGTH} (20 ms)")
        self.samples = int(wav.size)
        segments = [(a, min(a + SEGMENT_FRAMES, frames)) for a in range(0, frames, SEGMENT_FRAMES)]
        peak = torch.stack([log_mel(wav, a, b).max() for a, b in segments]).max()
        self._store = StepStore((HIDDEN_STATES, WIDTH), prefix="heygemd-latentsync-whisper-")
        for a, b in segments:
            spec = (torch.maximum(log_mel(wav, a, b), peak - 8.0) + 4.0) / 4.0
            spec = F.pad(spec, (0, SEGMENT_FRAMES - (b - a)))  # the reference's pad_or_trim: 0.0 in the log-mel
            with torch.inference_mode():
                states = encoder(spec[None].to(device, dtype))[0]  # (5, 1500, 384)
                keep = (b - a) // 2
                rows = states[:, :keep].transpose(0, 1).float().cpu().numpy()
            self._store.append(rows)

    @property
    def steps(self) -> int:
        """T: encoder steps stored, 50 per second of audio."""
        return self._store.rows

    def frame_count(self, fps: float) -> int:
        """How many frames the reference's ``feature2chunks`` makes at ``fps``: about 2 more than the audio lasts."""
        multiplier = 50.0 / _check_fps(fps)
        i = max(0, math.floor(self.steps / multiplier) - 2)
        while int(i * multiplier) <= self.steps:
            i += 1
        return i + 1

    def windows(self, fps: float, start: int, stop: int) -> np.ndarray:
        """float32 (stop - start, 50, 384): the audio tokens of frames ``start..stop-1`` at ``fps``."""
        fps = _check_fps(fps)
        if not 0 <= start <= stop:
            raise ValueError(f"frames {start}..{stop}: need 0 <= start <= stop")
        centres = (np.arange(start, stop, dtype=np.int64) * 50 / fps).astype(np.int64)
        steps = np.clip(centres[:, None] + np.arange(-LEFT_STEPS, RIGHT_STEPS)[None, :], 0, self.steps - 1)
        if steps.size == 0:
            return np.zeros((0, TOKENS, WIDTH), dtype=np.float32)
        first = int(steps.min())
        rows = self._store.read(first, int(steps.max()) + 1)[steps - first]  # (n, 10, 5, 384)
        return rows.reshape(len(centres), TOKENS, WIDTH)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> WhisperStates:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_fps(fps: float) -> float:
    fps = float(fps)
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return fps


def audio_features_with(
    wav: np.ndarray, encoder: WhisperEncoder, fps: float, device: torch.device, dtype: torch.dtype
) -> np.ndarray:
    """float32 (N, 50, 384): every frame the reference makes of ``wav`` at ``fps``, with a loaded encoder."""
    _check_fps(fps)
    with WhisperStates(wav, encoder, device, dtype) as states:
        return states.windows(fps, 0, states.frame_count(fps))
