"""The measures of one video's lip sync, from series per frame: the speech's loudness and the mouth's landmarks.

Pure numpy: no files, no decoding, no daemon. ``observe`` fits the landmarks on the video's frames; this module
turns them, with the speech, into numbers (``Measures``); ``verdict`` compares those with the thresholds.

Units: the mouth opening is the inner-lip gap in eye distances (``pipeline.mouth.measure``), so neither the
face's size nor the resolution changes it. Time is in video frames at the video's rate; offsets are also given in
milliseconds. A measure that the video cannot support (too short, no silence in the audio, no face) is None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from heygemd.pipeline.audio import MEL_FRAMES_PER_SECOND, mel_band_hz, mel_db
from heygemd.pipeline.faces import _runs, _savgol_weights
from heygemd.pipeline.mouth import face_frame, measure_track

SPEECH_BAND_HZ = (250.0, 3000.0)
"""Mel bands whose mean level is the speech loudness: the voiced formants that open the mouth."""
ENVELOPE_RANGE_DB = 40.0
"""The envelope maps the level from this far below the speech peaks (0) to the peaks (1)."""
PEAK_PERCENTILE = 95.0
"""The speech peaks: this percentile of the per-frame levels."""
FLOOR_PERCENTILE = 5.0
"""The recording's floor (its silence or room noise): this percentile of the per-frame levels."""
SPEECH_BELOW_PEAK_DB = 20.0
"""A frame is speech when its level is within this of the peaks."""
SILENCE_ABOVE_FLOOR_DB = 6.0
SILENCE_BELOW_PEAK_DB = 35.0
"""A frame is quiet when its level is within 6 dB of the floor or 35 dB below the peaks, whichever is higher."""
MIN_DYNAMIC_DB = 15.0
"""Below this between floor and peaks the recording has no silence to tell apart (all of it counts as speech)."""
SILENCE_MARGIN_S = 0.2
"""Quiet frames this close to speech are neither (the mouth opens before a word and closes after it)."""
MAX_LAG_S = 0.5
"""The AV offset is searched within this, both ways."""
MIN_SYNC_S = 2.0
"""The offset needs at least this much video with a face (frames both series cover at every lag)."""
MIN_SPEECH_S = 1.0
MIN_SILENCE_S = 0.4
"""``silence_motion`` needs at least this much speech and silence (with a face)."""
SPREAD_PERCENTILES = (10.0, 90.0)
"""How much a mouth moves over some frames: the spread of its gap between these percentiles."""
MIN_SPEECH_SPREAD = 0.05
"""``silence_motion`` divides by the speech's spread, but never by less than this (eye distances): a mouth that
hardly moves while speaking is ``frozen``'s finding, not a mouth that moves in silence."""
FROZEN_WINDOW_S = 0.5
"""``frozen`` looks at the gap's spread within windows of this length around each speech frame ..."""
FROZEN_SPREAD = 0.03
"""... and counts the frame as frozen when that spread is below this (eye distances: a still presenter's landmark
noise stays below it in every window, a mouth that speaks opens by several times it within half a second)."""
JITTER_POINTS = np.array([48, 49, 50, 51, 52, 53, 54, 60, 61, 62, 63, 64])
"""The upper lip and the mouth corners: they follow the head and the mouth's shape, and barely the opening (the
lower lip and the jaw carry that), so their fast motion in the face's own frame is shake, not speech."""
JITTER_WINDOW = 5
"""Frames of the quadratic (Savitzky-Golay) fit whose residual is the shake: at 25 fps the fit keeps 93 % of a 4 Hz
syllable rhythm (7 % leaks into the residual), and a frame-to-frame alternation stays whole in the residual."""


@dataclass(frozen=True)
class Speech:
    """The speech of each video frame."""

    level_db: np.ndarray
    """(N,) speech-band level in dB (-100 .. 0) over each frame's own time."""
    envelope: np.ndarray
    """(N,) that level mapped to 0..1 (``ENVELOPE_RANGE_DB`` below the peaks .. the peaks)."""
    speech: np.ndarray
    """(N,) bool: frames of speech."""
    silence: np.ndarray
    """(N,) bool: frames of silence, away from speech (``SILENCE_MARGIN_S``)."""


@dataclass(frozen=True)
class Offset:
    frames: float
    """Lag of the best alignment in frames (sub-frame by a parabola through the peak); positive: the mouth leads
    the sound (moves this long before the loudness it goes with)."""
    ms: float
    sync: float
    """Correlation of the mouth opening with the loudness at that lag (-1 .. 1)."""


