"""The weights-free engine on the demo portrait: real dlib landmarks, synthetic and real mel windows."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from heygemd import demo
from heygemd.engines.mouthwarp import (
    BAND_HZ,
    Articulation,
    MouthWarpEngine,
    MouthWarpParams,
    articulate,
    inner_lip_gap,
    levelled,
    plan_motion,
    warp_crop,
)
from heygemd.pipeline import render
from heygemd.pipeline.engine_contract import Engine, FaceBatch

dlib = pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def predictor():
    models = Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0]) / "models"
    return dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))


@pytest.fixture(scope="module")
def face(predictor) -> tuple[np.ndarray, np.ndarray, "dlib.rectangle"]:
    """(crop, landmarks in crop coordinates, the face rectangle in the crop) of the portrait."""
    image = demo.portrait()
    rgb = np.ascontiguousarray(image[:, :, ::-1])
    rect = max(dlib.get_frontal_face_detector()(rgb, 1), key=lambda r: r.width() * r.height())
    points = np.array([[p.x, p.y] for p in predictor(rgb, rect).parts()], dtype=np.float32)
    margin = int(0.2 * rect.width())
    x0, y0 = rect.left() - margin, rect.top() - margin
    crop = image[y0 : rect.bottom() + margin, x0 : rect.right() + margin].copy()
    in_crop = dlib.rectangle(margin, margin, margin + rect.width(), margin + rect.height())
    return crop, points - np.array([x0, y0], dtype=np.float32), in_crop


def mel_window(
    level: float, bands_hz: tuple[tuple[float, float], ...] = ((100.0, 4000.0),), columns: slice = slice(None)
) -> np.ndarray:
    """(80, 16) Wav2Lip mel window: ``level`` (mel units) in the given bands and columns, silence (-4) elsewhere."""
    window = np.full((80, 16), -4.0, dtype=np.float32)
    band = np.zeros(80, dtype=bool)
    for lo, hi in bands_hz:
        band |= (BAND_HZ >= lo) & (BAND_HZ < hi)
    window[np.ix_(band, np.arange(16)[columns])] = level
    return window


SILENCE = np.full((80, 16), -4.0, dtype=np.float32)
LOUD = mel_window(0.5)
MEDIUM = mel_window(-0.5)


def luminance(pixels: np.ndarray) -> np.ndarray:
    return pixels[..., :3].astype(np.float64) @ np.array([0.114, 0.587, 0.299])


# --- audio features -------------------------------------------------------------------------------------


def test_band_centres_are_where_the_feature_filters_peak() -> None:
    from heygemd.pipeline.audio import N_FFT, SAMPLE_RATE, _mel_basis

    bin_hz = SAMPLE_RATE / N_FFT  # 20 Hz per FFT bin
    peaks = _mel_basis().argmax(axis=1) * bin_hz
    assert np.all(np.abs(peaks - BAND_HZ) <= bin_hz)


def test_silence_and_low_noise_keep_the_mouth_shut() -> None:
    rng = np.random.default_rng(3)
    noise = (-3.0 + 0.15 * rng.standard_normal((80, 16))).astype(np.float32)
    for move in articulate(np.stack([SILENCE, noise])):
        assert move.loudness == 0.0 and move.opening == 0.0 and move.shape == 0.0


def test_louder_speech_opens_wider() -> None:
    moves = articulate(np.stack([mel_window(level) for level in (-2.0, -1.0, -0.5, 0.0, 0.5)]))
    openings = [m.opening for m in moves]
    assert all(0.0 <= o <= 1.0 for o in openings)
    assert np.all(np.diff(openings) > 0)
    assert openings[-1] > 0.5


def test_vowel_shape_spread_versus_round() -> None:
    ee = mel_window(0.3, ((200.0, 400.0), (1800.0, 3200.0)))  # low F1, high F2: "i"
    oo = mel_window(0.3, ((250.0, 1100.0),))  # energy below ~1 kHz only: "o/u"
    spread, round_ = articulate(np.stack([ee, oo]))
    assert spread.shape > 0.5
    assert round_.shape < -0.5


def test_the_window_centre_counts_more_than_its_edge() -> None:
    centre = mel_window(0.5, columns=slice(4, 7))
    edge = mel_window(0.5, columns=slice(13, 16))
    at_centre, at_edge = articulate(np.stack([centre, edge]))
    assert at_centre.opening > 2 * at_edge.opening


def test_real_speech_opens_in_words_and_closes_in_pauses(tmp_path) -> None:
    audio = pytest.importorskip("heygemd.pipeline.audio")
    wav = demo.speech_wav(tmp_path / "speech.wav", pause_seconds=1.0, lead_seconds=0.5)
    features = audio.load_audio_features(wav)
    openings = np.array([m.opening for m in articulate(features.windows(25.0))])
    assert np.all(openings[:8] == 0.0)  # the first 0.3 s of the 0.5 s lead-in silence
    closed = openings == 0.0
    longest_closed_run = max(len(run) for run in "".join("1" if c else "0" for c in closed).split("0"))
    assert longest_closed_run >= 15  # the 1 s pause between the sentences
    speaking = openings[~closed]
    assert speaking.size > 0.5 * openings.size
    assert np.mean(speaking > 0.2) > 0.5
    assert np.percentile(np.abs(np.diff(openings)), 95) < 0.35  # moves, but does not chatter


def test_a_quiet_recording_is_levelled_to_open_like_a_normal_one(tmp_path) -> None:
    audio = pytest.importorskip("heygemd.pipeline.audio")
    wav = audio.decode_audio(demo.speech_wav(tmp_path / "speech.wav", pause_seconds=1.0, lead_seconds=0.5))

    def openings(samples: np.ndarray, adapt: bool) -> np.ndarray:
        features = audio.features_from_samples(Path("x.wav"), samples)
        params = levelled(MouthWarpParams(), features.mel) if adapt else MouthWarpParams()
        return np.array([m.opening for m in articulate(features.windows(25.0), params)])

    normal = openings(wav, adapt=True)
    quiet_raw = openings(wav * 0.05, adapt=False)  # 26 dB quieter
    quiet = openings(wav * 0.05, adapt=True)
    loud = openings(np.clip(wav * 3.0, -1, 1), adapt=True)
    assert quiet_raw.mean() < 0.3 * normal.mean()  # without levelling it barely opens
    assert quiet.mean() == pytest.approx(normal.mean(), rel=0.25)
    assert np.all(quiet[:8] == 0.0)  # the lead-in silence stays shut
    closed_runs = "".join("1" if o == 0.0 else "0" for o in quiet).split("0")
    assert max(len(run) for run in closed_runs) >= 15  # and so does the pause between the sentences
    assert loud.mean() >= normal.mean()  # a loud recording is never turned down


def test_engine_prepare_levels_a_quiet_recording(face, tmp_path) -> None:
    audio = pytest.importorskip("heygemd.pipeline.audio")
    wav = audio.decode_audio(demo.speech_wav(tmp_path / "speech.wav", sentences=("Ah.",), lead_seconds=0.2))
    features = audio.features_from_samples(Path("quiet.wav"), wav * 0.05)
    crop, points, _ = face
    loudest = features.windows(25.0)[[int(np.argmax(features.loudness(25.0)))]]
    batch = FaceBatch(crops=[crop], landmarks=[points], mels=loudest)
    engine = MouthWarpEngine()
    unprepared = engine.generate(batch)[0]
    engine.prepare(features.mel)
    prepared = engine.generate(batch)[0]
    change = lambda image: float(np.abs(image.astype(np.int16) - crop.astype(np.int16)).mean())  # noqa: E731
    assert change(prepared) > 2 * change(unprepared) + 0.5


# --- geometry ---------------------------------------------------------------------------------------------


def test_motion_moves_only_lips_and_jaw(face) -> None:
    _, points, _ = face
    still = plan_motion(points, Articulation(0.0, 0.0, 0.0))
    assert np.array_equal(still.target, still.source)
    moving = plan_motion(points, Articulation(1.0, 1.0, 0.0))
    moved = np.flatnonzero(np.abs(moving.target - moving.source).max(axis=1) > 1e-9)
    assert set(moved) <= set(range(2, 15)) | set(range(48, 68))
    assert {57, 66, 8} <= set(moved)


def test_louder_window_gives_a_larger_inner_lip_gap(face) -> None:
    _, points, _ = face
    quiet, medium, loud = articulate(np.stack([SILENCE, MEDIUM, LOUD]))
    gaps = [inner_lip_gap(plan_motion(points, m).target, plan_motion(points, m).down) for m in (quiet, medium, loud)]
    assert gaps[0] < gaps[1] < gaps[2]
    width = np.linalg.norm(points[54] - points[48])
    assert gaps[2] - gaps[0] > 0.15 * width


def test_spread_and_round_shapes_move_the_corners(face) -> None:
    _, points, _ = face
    width = lambda m: np.linalg.norm(m.target[54] - m.target[48])  # noqa: E731
    spread = plan_motion(points, Articulation(1.0, 0.6, 1.0))
    round_ = plan_motion(points, Articulation(1.0, 0.6, -1.0))
    assert width(spread) > np.linalg.norm(points[54] - points[48]) > width(round_)


# --- images -----------------------------------------------------------------------------------------------


def test_silence_returns_the_input_bit_for_bit(face) -> None:
    crop, points, _ = face
    engine = MouthWarpEngine()
    (out,) = engine.generate(FaceBatch(crops=[crop], landmarks=[points], mels=SILENCE[None]))
    assert out.dtype == crop.dtype and out.shape == crop.shape
    assert np.array_equal(out, crop)
    assert out is not crop


def test_speech_changes_the_mouth_and_nothing_above_the_nose(face) -> None:
    crop, points, _ = face
    (out,) = MouthWarpEngine().generate(FaceBatch(crops=[crop], landmarks=[points], mels=LOUD[None]))
    assert out.shape == crop.shape and out.dtype == np.uint8
    x0, y0 = np.floor(points[48:68].min(axis=0)).astype(int)
    x1, y1 = np.ceil(points[48:68].max(axis=0)).astype(int)
    diff = np.abs(out.astype(np.int16) - crop.astype(np.int16))
    assert diff[y0 : y1 + 1, x0 : x1 + 1].mean() > 15
    nose_row = int(np.floor(points[30, 1] - 0.05 * np.linalg.norm(points[8] - points[27])))
    assert np.array_equal(out[:nose_row], crop[:nose_row])
    assert np.array_equal(out[[0, -1]], crop[[0, -1]]) and np.array_equal(out[:, [0, -1]], crop[:, [0, -1]])
    # Only pixels that the paste mask lets through are touched.
    mask = render.mouth_mask(points, crop.shape[:2])
    assert np.all(mask[diff.max(axis=2) > 0] > 0)


def test_dlib_sees_the_mouth_open_wider_for_louder_audio(face, predictor) -> None:
    crop, points, rect = face

    def gap_62_66(image: np.ndarray) -> float:
        shape = predictor(np.ascontiguousarray(image[:, :, ::-1]), rect)
        return float(np.hypot(shape.part(66).x - shape.part(62).x, shape.part(66).y - shape.part(62).y))

    outputs = MouthWarpEngine().generate(
        FaceBatch(crops=[crop] * 3, landmarks=[points] * 3, mels=np.stack([SILENCE, MEDIUM, LOUD]))
    )
    shut, medium, loud = (gap_62_66(image) for image in outputs)
    assert shut < medium < loud
    assert loud - shut >= 0.08 * np.linalg.norm(points[54] - points[48])


def test_mouth_interior_is_darker_than_the_lips(face) -> None:
    crop, points, _ = face
    (move,) = articulate(LOUD[None])
    result = warp_crop(crop, points, move)
    motion = result.motion
    centre = (motion.opening_top[2] + motion.opening_bottom[2]) / 2.0
    x, y = np.round(centre).astype(int)
    cavity = luminance(result.image[y - 1 : y + 2, x - 1 : x + 2]).mean()
    ring = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillPoly(ring, [np.round(points[48:60]).astype(np.int32)], 1)
    cv2.fillPoly(ring, [np.round(points[60:68]).astype(np.int32)], 0)
    lips = np.median(luminance(crop[ring.astype(bool)]))
    assert cavity < 0.5 * lips
    # ...but not a flat black hole: the painted opening has light and dark parts.
    opening = np.zeros(crop.shape[:2], np.uint8)
    outline = np.vstack([motion.opening_top, motion.opening_bottom[3:0:-1]])
    cv2.fillPoly(opening, [np.round(outline).astype(np.int32)], 1)
    inside = luminance(result.image[opening.astype(bool)])
    assert inside.std() > 5.0 and inside.min() > 3.0


def test_a_batch_of_different_sizes(face) -> None:
    crop, points, _ = face
    crops, landmarks = [], []
    for scale in (1.0, 1.5, 0.75):
        size = (int(round(crop.shape[1] * scale)), int(round(crop.shape[0] * scale)))
        crops.append(cv2.resize(crop, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC))
        landmarks.append(points * np.float32(scale))
    outputs = MouthWarpEngine().generate(
        FaceBatch(crops=crops, landmarks=landmarks, mels=np.stack([LOUD, MEDIUM, SILENCE]))
    )
    assert [o.shape for o in outputs] == [c.shape for c in crops]
    assert all(o.dtype == np.uint8 for o in outputs)
    assert not np.array_equal(outputs[0], crops[0]) and not np.array_equal(outputs[1], crops[1])
    assert np.array_equal(outputs[2], crops[2])


def test_landmarks_off_the_crop_or_degenerate_do_not_fail(face) -> None:
    crop, points, _ = face
    low = crop[: int(points[57, 1])]  # the crop ends at the lower lip: chin and jaw points lie outside
    (out,) = MouthWarpEngine().generate(FaceBatch(crops=[low], landmarks=[points], mels=LOUD[None]))
    assert out.shape == low.shape
    flat = np.full((68, 2), 40.0, dtype=np.float32)
    lost = points.copy()
    lost[:] = np.nan
    same = MouthWarpEngine().generate(
        FaceBatch(crops=[crop, crop], landmarks=[flat, lost], mels=np.stack([LOUD, LOUD]))
    )
    assert all(np.array_equal(image, crop) for image in same)


def test_engine_protocol_and_lifecycle(face) -> None:
    crop, points, _ = face
    engine = MouthWarpEngine()
    assert isinstance(engine, Engine)
    assert engine.name == "mouthwarp" and engine.identity.startswith("mouthwarp-")
    assert engine.generate(FaceBatch(crops=[], landmarks=[], mels=np.zeros((0, 80, 16), np.float32))) == []
    with pytest.raises(ValueError):
        engine.generate(FaceBatch(crops=[crop, crop], landmarks=[points], mels=np.stack([LOUD, LOUD])))
    engine.release()
    engine.generate(FaceBatch(crops=[crop], landmarks=[points], mels=LOUD[None]))
    engine.close()
    with pytest.raises(RuntimeError):
        engine.generate(FaceBatch(crops=[crop], landmarks=[points], mels=LOUD[None]))


def test_importing_the_engine_does_not_import_torch() -> None:
    code = "import sys, heygemd.engines.mouthwarp, heygemd.pipeline.render; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_a_mouthwarp_render_does_not_import_librosa(tmp_path) -> None:
    """The band centres come from the package's stored tables: librosa (numba, llvmlite) would add ~80 MiB."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from heygemd.demo import presenter_video, speech_wav\n"
        "from heygemd.lipsync import LipSyncSession\n"
        "from heygemd.settings import EngineSettings, PathsSettings, Settings\n"
        "tmp = Path(sys.argv[1])\n"
        "paths = PathsSettings(inbox=tmp / 'inbox', outbox=tmp / 'outbox', models=tmp / 'models')\n"
        "session = LipSyncSession(Settings(paths=paths, engine=EngineSettings(name='mouthwarp')))\n"
        "session.warm_up()\n"
        "video = presenter_video(tmp / 'anna.mp4', seconds=0.5, size=(320, 180))\n"
        "speech = speech_wav(tmp / 'one.wav', sentences=('One.',), pause_seconds=0.1, lead_seconds=0.1)\n"
        "result = session.render(video, session.audio(speech), tmp / 'out' / 'anna.mp4')\n"
        "assert result.face_ratio == 1.0 and (tmp / 'out' / 'anna.mp4').is_file()\n"
        "print(sorted(m for m in ('librosa', 'numba', 'llvmlite') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_masks_given_in_the_batch_give_the_same_mouth(face) -> None:
    crop, points, _ = face
    window = mel_window(-1.0)
    plain = FaceBatch(crops=[crop], landmarks=[points], mels=window[None])
    with_mask = FaceBatch(
        crops=[crop], landmarks=[points], mels=window[None], masks=[render.mouth_mask(points, crop.shape[:2])]
    )
    engine = MouthWarpEngine()
    first, second = engine.generate(plain)[0], engine.generate(with_mask)[0]
    assert not np.array_equal(first, crop)  # the window is loud: the mouth opened
    assert np.array_equal(first, second)


