"""The MuseTalk 1.5 engine against an independent computation: the reference algorithm re-stated step by step
(musetalk/utils/audio_processor.py, musetalk/models/vae.py, musetalk/models/unet.py, scripts/inference.py),
with the same tiny random model files in the official layout."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import AutoFeatureExtractor, WhisperModel

from heygemd.engines import musetalk
from heygemd.engines.musetalk import CPU_SUB_BATCH, MuseTalkEngine, audio_prompts, load_model
from heygemd.errors import CheckpointError
from heygemd.pipeline.engine_contract import FaceBatch


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.3 * envelope * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


# ------------------------------------------------------------------ independent computation (the reference)


def reference_prompts(wav: np.ndarray, whisper_dir: Path, fps: float) -> np.ndarray:
    """get_audio_feature + get_whisper_chunk, with ``fps`` used as given (the reference would int() it)."""
    extractor = AutoFeatureExtractor.from_pretrained(whisper_dir, local_files_only=True)
    whisper = WhisperModel.from_pretrained(whisper_dir, local_files_only=True).eval()
    segment_length = 30 * 16000
    segments = [wav[i : i + segment_length] for i in range(0, len(wav), segment_length)]
    features = [extractor(s, return_tensors="pt", sampling_rate=16000).input_features for s in segments]
    with torch.no_grad():
        stacked = [torch.stack(whisper.encoder(f, output_hidden_states=True).hidden_states, dim=2) for f in features]
    feature = torch.cat(stacked, dim=1)
    multiplier = 50 / fps
    num_frames = math.floor(len(wav) / 16000 * fps)
    actual = math.floor(len(wav) / 16000 * 50)
    feature = feature[:, :actual]
    pad = math.ceil(multiplier)
    feature = torch.cat(
        [torch.zeros_like(feature[:, : pad * 2]), feature, torch.zeros_like(feature[:, : pad * 3 * 2])], 1
    )
    clips = []
    for i in range(num_frames):
        index = math.floor(i * multiplier)
        clip = feature[:, index : index + 10]
        assert clip.shape[1] == 10
        clips.append(clip)
    prompts = torch.cat(clips, dim=0)  # (T, 10, 5, 384)
    return prompts.reshape(prompts.shape[0], 50, 384).numpy()


def reference_pe(x: torch.Tensor) -> torch.Tensor:
    d_model, max_len = 384, 5000
    pe = torch.zeros(max_len, d_model)
    position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return x + pe[None, : x.shape[1]]


def reference_generate(folder: Path, crops: np.ndarray, prompts: np.ndarray) -> np.ndarray:
    """VAE.get_latents_for_unet (mean instead of sample) per crop, UNet at t=0 with pe(prompts), decode_latents."""
    import json

    config = json.loads((folder / "musetalkV15/musetalk.json").read_text())
    unet = UNet2DConditionModel(**config)
    unet.load_state_dict(torch.load(folder / "musetalkV15/unet.pth", map_location="cpu"))
    unet.eval()
    vae = AutoencoderKL.from_pretrained(folder / "sd-vae", local_files_only=True).eval()
    sf = vae.config.scaling_factor
    mask = torch.zeros((256, 256))
    mask[:128, :] = 1

    def preprocess(img: np.ndarray, half: bool) -> torch.Tensor:
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        x = np.asarray([rgb]) / 255.0
        x = torch.squeeze(torch.FloatTensor(np.transpose(x, (3, 0, 1, 2))))
        if half:
            x = x * (mask > 0.5)
        x = (x - 0.5) / 0.5
        return x.unsqueeze(0)

    outputs = []
    with torch.no_grad():
        for crop, prompt in zip(crops, prompts, strict=True):
            masked = sf * vae.encode(preprocess(crop, True)).latent_dist.mean
            ref = sf * vae.encode(preprocess(crop, False)).latent_dist.mean
            latent = torch.cat([masked, ref], dim=1)
            tokens = reference_pe(torch.from_numpy(prompt[None]))
            pred = unet(latent, torch.tensor([0]), encoder_hidden_states=tokens).sample
            image = vae.decode(pred / sf).sample
            image = (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().numpy()
            outputs.append((image * 255).round().astype("uint8")[..., ::-1][0])
    return np.stack(outputs)


# ------------------------------------------------------------------ audio


def test_audio_prompts_match_the_reference_across_a_30s_border(musetalk_folder: Path) -> None:
    wav = speechlike(31.3)
    ours = audio_prompts(wav, musetalk_folder / "whisper", 25.0)
    ref = reference_prompts(wav, musetalk_folder / "whisper", 25.0)
    assert ours.shape == (math.floor(31.3 * 25), 50, 384) == ref.shape
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    # the first frame sees 2 * ceil(50/25) = 4 zero steps (x 5 states = 20 tokens) on the left
    assert not ours[0, :20].any() and ours[0, 20:].any()


def test_audio_prompts_use_the_true_frame_rate(musetalk_folder: Path) -> None:
    wav = speechlike(4.0, seed=1)
    ours = audio_prompts(wav, musetalk_folder / "whisper", 29.97)
    assert ours.shape[0] == math.floor(4.0 * 29.97) == 119  # int(fps) would give 116 frames
    np.testing.assert_allclose(ours, reference_prompts(wav, musetalk_folder / "whisper", 29.97), rtol=1e-5, atol=1e-5)
    truncated = reference_prompts(wav, musetalk_folder / "whisper", 29.0)
    assert not np.allclose(ours[-1], truncated[-1])  # the reference's int(29.97) windows drift


def test_whisper_features_cut_windows_per_batch_like_all_at_once(musetalk_folder: Path) -> None:
    model = load_model(musetalk_folder)
    wav = speechlike(3.0, seed=2)
    with model.encode_audio(wav) as features:
        whole = features.windows(30.0, 0, 90)
        parts = np.concatenate([features.windows(30.0, a, min(a + 16, 90)) for a in range(0, 90, 16)])
        np.testing.assert_array_equal(whole, parts)
        beyond = features.windows(30.0, 90, 91)  # the frame the reference would not render: zeros past the end
        assert beyond.shape == (1, 50, 384)


def _rss_file_kib() -> int:
    """The file-backed part of this process's RSS (mapped files' resident pages), from /proc/self/status."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