@dataclass(frozen=True)
class Measures:
    """What ``measure`` found; None: the video cannot tell (see the module doc)."""

    fps: float
    frames: int
    offset: Offset | None
    silence_motion: float | None
    """Spread of the mouth opening in the audio's silences / its spread while speaking."""
    frozen: float | None
    """Share of the speech frames where the mouth stands still (``FROZEN_SPREAD`` within ``FROZEN_WINDOW_S``)."""
    face_coverage: float
    """Share of the frames with a face (found, and rendered)."""
    jitter: float | None
    """RMS of the upper lip's and corners' fast motion in the face's frame, in % of the eye distance."""
    seam: float | None
    """Colour step across the blend mask's edge beyond the source's, Lab units (``observe``); None: not measured."""


def speech_of(mel: np.ndarray, fps: float, frames: int) -> Speech:
    """The speech of ``frames`` video frames at ``fps`` from a Wav2Lip mel (80, T) of the recording.

    Frame ``i`` shows from ``i/fps`` for ``1/fps``: its level is the mean over the mel columns within half a frame
    of ``i/fps`` (mel column ``c`` is centred on ``c/80`` s) of the mean dB of the speech bands.
    """
    if fps <= 0 or frames < 0:
        raise ValueError(f"fps must be positive and frames not negative, got {fps}, {frames}")
    bands = (mel_band_hz() >= SPEECH_BAND_HZ[0]) & (mel_band_hz() <= SPEECH_BAND_HZ[1])
    per_column = mel_db(mel[bands]).mean(axis=0)
    sums = np.concatenate([[0.0], np.cumsum(per_column)])
    per_frame = MEL_FRAMES_PER_SECOND / fps
    centres = np.arange(frames) * per_frame
    first = np.clip(np.floor(centres - per_frame / 2 + 0.5), 0, len(per_column) - 1).astype(np.int64)
    stop = np.clip(np.floor(centres + per_frame / 2 + 0.5), first + 1, len(per_column)).astype(np.int64)
    level = (sums[stop] - sums[first]) / (stop - first)
    return activity(level, fps)


def activity(level_db: np.ndarray, fps: float) -> Speech:
    """Envelope, speech and silence of per-frame levels (see the constants above for the rules)."""
    level = np.asarray(level_db, dtype=np.float64)
    if level.size == 0:
        empty = np.zeros(0, dtype=bool)
        return Speech(level, level.copy(), empty, empty)
    peak = float(np.percentile(level, PEAK_PERCENTILE))
    floor = float(np.percentile(level, FLOOR_PERCENTILE))
    envelope = np.clip((level - (peak - ENVELOPE_RANGE_DB)) / ENVELOPE_RANGE_DB, 0.0, 1.0)
    speech = level >= peak - SPEECH_BELOW_PEAK_DB
    if peak - floor < MIN_DYNAMIC_DB:
        return Speech(level, envelope, np.ones_like(speech), np.zeros_like(speech))
    quiet = level <= max(floor + SILENCE_ABOVE_FLOOR_DB, peak - SILENCE_BELOW_PEAK_DB)
    margin = int(round(SILENCE_MARGIN_S * fps))
    near_speech = np.convolve(speech.astype(np.int64), np.ones(2 * margin + 1, dtype=np.int64), mode="same") > 0
    return Speech(level, envelope, speech, quiet & ~near_speech)