# --- timing -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [24.0, 25.0, 30.0, 50.0])
@pytest.mark.parametrize("level", [0.3, 0.05])
def test_the_mouth_leads_the_sound_by_at_most_80_ms_and_never_lags(fps: float, level: float) -> None:
    """Accepted offset (docs/engines.md, "Timing"): the picture may lead the sound by up to 80 ms, never trail it.

    A voiced burst (150 Hz and its harmonics) starts and stops at times that fall between frames; the mouth's
    times are where its opening crosses half its peak, interpolated between frames. The lead at the start and
    at the end of the sound must both lie in [0, 80] ms.
    """
    from heygemd.pipeline.audio import SAMPLE_RATE, features_from_samples

    t = np.arange(int(3.0 * SAMPLE_RATE)) / SAMPLE_RATE
    start, stop = 1.013, 1.817
    voiced = sum(np.sin(2 * np.pi * 150.0 * k * t) / k for k in range(1, 20))
    wav = np.where((t >= start) & (t < stop), level * voiced / np.abs(voiced).max(), 0.0).astype(np.float32)
    features = features_from_samples(Path("burst.wav"), wav)
    opening = np.array([m.opening for m in articulate(features.windows(fps))])
    half = opening.max() / 2.0
    assert half > 0.0
    above = np.flatnonzero(opening >= half)
    first, last = int(above[0]), int(above[-1])
    assert np.all(opening[first : last + 1] >= half)  # one opening, no chatter
    opens_at = (first - 1 + (half - opening[first - 1]) / (opening[first] - opening[first - 1])) / fps
    closes_at = (last + (opening[last] - half) / (opening[last] - opening[last + 1])) / fps
    for lead in (start - opens_at, stop - closes_at):
        assert 0.0 <= lead <= 0.080
