"""MuseTalk's audio conditioning: Whisper-tiny encoder states, cut into one 50-token window per video frame.

The reference (musetalk/utils/audio_processor.py ``get_audio_feature`` + ``get_whisper_chunk``):

1. 16 kHz audio in consecutive 30 s segments; each through WhisperFeatureExtractor (80-bin log-mel, padded to
   3000 frames) and the encoder with ``output_hidden_states``: 5 states of (1500, 384) per segment, stacked to
   (1500, 5, 384); segments are encoded independently and concatenated in time (50 steps per second);
2. trimmed to ``floor(seconds * 50)`` steps, then ``2 * ceil(50 / fps)`` zero steps prepended (and zeros after);
3. frame i takes the 10 steps from ``floor(i * 50 / fps)`` of the padded array, flattened time-major to
   (50, 384): token ``5 * t + layer``.

Deliberate differences: ``fps`` is the video's true rate (the reference truncates 29.97 to 29, and its lips drift
1 s ahead after 30 s); windows reaching past the zero padding read more zeros instead of stopping the program.
Memory: one 30 s segment is encoded at a time and its states go to a ``feature_store.StepStore`` (an unlinked
temporary file); each batch of frames reads back only the steps its windows need, so a long lesson costs disk and
page cache, not the process's memory.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from transformers import WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from heygemd.engines.feature_store import StepStore
from heygemd.engines.musetalk_load import HIDDEN_STATES, PROMPT_WIDTH

SAMPLE_RATE = 16000
SEGMENT_SAMPLES = 30 * SAMPLE_RATE
"""One Whisper input: 30 s (the feature extractor pads every segment to this)."""
STEPS_PER_SECOND = 50
"""Whisper encoder steps per second of audio (20 ms each)."""
LEFT_CONTEXT = RIGHT_CONTEXT = 2
"""Video frames of audio context before and after each frame (audio_padding_length_left/right)."""
WINDOW_STEPS = 2 * (LEFT_CONTEXT + RIGHT_CONTEXT + 1)
"""Encoder steps per frame window (10); times 5 hidden states = 50 tokens."""
TOKENS = WINDOW_STEPS * HIDDEN_STATES


def frames_in(samples: int, fps: float) -> int:
    """The reference's frame count for ``samples`` of 16 kHz audio at ``fps``: ``floor(seconds * fps)``."""
    return math.floor(samples / SAMPLE_RATE * fps)


def positional_encoding(tokens: int = TOKENS, width: int = PROMPT_WIDTH) -> torch.Tensor:
    """(tokens, width) sinusoidal table added to the prompts (musetalk/models/unet.py ``PositionalEncoding``)."""
    position = torch.arange(0, tokens, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, width, 2).float() * (-math.log(10000.0) / width))
    table = torch.zeros(tokens, width)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return table


class WhisperFeatures:
    """The encoder states of one recording, ready to be windowed at any frame rate (``windows``).

    Computed once per job and shared by every video of it. ``close`` frees the backing file.
    """

    def __init__(
        self,
        wav: np.ndarray,
        encoder: WhisperEncoder,
        extractor: WhisperFeatureExtractor,
        device: torch.device,
        dtype: torch.dtype,
    ):
        wav = np.asarray(wav, dtype=np.float32).reshape(-1)
        self.samples = int(wav.size)
        self.steps = math.floor(self.samples / SAMPLE_RATE * STEPS_PER_SECOND)
        self._store = StepStore((HIDDEN_STATES, PROMPT_WIDTH), prefix="heygemd-whisper-")
        for first in range(0, self.samples, SEGMENT_SAMPLES):
            if self._store.rows >= self.steps:
                break
            segment = wav[first : first + SEGMENT_SAMPLES]
            mel = extractor(segment, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
            with torch.inference_mode():
                hidden = encoder(torch.from_numpy(mel).to(device, dtype), output_hidden_states=True).hidden_states
                stacked = torch.stack(hidden, dim=2)[0].float().cpu().numpy()  # (1500, 5, 384)
            self._store.append(stacked[: self.steps - self._store.rows])
        self.steps = self._store.rows  # the segments' states always cover the audio; never more than was written

    def windows(self, fps: float, start: int, stop: int) -> np.ndarray:
        """float32 (stop - start, 50, 384) prompts of frames ``start..stop-1`` at ``fps`` (before the PE)."""
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if self._store.closed:
            raise RuntimeError("WhisperFeatures used after close()")
        multiplier = STEPS_PER_SECOND / fps
        left_pad = math.ceil(multiplier) * LEFT_CONTEXT
        frames = np.arange(start, stop, dtype=np.int64)
        firsts = np.floor(frames * multiplier).astype(np.int64) - left_pad  # in unpadded steps
        steps = firsts[:, None] + np.arange(WINDOW_STEPS)[None, :]  # (n, 10)
        valid = (steps >= 0) & (steps < self.steps)
        out = np.zeros((len(frames), WINDOW_STEPS, HIDDEN_STATES, PROMPT_WIDTH), dtype=np.float32)
        if valid.any():
            wanted = steps[valid]
            first = int(wanted.min())
            out[valid] = self._store.read(first, int(wanted.max()) + 1)[wanted - first]
        return out.reshape(len(frames), TOKENS, PROMPT_WIDTH)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> WhisperFeatures:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def audio_prompts_with(
    wav: np.ndarray,
    encoder: WhisperEncoder,
    extractor: WhisperFeatureExtractor,
    fps: float,
    device: torch.device | None = None,
) -> np.ndarray:
    """The reference's (floor(seconds * fps), 50, 384) prompts of ``wav`` with an already loaded Whisper."""
    with WhisperFeatures(wav, encoder, extractor, device or torch.device("cpu"), torch.float32) as features:
        return features.windows(fps, 0, frames_in(features.samples, fps))