def test_whisper_features_of_a_long_audio_stay_out_of_the_process_memory(musetalk_folder: Path) -> None:
    """2 min of audio: 46 MB of encoder states go to a file and each batch reads back its own steps, so the RSS
    does not grow with the audio's length (a memory map of that file counted all of it)."""
    model = load_model(musetalk_folder)
    model.encode_audio(speechlike(1.0)).close()  # torch's code pages are in before measuring
    wav = speechlike(120.0, seed=4)
    before = _rss_file_kib()
    with model.encode_audio(wav) as features:
        assert features.steps * 5 * 384 * 4 > 45e6
        last = features.windows(25.0, 0, 3000)[-16:]
        grown = (_rss_file_kib() - before) / 1024
        np.testing.assert_array_equal(last, features.windows(25.0, 2984, 3000))
    assert grown < 8  # MiB; 44 with the states mapped
    assert np.abs(last).sum() > 0


# ------------------------------------------------------------------ generator


def test_generate_crops_matches_the_reference(musetalk_folder: Path) -> None:
    rng = np.random.default_rng(3)
    crops = rng.integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)
    prompts = rng.standard_normal((3, 50, 384)).astype(np.float32)
    model = load_model(musetalk_folder, device="cpu")
    ours = model.generate_crops(crops, prompts)
    ref = reference_generate(musetalk_folder, crops, prompts)
    assert ours.shape == (3, 256, 256, 3) and ours.dtype == np.uint8
    # Batched (ours) and one-by-one (the reference) float sums differ in the last bits; random decoder weights can
    # turn that into a level or two of uint8 on a few pixels.
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() <= 4 and diff.mean() < 0.05, (diff.max(), diff.mean())
    again = model.generate_crops(crops, prompts)
    np.testing.assert_array_equal(ours, again)  # the latent mean, not a sample: deterministic


