"""Audio decoding (real ffmpeg, real files) and the Wav2Lip mel features against independent computations."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from heygemd.demo import speech_wav
from heygemd.errors import AudioTooLong, Interrupted, NoAudioStream, NotMedia, NotRegularFile, SilentAudio, ToolMissing
from heygemd.pipeline.audio import (
    AudioFeatures,
    decode_audio,
    features_from_samples,
    load_audio_features,
    mel_chunks,
    normalize_mel,
    wav2lip_mel,
)
from tests.pipeline.media import ffmpeg_children, not_regular_files

SR = 16000
FFMPEG = shutil.which("ffmpeg")
pytestmark = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")


# ---------------------------------------------------------------- independent reference (numpy only)


def _hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    """Slaney's auditory-toolbox mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, hz / f_sp)


def _mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def _band_edges(n_mels: int = 80, fmin: float = 55.0, fmax: float = 7600.0) -> np.ndarray:
    """n_mels + 2 frequencies equally spaced on the Slaney mel scale: lower edge, centre, upper edge per band."""
    mels = np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2)
    return _mel_to_hz_slaney(mels)


def _slaney_filterbank(sr: int = SR, n_fft: int = 800, n_mels: int = 80) -> np.ndarray:
    """Triangular filters on the FFT bins, each scaled to unit area (norm='slaney'): (n_mels, n_fft//2 + 1)."""
    edges = _band_edges(n_mels)
    bins = np.linspace(0, sr / 2, n_fft // 2 + 1)
    bank = np.zeros((n_mels, bins.size))
    for m in range(n_mels):
        lo, centre, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (bins - lo) / (centre - lo)
        falling = (hi - bins) / (hi - centre)
        bank[m] = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (hi - lo))
    return bank


