"""LatentSync's audio windows against the reference computation re-stated from its formulas
(``latentsync_reference``: the vendored Whisper's log-mel and encoder, ``audio2feat`` + ``feature2chunks``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from heygemd.engines import latentsync_audio
from heygemd.engines.latentsync import audio_features
from heygemd.engines.latentsync_audio import WhisperStates
from heygemd.engines.latentsync_load import load_whisper
from heygemd.errors import CheckpointError
from tests.engines import latentsync_reference as ref

CPU = torch.device("cpu")


def speechlike(seconds: float, seed: int = 0, loud_after: float | None = None) -> np.ndarray:
    """A voiced tone with a syllable-rate envelope and noise; ``loud_after``: 4x louder from that second on."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    wav = 0.2 * envelope * np.sin(2 * np.pi * 180 * t) + 0.02 * rng.standard_normal(t.size)
    if loud_after is not None:
        wav[t >= loud_after] *= 4
    return wav.astype(np.float32)


@pytest.fixture(scope="module")
def long_audio(latentsync_folder: Path):
    """31.3 s (two 30 s segments, the second louder): our states and the reference's features of it."""
    wav = speechlike(31.3, loud_after=30.5)
    encoder = load_whisper(latentsync_folder / "whisper" / "tiny.pt")
    with WhisperStates(wav, encoder, CPU, torch.float32) as states:
        yield wav, encoder, states, ref.audio2feat(latentsync_folder / "whisper" / "tiny.pt", wav)


@pytest.mark.parametrize("fps", [25.0, 29.97])
def test_windows_match_the_reference_across_a_30s_border(long_audio, fps: float) -> None:
    wav, _, states, reference_features = long_audio
    expected = ref.feature2chunks(reference_features, fps)
    assert states.steps == len(reference_features) == 1500 + int(130 / 2)  # 3130 mel frames: 3000 + 130
    count = states.frame_count(fps)
    ours = states.windows(fps, 0, count)
    assert ours.shape == expected.shape == (count, 50, 384)
    if fps == 25.0:
        assert count == states.steps // 2 + 2  # about two frames more than the 31.3 s last
    else:
        assert count == math.ceil((states.steps + 1) * fps / 50) + 1 == 940  # the first frame past the end, + 1
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4 * float(expected.std()))
    # the edges repeat the first and last steps (clamped indices), not zeros
    np.testing.assert_array_equal(ours[0, :5], ours[0, 20:25])
    np.testing.assert_array_equal(ours[-1, 45:], states.windows(fps, count - 1, count)[0, 45:])
    # any batch of frames reads the same windows
    parts = np.concatenate([states.windows(fps, a, min(a + 16, count)) for a in range(0, count, 16)])
    np.testing.assert_array_equal(parts, ours)


def test_the_log_mel_floor_is_the_whole_recordings_peak(long_audio) -> None:
    """The louder last second raises the floor ``peak - 8`` of the whole log-mel, so the first segment's states
    differ from those of its 30 s alone (the reference computes the log-mel of the whole file at once)."""
    wav, encoder, states, _ = long_audio
    with WhisperStates(wav[: 30 * 16000], encoder, CPU, torch.float32) as alone:
        assert alone.steps == 1500
        first_alone = alone.windows(25.0, 0, 700)
    assert np.abs(states.windows(25.0, 0, 700) - first_alone).max() > 1e-3


def test_audio_features_at_29_97_fps_match_the_reference(latentsync_folder: Path) -> None:
    """The public function at the presenter's true rate: 4 s give 122 frames at 29.97 (the reference's 25 fps
    would give 102), each frame's window centred on int(i * 50 / 29.97)."""
    whisper = latentsync_folder / "whisper" / "tiny.pt"
    wav = speechlike(4.0, seed=1)
    ours = audio_features(wav, whisper, 29.97)
    expected = ref.feature2chunks(ref.audio2feat(whisper, wav), 29.97)
    assert ours.shape == expected.shape == (122, 50, 384)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4 * float(expected.std()))


class _CheapEncoder(torch.nn.Module):
    """Stands in for Whisper where only the flow of memory is measured: (1, 80, 3000) -> (1, 5, 1500, 384)."""

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        level = mel[:, :, ::2].mean(dim=1)  # (1, 1500)
        return level[:, None, :, None].expand(1, 5, 1500, 384).contiguous()


def _rss_anon_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))


def test_memory_stays_flat_in_the_audio_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """5 min of audio: the log-mel is made one 30 s segment at a time (twice: the peak first), and the 115 MB of
    states go to a file that each batch of windows reads from."""
    spans: list[int] = []
    original = latentsync_audio.log_mel

    def spy(wav: np.ndarray, first: int, stop: int) -> torch.Tensor:
        spans.append(stop - first)
        return original(wav, first, stop)

    monkeypatch.setattr(latentsync_audio, "log_mel", spy)
    wav = speechlike(300.0, seed=2)
    before = _rss_anon_kib()
    with WhisperStates(wav, _CheapEncoder(), CPU, torch.float32) as states:  # type: ignore[arg-type]
        grown = (_rss_anon_kib() - before) / 1024
        assert states.steps == 15000 and states.steps * 5 * 384 * 4 > 110e6
        last = states.windows(25.0, 7484, 7500)
    assert grown < 30, grown  # MiB: the states alone are 110
    assert len(spans) == 2 * 10 and max(spans) == 3000
    assert np.abs(last).sum() > 0


def test_too_short_audio_is_refused(latentsync_folder: Path) -> None:
    with pytest.raises(ValueError, match="20 ms"):
        audio_features(np.zeros(300, np.float32), latentsync_folder / "whisper" / "tiny.pt", 25.0)
    with pytest.raises(ValueError, match="fps"):
        audio_features(np.zeros(16000, np.float32), latentsync_folder / "whisper" / "tiny.pt", 0.0)


def test_a_missing_whisper_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        audio_features(speechlike(1.0), tmp_path / "whisper" / "tiny.pt", 25.0)
    assert info.value.code == "BAD_CHECKPOINT" and "whisper/tiny.pt" in info.value.message