def test_latents_are_masked_half_then_whole_crop(musetalk_folder: Path) -> None:
    model = load_model(musetalk_folder)
    rng = np.random.default_rng(4)
    crop = rng.integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
    other_lower = crop.copy()
    other_lower[:, 128:] = 255 - other_lower[:, 128:]
    a, b = model.encode_latents(crop), model.encode_latents(other_lower)
    assert a.shape == (1, 8, 32, 32)
    np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1e-5)  # masked half: the lower half is not seen
    assert not np.allclose(a[:, 4:], b[:, 4:])


def test_engine_resizes_crops_and_uses_prepared_latents(musetalk_folder: Path) -> None:
    engine = MuseTalkEngine(musetalk_folder, device="cpu", batch_size=2)
    rng = np.random.default_rng(5)
    crops = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((180, 160), (256, 256), (300, 290))]
    prompts = rng.standard_normal((3, 50, 384)).astype(np.float32)
    marks = [np.zeros((68, 2), np.float32)] * 3
    mels = np.zeros((3, 80, 16), np.float32)
    out = engine.generate(FaceBatch(crops=crops, landmarks=marks, mels=mels, prompts=prompts))
    assert [o.shape for o in out] == [c.shape for c in crops]
    assert engine.encoder_calls == 3
    prepared = engine.prepare_presenter(crops)
    assert engine.encoder_calls == 6
    again = engine.generate(FaceBatch(crops=crops, landmarks=marks, mels=mels, prompts=prompts, prepared=prepared))
    assert engine.encoder_calls == 6  # prepared latents: no VAE encoding
    for x, y in zip(out, again, strict=True):
        np.testing.assert_array_equal(x, y)
    assert engine.identity.startswith("sha256:")
    engine.close()


def test_cpu_passes_are_small_and_give_the_pixels_of_one_large_pass(musetalk_folder: Path) -> None:
    """On the CPU a configured batch of 64 runs in passes of CPU_SUB_BATCH faces (the memory of a pass grows with
    its faces); the faces are those of one pass over all of them, but for float rounding (kernels chosen by the
    pass size): at most 1 level off, in a few pixels."""
    engine = MuseTalkEngine(musetalk_folder, device="cpu", batch_size=64)
    assert engine.batch_size == CPU_SUB_BATCH == 4
    rng = np.random.default_rng(11)
    crops = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(6)]
    prompts = rng.standard_normal((6, 50, 384)).astype(np.float32)
    marks = [np.zeros((68, 2), np.float32)] * 6
    prepared = engine.prepare_presenter(crops)
    faces = engine.generate(
        FaceBatch(crops=crops, landmarks=marks, mels=np.zeros((6, 80, 16), np.float32), prompts=prompts)
    )
    one_pass = engine.model.encode_latents(np.stack(crops))
    np.testing.assert_allclose(prepared, one_pass, rtol=0, atol=1e-5)
    difference = np.abs(np.stack(faces).astype(np.int16) - engine.model.generate_from_latents(one_pass, prompts))
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3
    engine.close()