def av_offset(gap: np.ndarray, envelope: np.ndarray, fps: float, max_lag_s: float = MAX_LAG_S) -> Offset | None:
    """The lag within ``max_lag_s`` at which the mouth opening best follows the loudness (Pearson correlation of
    ``gap[t]`` with ``envelope[t + lag]``), or None when there is too little to compare. The peak is refined
    between frames by a parabola through its neighbours (one lag past the search range is computed for that)."""
    gap = np.asarray(gap, dtype=np.float64)
    envelope = np.asarray(envelope, dtype=np.float64)
    n = min(len(gap), len(envelope))
    reach = int(round(max_lag_s * fps))
    lags = np.arange(-reach - 1, reach + 2)
    valid = np.isfinite(gap[:n])
    if n <= 2 * reach + 2 or np.count_nonzero(valid[reach + 1 : n - reach - 1]) < MIN_SYNC_S * fps:
        return None
    if np.ptp(envelope[:n]) <= 0:
        return None
    scores = np.array([_correlation(gap[:n], envelope[:n], int(lag), valid) for lag in lags])
    best = 1 + int(np.argmax(scores[1:-1]))  # within the search range
    before, peak, after = scores[best - 1 : best + 2]
    curvature = before - 2 * peak + after
    shift = float(np.clip(0.5 * (before - after) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0
    frames = float(lags[best]) + shift
    return Offset(frames=frames, ms=frames * 1000.0 / fps, sync=float(scores[best]))


def _correlation(gap: np.ndarray, envelope: np.ndarray, lag: int, valid: np.ndarray) -> float:
    """Pearson correlation of ``gap[t]`` and ``envelope[t + lag]`` over the valid ``t`` (0 when either is flat)."""
    n = len(gap)
    t = np.arange(max(0, -lag), min(n, n - lag))
    t = t[valid[t]]
    x, y = gap[t], envelope[t + lag]
    if len(t) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def _spread(values: np.ndarray) -> float:
    low, high = np.percentile(values, SPREAD_PERCENTILES)
    return float(high - low)


def silence_motion(gap: np.ndarray, speech: Speech, fps: float) -> float | None:
    """The mouth's spread in the silences over its spread while speaking (at least ``MIN_SPEECH_SPREAD``)."""
    valid = np.isfinite(gap)
    quiet, talking = gap[valid & speech.silence], gap[valid & speech.speech]
    if len(quiet) < MIN_SILENCE_S * fps or len(talking) < MIN_SPEECH_S * fps:
        return None
    return _spread(quiet) / max(_spread(talking), MIN_SPEECH_SPREAD)


def frozen(gap: np.ndarray, speech: Speech, fps: float) -> float | None:
    """Share of the speech frames whose mouth stands still around them (see ``FROZEN_SPREAD``)."""
    valid = np.isfinite(gap)
    frames = np.flatnonzero(valid & speech.speech)
    if len(frames) < MIN_SPEECH_S * fps:
        return None
    half = max(1, int(round(FROZEN_WINDOW_S * fps / 2)))
    still = 0
    for i in frames:
        window = gap[max(0, i - half) : i + half + 1]
        window = window[np.isfinite(window)]
        still += int(len(window) < 3 or np.ptp(window) < FROZEN_SPREAD)
    return still / len(frames)


def jitter(landmarks: np.ndarray) -> float | None:
    """RMS residual (% of the eye distance) of a ``JITTER_WINDOW``-frame quadratic fit through the upper lip's and
    the corners' positions in the face's own frame (origin between the eyes, axes along and across them), over
    every run of at least ``JITTER_WINDOW`` consecutive frames with landmarks; None without such a run."""
    points = np.asarray(landmarks, dtype=np.float64)
    has = np.asarray(np.isfinite(points).all(axis=(1, 2)))
    local = np.full((len(points), len(JITTER_POINTS), 2), np.nan)
    for i in np.flatnonzero(has):
        frame = face_frame(points[i])
        axes = np.stack([frame.across, frame.down], axis=1)
        local[i] = (points[i, JITTER_POINTS] - frame.eyes) @ axes / frame.scale
    residuals: list[np.ndarray] = []
    weights = _savgol_weights(JITTER_WINDOW // 2)
    for start, stop in _runs(has):
        if stop - start < JITTER_WINDOW:
            continue
        run = local[start:stop]
        windows = np.lib.stride_tricks.sliding_window_view(run, JITTER_WINDOW, axis=0)  # (n-4, P, 2, W)
        fitted = windows @ weights
        residuals.append(run[JITTER_WINDOW // 2 : len(run) - JITTER_WINDOW // 2] - fitted)
    if not residuals:
        return None
    return 100.0 * math.sqrt(float(np.mean(np.concatenate(residuals) ** 2)))


def measure(
    landmarks: np.ndarray, speech: Speech, fps: float, *, face_coverage: float, seam: float | None = None
) -> Measures:
    """Every measure of one video: ``landmarks`` (N, 68, 2) fitted on its frames (NaN rows: no face), ``speech``
    of the same N frames."""
    gap = measure_track(landmarks)[:, 0]
    return Measures(
        fps=fps,
        frames=len(gap),
        offset=av_offset(gap, speech.envelope, fps),
        silence_motion=silence_motion(gap, speech, fps),
        frozen=frozen(gap, speech, fps),
        face_coverage=face_coverage,
        jitter=jitter(landmarks),
        seam=seam,
    )
