"""The measures on series made to order (no video): each finds what was put in, and the verdict names it."""

from __future__ import annotations

import numpy as np
import pytest

from heygemd.pipeline.audio import MAX_ABS_VALUE
from heygemd.quality import measures
from heygemd.quality.measures import Measures, Offset
from heygemd.quality.verdict import verdict
from heygemd.settings import QualitySettings

FPS = 25.0


def syllables(frames: int, seed: int = 1) -> np.ndarray:
    """A speech-like envelope: bursts of 3-8 frames at irregular intervals, with two pauses of a second."""
    rng = np.random.default_rng(seed)
    envelope = np.zeros(frames)
    i = 5
    while i < frames:
        length = int(rng.integers(3, 9))
        envelope[i : i + length] = rng.uniform(0.5, 1.0) * np.hanning(length + 2)[1:-1]
        i += length + int(rng.integers(1, 6))
    for start in (frames // 3, 2 * frames // 3):
        envelope[start : start + int(FPS)] = 0.0
    return envelope


def face(gap: float, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """68 landmarks of a frontal face with eyes 100 px apart, its inner lips ``gap`` eye distances apart."""
    points = np.zeros((68, 2))
    points[36:42] = [300.0, 200.0]
    points[42:48] = [400.0, 200.0]
    points[48:68] = [350.0, 300.0]
    points[48], points[54], points[60], points[64] = [320, 300], [380, 300], [325, 300], [375, 300]
    points[61:64, 1] = 300.0 - 50.0 * gap
    points[65:68, 1] = 300.0 + 50.0 * gap
    return points + np.asarray(shift)


def test_the_offset_is_the_lag_the_mouth_was_given_with_its_sign() -> None:
    envelope = syllables(300)
    for lead in (-7, 0, 4, 11):
        gap = np.roll(envelope, -lead)  # the mouth shows at t what the sound says at t + lead
        offset = measures.av_offset(gap, envelope, FPS)
        assert offset is not None
        assert offset.frames == pytest.approx(lead, abs=0.3)
        assert offset.ms == pytest.approx(offset.frames * 40.0)
        assert offset.sync > 0.95


def test_an_unrelated_mouth_has_a_weak_sync() -> None:
    offset = measures.av_offset(syllables(300, seed=2), syllables(300, seed=3), FPS)
    assert offset is not None and offset.sync < 0.3


def test_too_short_a_video_has_no_offset() -> None:
    envelope = syllables(60)
    assert measures.av_offset(envelope, envelope, FPS) is None


def test_speech_and_silence_from_the_levels() -> None:
    level = np.full(200, -100.0)
    level[20:80] = -25.0
    level[150:190] = -30.0
    speech = measures.activity(level, FPS)
    assert speech.speech[20:80].all() and speech.speech[150:190].all() and not speech.speech[:20].any()
    margin = int(measures.SILENCE_MARGIN_S * FPS)
    assert speech.silence[80 + margin : 150 - margin].all()
    assert not speech.silence[80 : 80 + margin].any(), "the frames just after speech are neither"
    assert speech.envelope[30] == 1.0 and speech.envelope[100] == 0.0


def test_the_speech_of_a_mel_follows_its_loud_columns() -> None:
    mel = np.full((80, 400), -MAX_ABS_VALUE, dtype=np.float32)  # 5 s of silence
    mel[:, 160:240] = 2.0  # loud from 2 s to 3 s
    speech = measures.speech_of(mel, FPS, 125)
    assert speech.speech[52:73].all() and not speech.speech[:48].any() and not speech.speech[77:].any()


def test_a_mouth_that_moves_in_the_pauses_and_one_that_rests() -> None:
    level = np.where(np.arange(250) % 100 < 60, -25.0, -100.0)  # 2.4 s of speech, 1.6 s of silence, ...
    speech = measures.activity(level, FPS)
    talking = 0.2 + 0.15 * np.sin(np.arange(250) * 2.0)
    resting = np.where(speech.speech, talking, 0.05)
    assert measures.silence_motion(talking, speech, FPS) > 0.8
    assert measures.silence_motion(resting, speech, FPS) < 0.05


def test_a_mouth_that_stands_still_while_speaking_is_frozen() -> None:
    speech = measures.activity(np.where(np.arange(250) % 100 < 60, -25.0, -100.0), FPS)
    assert measures.frozen(np.full(250, 0.05), speech, FPS) == 1.0
    assert measures.frozen(0.2 + 0.15 * np.sin(np.arange(250) * 1.3), speech, FPS) == 0.0


def test_jitter_is_the_mouths_shake_not_the_heads_motion() -> None:
    rng = np.random.default_rng(5)
    frames = 100
    head = np.cumsum(rng.normal(0, 3.0, size=(frames, 2)), axis=0)  # the whole head wanders
    opening = 0.15 + 0.1 * np.sin(np.arange(frames) * 2 * np.pi * 4 / FPS)  # a 4 Hz syllable rhythm
    steady = np.stack([face(g, tuple(h)) for g, h in zip(opening, head, strict=True)])
    shaken = steady.copy()
    shaken[:, 48:68] += rng.normal(0, 3.0, size=(frames, 1, 2))  # the mouth shakes by 3 % of the eye distance
    assert measures.jitter(steady) < 0.5
    assert measures.jitter(shaken) > 2.0


def test_the_verdict_names_each_measure_beyond_its_threshold() -> None:
    thresholds = QualitySettings()
    good = Measures(FPS, 250, Offset(1.5, 60.0, 0.9), 0.1, 0.0, 1.0, 0.6, 1.0)
    report = verdict(good, thresholds)
    assert not report.review and report.reasons == []
    assert report.av_offset_ms == 60.0 and report.av_offset_frames == 1.5 and report.sync == 0.9

    bad = Measures(FPS, 250, Offset(11.5, 460.0, 0.9), 0.8, 0.6, 0.5, 3.0, 9.0)
    assert verdict(bad, thresholds).codes() == [
        "AV_OFFSET",
        "SILENCE_MOTION",
        "FROZEN_MOUTH",
        "FACE_COVERAGE",
        "JITTER",
        "SEAM",
    ]
    early = verdict(Measures(FPS, 250, Offset(-3.5, -140.0, 0.9), None, None, 1.0, None, None), thresholds)
    assert early.codes() == ["AV_OFFSET"] and "after the sound" in early.reasons[0].explanation
    # where the mouth does not follow the speech, its best lag means nothing: weak sync, not an offset
    weak = verdict(Measures(FPS, 250, Offset(-12.0, -480.0, 0.1), None, None, 1.0, None, None), thresholds)
    assert weak.codes() == ["WEAK_SYNC"]
    unmeasured = verdict(Measures(FPS, 40, None, None, None, 1.0, None, None), thresholds)
    assert not unmeasured.review and unmeasured.av_offset_ms is None