def test_the_fp16_path_stays_close_to_fp32(musetalk_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The models as CUDA loads them with fp16 (UNet, VAE and Whisper in float16), here on the CPU's float16
    kernels: every cast of the fp16 path runs before a GPU is at hand (the GPU test below measures CUDA's)."""
    full = MuseTalkEngine(musetalk_folder, device="cpu", batch_size=2)
    monkeypatch.setattr(musetalk, "compute_dtype", lambda device, fp16, min_capability=0: torch.float16)
    half = MuseTalkEngine(musetalk_folder, device="cpu", batch_size=2)
    assert half.model.dtype == torch.float16 and half.prep_version != full.prep_version  # caches kept apart
    rng = np.random.default_rng(7)
    crops = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(3)]
    prompts = rng.standard_normal((3, 50, 384)).astype(np.float32)
    marks = [np.zeros((68, 2), np.float32)] * 3
    prepared = half.prepare_presenter(crops)
    assert prepared.dtype == np.float32
    np.testing.assert_allclose(prepared, full.prepare_presenter(crops), atol=0.05)
    faces = [
        np.stack(engine.generate(FaceBatch(crops=crops, landmarks=marks, mels=np.zeros((3, 80, 16)), **fields)))
        for engine, fields in ((half, {"prompts": prompts, "prepared": prepared}), (full, {"prompts": prompts}))
    ]
    diff = np.abs(faces[0].astype(int) - faces[1].astype(int))
    assert diff.mean() < 1.0 and np.percentile(diff, 99.9) <= 16, (diff.mean(), diff.max())
    wav = speechlike(2.0)
    with half.model.encode_audio(wav) as ours, full.model.encode_audio(wav) as expected:
        np.testing.assert_allclose(ours.windows(25.0, 0, 50), expected.windows(25.0, 0, 50), atol=5e-2, rtol=5e-2)
    half.close()
    full.close()


# ------------------------------------------------------------------ refusing broken files


@pytest.fixture()
def broken_copy(musetalk_folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "musetalk"
    shutil.copytree(musetalk_folder, copy)
    return copy


def test_missing_file_is_named(broken_copy: Path) -> None:
    (broken_copy / "sd-vae" / "diffusion_pytorch_model.bin").unlink()
    with pytest.raises(CheckpointError) as info:
        load_model(broken_copy)
    assert info.value.code == "BAD_CHECKPOINT"
    assert "sd-vae/diffusion_pytorch_model" in info.value.message
    assert "models/musetalk" in info.value.hint


@pytest.mark.parametrize(
    "name", ["musetalkV15/unet.pth", "sd-vae/diffusion_pytorch_model.bin", "whisper/pytorch_model.bin"]
)
def test_truncated_file_is_named(broken_copy: Path, name: str) -> None:
    path = broken_copy / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_model(broken_copy)
    assert name in info.value.message


def test_wrong_shape_is_named(broken_copy: Path) -> None:
    path = broken_copy / "musetalkV15" / "unet.pth"
    state = torch.load(path)
    state["conv_in.weight"] = torch.zeros(32, 4, 3, 3)
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_model(broken_copy)
    assert "conv_in.weight" in info.value.message and "musetalkV15/unet.pth" in info.value.message


def test_vae_weights_of_another_shape_are_refused(broken_copy: Path) -> None:
    path = broken_copy / "sd-vae" / "diffusion_pytorch_model.bin"
    state = torch.load(path)
    key = next(k for k in state if k.endswith("conv_in.weight"))
    state[key] = torch.zeros(3, 3, 3, 3)
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_model(broken_copy)
    assert "sd-vae/diffusion_pytorch_model.bin" in info.value.message


def test_whisper_missing_preprocessor_is_named(broken_copy: Path) -> None:
    (broken_copy / "whisper" / "preprocessor_config.json").unlink()
    with pytest.raises(CheckpointError) as info:
        audio_prompts(speechlike(1.0), broken_copy / "whisper", 25.0)
    assert "preprocessor_config.json" in info.value.message


# ------------------------------------------------------------------ choosing it, and heygemd check


def test_auto_prefers_musetalk_then_wav2lip_then_mouthwarp(musetalk_folder: Path, tmp_path: Path) -> None:
    from heygemd.engines import resolve_engine_name
    from heygemd.settings import EngineSettings

    models = tmp_path / "models"
    models.mkdir()
    auto = EngineSettings()
    assert resolve_engine_name(auto, models) == "mouthwarp"
    (models / "wav2lip_gan.pth").write_bytes(b"x")
    assert resolve_engine_name(auto, models) == "wav2lip"
    shutil.copytree(musetalk_folder, models / "musetalk")
    assert resolve_engine_name(auto, models) == "musetalk"
    (models / "musetalk" / "whisper" / "preprocessor_config.json").unlink()  # incomplete: not chosen
    assert resolve_engine_name(auto, models) == "wav2lip"
    assert resolve_engine_name(EngineSettings(name="musetalk"), models) == "musetalk"


def test_check_lists_the_musetalk_files(musetalk_folder: Path, tmp_path: Path) -> None:
    from heygemd.check import run_checks
    from heygemd.settings import Settings

    models = tmp_path / "models"
    shutil.copytree(musetalk_folder, models / "musetalk")
    settings = Settings.model_validate(
        {"paths": {"inbox": tmp_path / "in", "outbox": tmp_path / "out", "models": models}, "engine": {"device": "cpu"}}
    )
    checks = {c.name: c for c in run_checks(settings)}
    assert checks["musetalk files"].ok and checks["musetalk files"].required
    assert checks["engine"].ok and "musetalk" in checks["engine"].detail

    (models / "musetalk" / "musetalkV15" / "unet.pth").unlink()
    forced = settings.model_copy(update={"engine": settings.engine.model_copy(update={"name": "musetalk"})})
    checks = {c.name: c for c in run_checks(forced)}
    files = checks["musetalk files"]
    assert not files.ok and files.required and "musetalkV15/unet.pth" in files.detail and "models/musetalk" in files.fix
    assert not checks["engine"].ok and "unet.pth" in checks["engine"].detail


# ------------------------------------------------------------------ CUDA (run with -m gpu on a GPU machine)


@pytest.mark.gpu
def test_fp16_on_cuda_is_close_to_fp32(musetalk_folder: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    rng = np.random.default_rng(6)
    crops = rng.integers(0, 256, (4, 256, 256, 3), dtype=np.uint8)
    prompts = rng.standard_normal((4, 50, 384)).astype(np.float32)
    fp32 = load_model(musetalk_folder, device="cpu").generate_crops(crops, prompts)
    half = load_model(musetalk_folder, device="cuda", fp16=True)
    assert half.dtype == torch.float16
    fp16 = half.generate_crops(crops, prompts)
    diff = np.abs(fp16.astype(int) - fp32.astype(int))
    assert diff.mean() < 2.0 and np.percentile(diff, 99.9) <= 16, (diff.mean(), diff.max())
    wav = speechlike(2.0)
    with load_model(musetalk_folder).encode_audio(wav) as ref, half.encode_audio(wav) as ours:
        np.testing.assert_allclose(ours.windows(25.0, 0, 50), ref.windows(25.0, 0, 50), atol=5e-2, rtol=5e-2)


@pytest.mark.gpu
def test_engine_releases_gpu_memory_on_close(musetalk_folder: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    engine = MuseTalkEngine(musetalk_folder, device="cuda", batch_size=4, fp16=True)
    crops = [np.zeros((200, 180, 3), np.uint8)] * 5
    out = engine.generate(
        FaceBatch(
            crops=crops,
            landmarks=[np.zeros((68, 2), np.float32)] * 5,
            mels=np.zeros((5, 80, 16), np.float32),
            prompts=np.zeros((5, 50, 384), np.float32),
        )
    )
    assert [o.shape for o in out] == [c.shape for c in crops]
    engine.close()
    assert torch.cuda.memory_allocated() < 16 * 2**20


def test_loading_never_touches_the_network(
    musetalk_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # local_files_only alone must keep it offline
    model = load_model(musetalk_folder)
    crops = model.generate_crops(np.zeros((1, 256, 256, 3), np.uint8), np.zeros((1, 50, 384), np.float32))
    assert crops.shape == (1, 256, 256, 3)
    copy = tmp_path / "musetalk"
    shutil.copytree(musetalk_folder, copy)
    (copy / "whisper" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="whisper/config.json"):
        load_model(copy)