def _reference_mel(wav: np.ndarray) -> np.ndarray:
    """From scratch: pre-emphasis, reflect-padded periodic-Hann STFT, Slaney mel, dB, symmetric normalisation."""
    x = wav.astype(np.float64)
    y = np.empty_like(x)
    y[0] = x[0]
    y[1:] = x[1:] - 0.97 * x[:-1]
    n_fft, hop = 800, 200
    padded = np.pad(y, n_fft // 2, mode="reflect")
    n_frames = 1 + (padded.size - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    frames = np.stack([padded[i * hop : i * hop + n_fft] * window for i in range(n_frames)], axis=1)
    magnitude = np.abs(np.fft.rfft(frames, axis=0))
    mel = _slaney_filterbank() @ magnitude
    db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
    return np.clip(8 * ((db + 100) / 100) - 4, -4, 4)


def _tone(freq: float, seconds: float, amplitude: float = 0.5, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ---------------------------------------------------------------- wav2lip_mel


@pytest.mark.parametrize("n_samples", [1001, 16000, 16123, 24199])
def test_mel_has_80_bands_and_one_column_per_hop(n_samples: int) -> None:
    rng = np.random.default_rng(n_samples)
    mel = wav2lip_mel(rng.normal(0, 0.1, n_samples).astype(np.float32))
    assert mel.dtype == np.float32
    assert mel.shape == (80, 1 + n_samples // 200)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_pure_tone_peaks_in_the_band_centred_on_its_frequency(freq: float) -> None:
    mel = wav2lip_mel(_tone(freq, 1.0))
    centres = _band_edges()[1:-1]
    expected = int(np.argmin(np.abs(centres - freq)))
    loudest = int(np.argmax(mel[:, 5:-5].mean(axis=1)))  # skip edge columns
    assert abs(loudest - expected) <= 1
    # Far away bands are quiet compared with the peak.
    assert mel[:, 5:-5].mean(axis=1)[loudest] - mel[(expected + 40) % 80, 5:-5].mean() > 2.0


def test_mel_values_stay_in_range_and_silence_is_the_floor() -> None:
    silence = wav2lip_mel(np.zeros(8000, dtype=np.float32))
    assert np.all(silence == -4.0)
    loud = wav2lip_mel(np.random.default_rng(1).uniform(-1, 1, 8000).astype(np.float32) * 30)
    assert loud.min() >= -4.0 and loud.max() <= 4.0
    assert loud.max() == 4.0  # very loud noise reaches the clip


def test_normalise_formula_on_constructed_magnitudes() -> None:
    # magnitude -> dB (20 log10 x - 20) -> 8 (dB + 100) / 100 - 4, clipped to [-4, 4]
    amplitudes = np.array([0.0, 1e-6, 1e-5, 1e-3, 0.1, 1.0, 10.0, 1000.0], dtype=np.float32)
    db = 20 * np.log10(np.maximum(1e-5, amplitudes.astype(np.float64))) - 20
    expected = np.clip(8 * (db + 100) / 100 - 4, -4, 4)
    got = normalize_mel(amplitudes)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got[0] == got[2] == -4.0  # below -100 dB is the floor
    assert got[-1] == 4.0
    assert got[5] == pytest.approx(8 * 0.8 - 4)  # x = 1 -> -20 dB -> 2.4


def test_mel_matches_a_from_scratch_numpy_implementation() -> None:
    rng = np.random.default_rng(7)
    speechlike = _tone(220, 1.2, 0.3) + _tone(1800, 1.2, 0.1) + rng.normal(0, 0.02, int(1.2 * SR)).astype(np.float32)
    speechlike[: SR // 4] = 0  # a silent head, like a pause
    ours = wav2lip_mel(speechlike)
    reference = _reference_mel(speechlike)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=2e-3)


# ---------------------------------------------------------------- mel_chunks


def _index_mel(n_cols: int) -> np.ndarray:
    """A mel whose every value is its column index, so a window reveals where it starts."""
    return np.tile(np.arange(n_cols, dtype=np.float32), (80, 1))


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_mel_chunks_follow_the_reference_loop_and_last_window_rule(fps: float) -> None:
    n_cols = 101
    chunks = mel_chunks(_index_mel(n_cols), fps)
    expected_starts = []
    i = 0
    while int(i * 80 / fps) + 16 <= n_cols:
        expected_starts.append(int(i * 80 / fps))
        i += 1
    expected_starts.append(n_cols - 16)  # the first window that would overrun becomes the last 16 columns
    assert chunks.shape == (len(expected_starts), 80, 16)
    assert chunks.dtype == np.float32
    np.testing.assert_array_equal(chunks[:, 0, 0], expected_starts)
    np.testing.assert_array_equal(chunks[:, 0, :], np.array(expected_starts)[:, None] + np.arange(16))
    assert chunks[-1, 0, -1] == n_cols - 1


def test_mel_chunks_step_is_80_over_fps() -> None:
    starts_25 = mel_chunks(_index_mel(200), 25.0)[:6, 0, 0]
    np.testing.assert_array_equal(starts_25, [0, 3, 6, 9, 12, 16])  # int(i * 3.2)
    starts_30 = mel_chunks(_index_mel(200), 30.0)[:7, 0, 0]
    np.testing.assert_array_equal(starts_30, [0, 2, 5, 8, 10, 13, 16])  # int(i * 2.666...)


# ---------------------------------------------------------------- AudioFeatures


@pytest.mark.parametrize("seconds", [0.3, 1.0, 1.37])
@pytest.mark.parametrize("fps", [12.5, 24.0, 25.0, 29.97, 30.0, 60.0])
def test_chunks_give_one_window_per_frame_of_the_audio(seconds: float, fps: float) -> None:
    wav = np.random.default_rng(3).normal(0, 0.1, int(seconds * SR)).astype(np.float32)
    features = features_from_samples(Path("noise.wav"), wav)
    assert features.duration == pytest.approx(seconds, abs=1 / SR)
    n = features.frame_count(fps)
    assert n == max(1, math.ceil(seconds * fps - 1e-9))
    chunks = features.chunks(fps)
    assert chunks.shape == (n, 80, 16)
    # Reference chunking of the padded mel, truncated: never the "last 16 columns" fallback.
    np.testing.assert_array_equal(chunks, mel_chunks(features.mel, fps)[:n])
    # A batch slice equals the same frames of the whole.
    np.testing.assert_array_equal(features.windows(fps, n // 3, n), chunks[n // 3 :])
    loudness = features.loudness(fps)
    assert loudness.shape == (n,)
    assert loudness.min() >= 0.0 and loudness.max() <= 1.0


def test_padded_mel_keeps_the_audio_part_of_the_unpadded_mel() -> None:
    wav = _tone(500, 1.0, 0.3)
    features = features_from_samples(Path("tone.wav"), wav)
    plain = wav2lip_mel(wav)
    # Columns away from the tail are untouched by the padding.
    np.testing.assert_allclose(features.mel[:, : plain.shape[1] - 3], plain[:, :-3], atol=1e-5)
    assert features.mel.shape[1] >= plain.shape[1] + 0.25 * 80
    assert not features.mel.flags.writeable


def test_frame_count_is_at_least_one() -> None:
    features = features_from_samples(Path("blip.wav"), _tone(440, 0.01))
    assert features.frame_count(25) == 1
    assert features.chunks(25).shape == (1, 80, 16)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    out = tmp_path_factory.mktemp("speech") / "speech.wav"
    return speech_wav(out, sentences=("Hello and welcome.",), pause_seconds=0.6, lead_seconds=0.6)


def test_loudness_is_low_in_pauses_and_high_in_speech(speech: Path) -> None:
    features = load_audio_features(speech)
    assert isinstance(features, AudioFeatures)
    loudness = features.loudness(25)
    lead = loudness[: int(0.6 * 25) - 4]  # the silent lead, away from the first word's window
    tail = loudness[-int(0.6 * 25) + 4 :]
    assert lead.max() < 0.05 and tail.max() < 0.05
    assert loudness.max() > 0.2
    assert int(np.argmax(loudness)) in range(int(0.6 * 25), len(loudness) - int(0.6 * 25))


# ---------------------------------------------------------------- decode_audio


def _ffmpeg(*args: str) -> None:
    assert FFMPEG is not None
    subprocess.run([FFMPEG, "-v", "error", "-nostdin", "-y", *args], check=True, capture_output=True)


def _dominant_frequency(samples: np.ndarray, sr: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / sr)[np.argmax(spectrum)])


TONE_SOURCE = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1"]

FORMATS = {
    "wav": ["-ac", "2", "-c:a", "pcm_s16le"],
    "mp3": ["-ac", "2", "-c:a", "libmp3lame", "-b:a", "64k"],
    "m4a": ["-ac", "2", "-c:a", "aac", "-b:a", "64k"],
    "flac": ["-ac", "1", "-c:a", "flac"],
    "ogg": ["-ac", "2", "-ar", "48000", "-c:a", "libopus", "-b:a", "32k"],
}


def _has_encoder(name: str) -> bool:
    assert FFMPEG is not None
    listing = subprocess.run([FFMPEG, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return any(line.split()[1:2] == [name] for line in listing.splitlines() if line.strip())


@pytest.mark.parametrize("suffix", sorted(FORMATS))
def test_decode_common_audio_formats(tmp_path: Path, suffix: str) -> None:
    encoder = FORMATS[suffix][FORMATS[suffix].index("-c:a") + 1]
    if not _has_encoder(encoder):
        pytest.skip(f"this ffmpeg has no {encoder} encoder")
    path = tmp_path / f"my voice 语音.{suffix}"
    _ffmpeg(*TONE_SOURCE, *FORMATS[suffix], str(path))
    samples = decode_audio(path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert samples.size / SR == pytest.approx(1.0, abs=0.03)
    assert _dominant_frequency(samples) == pytest.approx(440, abs=3)
    assert 0.05 < np.abs(samples).max() <= 1.01
    assert np.isfinite(samples).all()


def test_decode_the_sound_track_of_a_video(tmp_path: Path) -> None:
    path = tmp_path / "presenter 视频.mp4"
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x90:rate=25:duration=1",
        *TONE_SOURCE,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        "-shortest",
        str(path),
    )
    samples = decode_audio(path)
    assert samples.size / SR == pytest.approx(1.0, abs=0.05)
    assert _dominant_frequency(samples) == pytest.approx(440, abs=3)


def test_load_audio_features_from_a_compressed_file(tmp_path: Path) -> None:
    path = tmp_path / "a b.m4a"
    _ffmpeg(*TONE_SOURCE, "-c:a", "aac", str(path))
    features = load_audio_features(path)
    assert features.path == path
    assert features.duration == pytest.approx(1.0, abs=0.03)
    assert features.chunks(25).shape == (features.frame_count(25), 80, 16)


def test_nan_and_inf_samples_become_zero(tmp_path: Path) -> None:
    data = np.full(SR // 2, 0.25, dtype="<f4")
    data[100:200] = np.nan
    data[300] = np.inf
    path = tmp_path / "bad floats.wav"
    raw = tmp_path / "raw.f32"
    raw.write_bytes(data.tobytes())
    _ffmpeg("-f", "f32le", "-ar", str(SR), "-ac", "1", "-i", str(raw), "-c:a", "pcm_f32le", str(path))
    samples = decode_audio(path)
    assert np.isfinite(samples).all()
    assert np.all(samples[100:200] == 0) and samples[300] == 0
    assert samples[50] == pytest.approx(0.25)


def test_text_file_is_not_media(tmp_path: Path) -> None:
    path = tmp_path / "notes 笔记.wav"
    path.write_text("this is not audio, just words\n" * 20)
    with pytest.raises(NotMedia) as info:
        decode_audio(path)
    assert info.value.code == "NOT_MEDIA"
    assert str(path) in info.value.message


def test_missing_and_empty_files_are_not_media(tmp_path: Path) -> None:
    with pytest.raises(NotMedia, match="no such file"):
        decode_audio(tmp_path / "absent.wav")
    empty = tmp_path / "empty.mp3"
    empty.touch()
    with pytest.raises(NotMedia, match="empty"):
        decode_audio(empty)


def test_video_without_sound_has_no_audio_stream(tmp_path: Path) -> None:
    path = tmp_path / "silent film.mp4"
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x90:rate=25:duration=0.5",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        str(path),
    )
    with pytest.raises(NoAudioStream) as info:
        decode_audio(path)
    assert info.value.code == "NO_AUDIO_STREAM"
    assert str(path) in info.value.message


def test_audio_with_zero_samples_is_silent_audio(tmp_path: Path) -> None:
    path = tmp_path / "nothing.wav"
    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "0", str(path))
    with pytest.raises(SilentAudio) as info:
        load_audio_features(path)
    assert info.value.code == "EMPTY_AUDIO"
    assert str(path) in info.value.message


def test_missing_ffmpeg_is_tool_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tone.wav"
    _ffmpeg(*TONE_SOURCE, str(path))
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools-here"))
    with pytest.raises(ToolMissing):
        decode_audio(path)


def test_stereo_is_averaged_like_the_reference(tmp_path: Path) -> None:
    """librosa.load(mono=True) averages channels; ffmpeg's -ac 1 would be 3 dB louder for one-sided stereo."""
    stereo = tmp_path / "left only.wav"
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=16000:duration=1",
        "-f",
        "lavfi",
        "-i",
        "anullsrc=channel_layout=mono:sample_rate=16000",
        "-filter_complex",
        "[0:a][1:a]amerge=inputs=2[a]",
        "-map",
        "[a]",
        "-t",
        "1",
        str(stereo),
    )
    mono = tmp_path / "mono.wav"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=1", str(mono))
    ratio = np.sqrt(np.mean(decode_audio(stereo) ** 2)) / np.sqrt(np.mean(decode_audio(mono) ** 2))
    assert ratio == pytest.approx(0.5, abs=0.01)


def test_the_first_audio_track_is_the_one_decoded(tmp_path: Path) -> None:
    """The output is muxed with the first audio track, so the mouth must follow that one too."""
    two = tmp_path / "two tracks.mkv"
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "anullsrc=channel_layout=mono:sample_rate=16000",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=16000:duration=1",
        "-map",
        "0:a",
        "-map",
        "1:a",
        "-t",
        "1",
        "-disposition:a:1",
        "default",
        "-disposition:a:0",
        "0",
        str(two),
    )
    assert np.abs(decode_audio(two)).max() < 1e-3


@pytest.mark.parametrize("name", ["take:1.wav", "-dash.wav"])
def test_names_that_look_like_options_or_protocols(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=0.5", "file:" + str(tmp_path / name))
    monkeypatch.chdir(tmp_path)
    assert decode_audio(Path(name)).size == pytest.approx(8000, abs=200)  # relative, as the CLI passes it


def test_mel_in_blocks_equals_the_whole_file_stft(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long audio is transformed in blocks of frames (flat memory); the columns must be those of one centred STFT."""
    import librosa

    from heygemd.pipeline import audio

    wav = np.random.default_rng(7).normal(0, 0.1, SR * 5 + 137).astype(np.float32)
    emphasised = np.concatenate([wav[:1], wav[1:] - 0.97 * wav[:-1]]).astype(np.float32)
    whole = librosa.stft(
        y=emphasised, n_fft=800, hop_length=200, win_length=800, window="hann", center=True, pad_mode="reflect"
    )
    expected = normalize_mel(np.dot(audio._mel_basis(), np.abs(whole)))
    monkeypatch.setattr(audio, "STFT_BLOCK_FRAMES", 97)  # many blocks, a ragged last one
    blocked = wav2lip_mel(wav)
    assert blocked.shape == expected.shape
    np.testing.assert_allclose(blocked, expected, atol=1e-5)


def test_mel_bank_and_stft_are_librosas() -> None:
    """The stored mel bank and the numpy STFT give librosa's numbers (the features the checkpoints were trained on).

    heygemd keeps librosa's tables in the package (``wav2lip_mel.npz``) rather than computing them, so a render
    does not depend on the installed librosa. librosa and numpy are not pinned, and a fresh machine may compute
    the same tables a last bit apart (seen: 3 of 80 band edges 1 ULP off, relative 1.9e-16, with librosa 0.11.0 and
    numpy 2.4.6). So the comparison allows a few units in the last place of each table's own precision: anything
    that would change a feature (a wrong formula, fmin/fmax, Slaney vs HTK) is orders of magnitude larger.
    """
    import librosa

    from heygemd.pipeline import audio

    # heygemd/pipeline/wav2lip_mel.npz holds librosa's tables; should librosa ever change them, write it again with
    # np.savez_compressed(audio.MEL_TABLES, mel_basis=expected_bank, hann_window=expected_window, band_hz=expected_hz)
    expected_bank = librosa.filters.mel(sr=SR, n_fft=800, n_mels=80, fmin=55.0, fmax=7600.0)
    expected_window = librosa.filters.get_window("hann", 800, fftbins=True)
    expected_hz = librosa.mel_frequencies(n_mels=82, fmin=55.0, fmax=7600.0)[1:-1]  # the bank's band centres
    assert audio._mel_basis().dtype == expected_bank.dtype and audio._hann_window().dtype == expected_window.dtype
    assert audio.mel_band_hz().dtype == expected_hz.dtype

    def ulps(dtype: np.dtype) -> float:
        return float(4 * np.finfo(dtype).eps)

    np.testing.assert_allclose(audio._mel_basis(), expected_bank, rtol=ulps(expected_bank.dtype), atol=0)
    np.testing.assert_allclose(audio._hann_window(), expected_window, rtol=ulps(expected_window.dtype), atol=1e-12)
    np.testing.assert_allclose(audio.mel_band_hz(), expected_hz, rtol=ulps(expected_hz.dtype), atol=0)
    assert not audio.mel_band_hz().flags.writeable
    segment = np.random.default_rng(3).normal(0, 0.1, SR * 2 + 411).astype(np.float32)
    expected = np.abs(librosa.stft(y=segment, n_fft=800, hop_length=200, win_length=800, window="hann", center=False))
    # float32 FFTs of different numpy/scipy builds sum in different orders: a few float32 ULPs of the largest bin
    np.testing.assert_allclose(audio._stft_magnitude(segment), expected, rtol=1e-5, atol=1e-5 * float(expected.max()))


def test_mel_of_a_long_audio_needs_few_temporaries() -> None:
    """60 s of audio: the STFT runs in small pieces, so the mel's temporaries stay a few copies of the samples
    (a 60 s block transformed at once peaked at 21x the samples' bytes)."""
    import tracemalloc

    wav = np.random.default_rng(5).normal(0, 0.1, SR * 60).astype(np.float32)
    wav2lip_mel(wav[:SR])  # the mel bank and window are cached first
    tracemalloc.start()
    try:
        mel = wav2lip_mel(wav)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert mel.shape == (80, 1 + wav.size // 200)
    assert peak < 10 * wav.nbytes  # float64 copies of the samples (4x), the padded copy (1x), the mel, the pieces


def test_mel_features_do_not_import_librosa() -> None:
    """The render reads librosa's tables from the package; importing librosa would add ~100 MiB to its RSS."""
    code = (
        "import sys, numpy as np\n"
        "from heygemd.pipeline.audio import wav2lip_mel\n"
        "wav2lip_mel(np.zeros(1600, dtype=np.float32))\n"
        "print(sorted(m for m in ('librosa', 'numba', 'llvmlite') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_mel_db_inverts_the_normalisation() -> None:
    from heygemd.pipeline.audio import mel_db

    levels_db = np.array([-100.0, -62.5, -20.0, 0.0])  # after the -20 dB reference, inside the clip range
    amplitude = 10.0 ** ((levels_db + 20.0) / 20.0)
    np.testing.assert_allclose(mel_db(normalize_mel(amplitude)), levels_db, atol=1e-4)
    assert mel_db(np.array([-9.0, 9.0])).tolist() == [-100.0, 0.0]  # clipped like the features


# ---------------------------------------------------------------- hostile audio


def _programs_started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the programs every child process started from now on runs (ffprobe, ffmpeg)."""
    started: list[str] = []
    real_init = subprocess.Popen.__init__

    def init(self: subprocess.Popen, args: object, *rest: object, **options: object) -> None:
        started.append(Path(str(args[0] if isinstance(args, list | tuple) else args)).name)
        real_init(self, args, *rest, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(subprocess.Popen, "__init__", init)
    return started


def test_an_audio_longer_than_the_limit_is_refused_from_its_header_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lecture.opus"
    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo", "-t", "3", "-c:a", "libopus", str(path))
    started = _programs_started(monkeypatch)
    with pytest.raises(AudioTooLong) as err:
        decode_audio(path, max_seconds=2.0)
    assert started == ["ffprobe"], "only probed, never decoded"
    assert err.value.code == "AUDIO_TOO_LONG"
    assert err.value.message == f"{path}: the audio lasts 0:00:03.0; a job takes at most 0:00:02.0 of audio"
    assert err.value.hint == (
        "Split it into parts of at most 0:00:02.0, one job each (e.g. ffmpeg -i lecture.opus -f segment "
        "-segment_time 2 -c copy lecture-%02d.opus), or raise video.max_audio_seconds."
    )
    assert decode_audio(path, max_seconds=3.1).size == pytest.approx(3 * SR, abs=SR // 50)


def test_an_audio_whose_header_understates_its_length_stops_at_the_limit(tmp_path: Path) -> None:
    """An MP3 without a Xing header is timed by its first frames' bitrate: 1 s at 320k then 20 s at 32k probes
    as 3.8 s. The decode stops at the limit: the buffer never grows past it."""
    loud = tmp_path / "loud.mp3"
    mp3 = "-ar 44100 -ac 2 -write_xing 0 -id3v2_version 0".split()
    _ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=1:a=0.5", *mp3, "-b:a", "320k", str(loud))
    quiet = tmp_path / "quiet.mp3"
    _ffmpeg("-f", "lavfi", "-i", "sine=f=300:d=20", *mp3, "-b:a", "32k", str(quiet))
    path = tmp_path / "talk.mp3"
    path.write_bytes(loud.read_bytes() + quiet.read_bytes())
    with pytest.raises(AudioTooLong) as err:
        decode_audio(path, max_seconds=10.0)
    assert err.value.message == f"{path}: the audio lasts more than 0:00:10.0; a job takes at most 0:00:10.0 of audio"
    assert decode_audio(path, max_seconds=30.0).size == pytest.approx(21 * SR, abs=SR // 10)


def test_a_stop_is_seen_while_the_audio_decodes_and_ffmpeg_is_ended(tmp_path: Path) -> None:
    path = tmp_path / "long talk.opus"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=60", "-c:a", "libopus", str(path))
    polls = 0

    def stop() -> bool:
        nonlocal polls
        polls += 1
        return polls > 3

    with pytest.raises(Interrupted) as err:
        decode_audio(path, should_stop=stop)
    assert err.value.message == f"{path}: stopped while decoding the audio"
    assert polls == 4 and ffmpeg_children() == []


def test_the_streamed_decode_gives_the_samples_of_a_whole_decode(tmp_path: Path) -> None:
    """Streaming into a preallocated buffer changes nothing: each sample is the mean of its channels, as when the
    whole output of ffmpeg was averaged at once."""
    path = tmp_path / "stereo.m4a"
    _ffmpeg(
        *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=7.3"),
        *("-f", "lavfi", "-i", "anoisesrc=sample_rate=44100:duration=7.3:amplitude=0.3"),
        *("-filter_complex", "[0:a][1:a]amerge=inputs=2[a]", "-map", "[a]", "-c:a", "aac", str(path)),
    )
    assert FFMPEG is not None
    whole = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(path), "-map", "0:a:0", "-ar", str(SR), "-f", "f32le", "-"],
        capture_output=True,
        check=True,
    ).stdout
    expected = np.frombuffer(whole, dtype="<f4").reshape(-1, 2).mean(axis=1, dtype=np.float32)
    assert np.array_equal(decode_audio(path), expected)


def test_decoding_holds_the_mono_samples_once_not_ffmpegs_whole_output(tmp_path: Path) -> None:
    """Ten minutes of stereo: 38 MB of mono samples. Reading ffmpeg's whole stereo output first, then averaging it,
    took 150 MB more than that."""
    path = tmp_path / "ten minutes.opus"
    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo", "-t", "600", "-c:a", "libopus", str(path))
    code = (
        "import resource, sys\n"
        "from heygemd.pipeline.audio import decode_audio\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "samples = decode_audio(sys.argv[1])\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "print(samples.nbytes / 2**20, grown / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    samples_mb, grown_mb = map(float, out.stdout.split())
    assert samples_mb == pytest.approx(600 * SR * 4 / 2**20, rel=0.01)
    assert grown_mb < samples_mb * 1.1 + 16


def test_an_audio_that_is_not_a_regular_file_is_named_for_what_it_is(tmp_path: Path) -> None:
    for path, what in not_regular_files(tmp_path):
        with pytest.raises(NotRegularFile) as err:
            decode_audio(path)
        assert err.value.message == f"{path}: {what}"
