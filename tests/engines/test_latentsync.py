"""The LatentSync 1.6 generator against the reference computation re-stated from its formulas
(``latentsync_reference``), with a tiny random model folder in the official layout and file formats."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from heygemd.engines import latentsync
from heygemd.engines.latentsync import LatentSyncEngine, LatentSyncModel, Sampling, initial_noise, load_model
from heygemd.engines.latentsync_load import make_scheduler
from heygemd.errors import CheckpointError
from tests.engines import latentsync_reference as ref


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's operations are too small to split across threads: on a busy machine the threads wait for
    each other and a UNet call takes 10x longer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model(latentsync_folder: Path):
    loaded = load_model(latentsync_folder)
    yield loaded
    loaded.close()


def random_inputs(frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    crops = rng.integers(0, 256, (frames, 64, 64, 3), dtype=np.uint8)
    audio = rng.standard_normal((frames, 50, 384)).astype(np.float32)
    return crops, audio


# ------------------------------------------------------------------ one UNet call


def test_unet_forward_matches_the_reference(model, latentsync_folder: Path) -> None:
    """One call on two 16-frame windows: GroupNorms over all frames, cross-attention to the audio per frame,
    temporal attention across the window, the timestep embedding."""
    rng = np.random.default_rng(1)
    sample = rng.standard_normal((2, 13, 16, 8, 8)).astype(np.float32)
    audio = rng.standard_normal((32, 50, 384)).astype(np.float32)
    ours = model.unet_forward(sample, 667, audio)
    sd, cfg = ref.load_unet(latentsync_folder)
    with torch.no_grad():
        expected = ref.unet(sd, cfg, torch.from_numpy(sample), 667, torch.from_numpy(audio)).numpy()
    assert ours.shape == (2, 4, 16, 8, 8) and ours.dtype == np.float32
    assert expected.std() > 0.05  # random weights, a meaningful output
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4 * expected.std())
    # each window is one sample: the second one does not depend on the first
    alone = model.unet_forward(sample[1:], 667, audio[16:])
    np.testing.assert_allclose(alone[0], ours[1], rtol=1e-4, atol=1e-5)


def test_the_frames_of_a_window_shape_each_other(model) -> None:
    """The ResNet GroupNorms and the motion modules span the window: changing the last frame changes the first's
    noise prediction; another timestep gives another prediction."""
    rng = np.random.default_rng(2)
    sample = rng.standard_normal((1, 13, 16, 8, 8)).astype(np.float32)
    audio = rng.standard_normal((16, 50, 384)).astype(np.float32)
    base = model.unet_forward(sample, 501, audio)
    changed = sample.copy()
    changed[:, :, 15] += 1.0
    assert not np.allclose(model.unet_forward(changed, 501, audio)[:, :, 0], base[:, :, 0], atol=1e-5)
    assert not np.allclose(model.unet_forward(sample, 1, audio), base, atol=1e-5)


# ------------------------------------------------------------------ mask and latents


def test_face_latents_are_the_masked_then_the_whole_face(model, latentsync_folder: Path) -> None:
    crops, _ = random_inputs(5, seed=3)
    ours = model.encode_faces(crops)
    vae = AutoencoderKL.from_pretrained(latentsync_folder / "sd-vae-ft-mse", local_files_only=True).eval()
    mask = ref.fixed_mask(latentsync_folder / "mask.png", 64)
    with torch.no_grad():
        _, _, _, masked, whole = ref.window_inputs(vae, np.ascontiguousarray(crops[..., ::-1]), mask)
    assert ours.shape == (5, 8, 8, 8)
    np.testing.assert_allclose(ours[:, :4], masked[0].permute(1, 0, 2, 3).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours[:, 4:], whole[0].permute(1, 0, 2, 3).numpy(), rtol=1e-4, atol=1e-5)
    # the masked face does not see the redrawn area: the lower face can be anything
    other = crops.copy()
    other[:, 30:58, 6:58] = 255 - other[:, 30:58, 6:58]  # inside the test mask's hole (rows 24..60, cols 3..61)
    again = model.encode_faces(other)
    np.testing.assert_allclose(again[:, :4], ours[:, :4], atol=1e-5)
    assert not np.allclose(again[:, 4:], ours[:, 4:], atol=1e-3)


# ------------------------------------------------------------------ the DDIM + CFG loop


def test_scheduler_is_the_references_ddim() -> None:
    scheduler = make_scheduler()
    scheduler.set_timesteps(20)
    assert scheduler.timesteps.tolist() == ref.ddim_timesteps(20) == list(range(951, 0, -50))
    scheduler.set_timesteps(3)
    assert scheduler.timesteps.tolist() == ref.ddim_timesteps(3) == [667, 334, 1]
    x, eps = torch.randn(1, 4, 2, 8, 8), torch.randn(1, 4, 2, 8, 8)
    for t in (667, 334, 1):
        ours = scheduler.step(eps, t, x, eta=0.0).prev_sample
        torch.testing.assert_close(ours, ref.ddim_step(eps, t, x, 3), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("guidance", [1.5, 1.0])
def test_generate_matches_the_reference_pipeline(model, latentsync_folder: Path, guidance: float) -> None:
    """20 frames: a 16-frame window and a 4-frame one, each from the shared noise, 3 DDIM steps, with
    classifier-free guidance (zero audio first) at 1.5 and without it at 1.0; decoded, pasted back, truncated."""
    crops, audio = random_inputs(20, seed=4)
    noise = initial_noise(1247, 64)
    ours = model.generate(crops, audio, noise, 3, guidance)
    expected = ref.generate(latentsync_folder, crops, audio, noise, 3, guidance)
    assert ours.shape == (20, 64, 64, 3) and ours.dtype == np.uint8
    diff = np.abs(ours.astype(int) - expected.astype(int))
    # float sums in another order (batched VAE passes) can move a truncated value across a level
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())
    np.testing.assert_array_equal(ours, model.generate(crops, audio, noise, 3, guidance))  # deterministic


def test_deepcache_matches_the_references_helper(model, latentsync_folder: Path) -> None:
    """4 steps with DeepCache as the reference's CLI enables it: steps 0 and 3 run the whole UNet, steps 1 and 2
    reuse its deep features; the pixels differ from the plain loop's."""
    crops, audio = random_inputs(16, seed=12)
    noise = initial_noise(1247, 64)
    ours = model.generate(crops, audio, noise, 4, 1.5, deepcache=True)
    expected = ref.generate(latentsync_folder, crops, audio, noise, 4, 1.5, deepcache=True)
    diff = np.abs(ours.astype(int) - expected.astype(int))
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())
    plain = model.generate(crops, audio, noise, 4, 1.5)
    assert np.abs(plain.astype(int) - ours).max() > 2


def test_guidance_and_audio_change_the_mouth_only(model, latentsync_folder: Path) -> None:
    """Outside the mask's hole the face comes back as it went in (within the round trip's truncation); inside,
    the audio and the guidance scale change the picture."""
    crops, audio = random_inputs(16, seed=5)
    noise = initial_noise(7, 64)
    out = model.generate(crops, audio, noise, 2, 1.5)
    hole = ref.fixed_mask(latentsync_folder / "mask.png", 64)[0].numpy() < 1.0
    kept = ~hole
    diff = out.astype(int) - crops.astype(int)
    assert diff[:, kept].min() >= -1 and diff[:, kept].max() <= 0  # truncation loses at most one level
    other_audio = model.generate(crops, np.zeros_like(audio), noise, 2, 1.5)
    assert np.abs(other_audio[:, hole].astype(int) - out[:, hole]).mean() > 0.5
    assert (other_audio[:, kept] == out[:, kept]).all()
    stronger = model.generate(crops, audio, noise, 2, 3.0)
    assert np.abs(stronger[:, hole].astype(int) - out[:, hole]).mean() > 0.5


def test_windows_are_independent_and_batched_alike(latentsync_folder: Path) -> None:
    """Two windows in one UNet batch give the faces of two separate calls; a window's frames start from the same
    noise whatever window they are in."""
    batched = load_model(latentsync_folder, batch_windows=2)
    crops, audio = random_inputs(32, seed=6)
    noise = initial_noise(3, 64)
    together = batched.generate(crops, audio, noise, 2, 1.5)
    first = batched.generate(crops[:16], audio[:16], noise, 2, 1.5)
    second = batched.generate(crops[16:], audio[16:], noise, 2, 1.5)
    diff = np.abs(together.astype(int) - np.concatenate([first, second]))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    batched.close()


def test_initial_noise_is_seeded() -> None:
    a, b = initial_noise(1247, 512), initial_noise(1247, 512)
    assert a.shape == (4, 64, 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, initial_noise(1248, 512))
    assert abs(float(a.std()) - 1.0) < 0.05


def test_bad_inputs_are_refused(model) -> None:
    crops, audio = random_inputs(4, seed=7)
    noise = initial_noise(0, 64)
    with pytest.raises(ValueError, match="audio"):
        model.generate(crops, audio[:3], noise, 2, 1.5)
    with pytest.raises(ValueError, match="noise"):
        model.generate(crops, audio, initial_noise(0, 128), 2, 1.5)
    with pytest.raises(ValueError, match="crops"):
        model.generate(crops[:, :60, :60], audio, noise, 2, 1.5)
    with pytest.raises(ValueError, match="sample"):
        model.unet_forward(np.zeros((1, 12, 16, 8, 8), np.float32), 1, np.zeros((16, 50, 384), np.float32))


# ------------------------------------------------------------------ refusing broken files


@pytest.fixture()
def broken_copy(latentsync_folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "latentsync"
    shutil.copytree(latentsync_folder, copy)
    return copy


@pytest.mark.parametrize(
    "name",
    [
        "latentsync_unet.pt",
        "whisper/tiny.pt",
        "sd-vae-ft-mse/config.json",
        "sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
        "mask.png",
    ],
)
def test_missing_file_is_named(broken_copy: Path, name: str) -> None:
    (broken_copy / name).unlink()
    with pytest.raises(CheckpointError) as info:
        load_model(broken_copy)
    assert info.value.code == "BAD_CHECKPOINT"
    assert name.removesuffix(".safetensors") in info.value.message
    assert "models/latentsync/" in info.value.hint and "mask.png" in info.value.hint


@pytest.mark.parametrize(
    "name", ["latentsync_unet.pt", "whisper/tiny.pt", "sd-vae-ft-mse/diffusion_pytorch_model.safetensors"]
)
def test_truncated_file_is_named(broken_copy: Path, name: str) -> None:
    path = broken_copy / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_model(broken_copy)
    assert name in info.value.message


@pytest.mark.parametrize("name", ["latentsync_unet.pt", "whisper/tiny.pt", "mask.png", "unet_config.yaml"])
def test_a_file_of_another_kind_is_refused(broken_copy: Path, name: str) -> None:
    (broken_copy / name).write_bytes(b"<html>404 Not Found</html>\n")
    with pytest.raises(CheckpointError) as info:
        load_model(broken_copy)
    assert name in info.value.message


def _edit_unet(folder: Path, edit) -> None:
    path = folder / "latentsync_unet.pt"
    checkpoint = torch.load(path, weights_only=True)
    edit(checkpoint["state_dict"])
    torch.save(checkpoint, path)


def test_unet_wrong_shape_is_named(broken_copy: Path) -> None:
    """The reference's loader drops a conv_in of another width and keeps its zeros; here it is refused."""

    def edit(state: dict[str, torch.Tensor]) -> None:
        state["conv_in.weight"] = torch.zeros(32, 9, 3, 3)

    _edit_unet(broken_copy, edit)
    with pytest.raises(CheckpointError) as info:
        load_model(broken_copy)
    assert "conv_in.weight" in info.value.message and "latentsync_unet.pt" in info.value.message


def test_unet_missing_and_unexpected_keys_are_named(broken_copy: Path) -> None:
    def edit(state: dict[str, torch.Tensor]) -> None:
        del state["up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"]
        state["extra.weight"] = torch.zeros(3)

    _edit_unet(broken_copy, edit)
    with pytest.raises(CheckpointError) as info:
        load_model(broken_copy)
    message = info.value.message
    assert "missing 1 key(s): up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight" in message
    assert "1 unexpected key(s): extra.weight" in message


def test_unet_without_position_tables_loads_them_computed(broken_copy: Path, model) -> None:
    """The motion modules' sinusoid tables are fixed: a checkpoint without them runs as one with them."""

    def edit(state: dict[str, torch.Tensor]) -> None:
        for key in [k for k in state if k.endswith(".pos_encoder.pe")]:
            del state[key]

    _edit_unet(broken_copy, edit)
    rng = np.random.default_rng(8)
    sample = rng.standard_normal((1, 13, 16, 8, 8)).astype(np.float32)
    audio = rng.standard_normal((16, 50, 384)).astype(np.float32)
    np.testing.assert_allclose(
        load_model(broken_copy).unet_forward(sample, 9, audio), model.unet_forward(sample, 9, audio), atol=1e-6
    )


def test_unet_checkpoint_for_another_config_is_refused(broken_copy: Path) -> None:
    """The full 1.6 checkpoint against the tiny config (or the other way round): every shape differs."""
    (broken_copy / "unet_config.yaml").unlink()  # the built-in 1.6 config meets the tiny checkpoint
    with pytest.raises(CheckpointError) as info:
        load_model(broken_copy)
    assert "latentsync_unet.pt" in info.value.message and "missing" in info.value.message


def test_whisper_of_other_dims_is_refused(broken_copy: Path) -> None:
    path = broken_copy / "whisper" / "tiny.pt"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["dims"]["n_audio_state"] = 512
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="whisper/tiny.pt.*whisper tiny"):
        load_model(broken_copy)
    checkpoint["dims"] = {"n_mels": 80}
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="ModelDimensions"):
        load_model(broken_copy)


def test_whisper_wrong_shape_is_named(broken_copy: Path) -> None:
    path = broken_copy / "whisper" / "tiny.pt"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["model_state_dict"]["encoder.blocks.3.mlp.0.weight"] = torch.zeros(10, 384, dtype=torch.float16)
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="encoder.blocks.3.mlp.0.weight"):
        load_model(broken_copy)


def test_config_heygemd_does_not_run_is_refused(broken_copy: Path) -> None:
    path = broken_copy / "unet_config.yaml"
    path.write_text(
        path.read_text()
        .replace("use_linear_projection", "x")
        .replace("resnet_time_scale_shift: default", "resnet_time_scale_shift: scale_shift")
    )
    with pytest.raises(CheckpointError, match="unet_config.yaml.*resnet_time_scale_shift"):
        load_model(broken_copy)


def test_vae_of_another_shape_is_refused(broken_copy: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = broken_copy / "sd-vae-ft-mse" / "diffusion_pytorch_model.safetensors"
    state = load_file(path)
    key = next(k for k in state if k.endswith("conv_in.weight"))
    state[key] = torch.zeros(3, 3, 3, 3)
    save_file(state, path)
    with pytest.raises(CheckpointError, match="sd-vae-ft-mse/diffusion_pytorch_model.safetensors"):
        load_model(broken_copy)


def test_loading_never_touches_the_network(
    latentsync_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # local_files_only alone must keep it offline
    crops, audio = random_inputs(2, seed=9)
    faces = load_model(latentsync_folder).generate(crops, audio, initial_noise(0, 64), 1, 1.5)
    assert faces.shape == (2, 64, 64, 3)
    copy = tmp_path / "latentsync"
    shutil.copytree(latentsync_folder, copy)
    (copy / "sd-vae-ft-mse" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="sd-vae-ft-mse/config.json"):
        load_model(copy)


# ------------------------------------------------------------------ the folder's listing, for heygemd check


def test_find_files_lists_found_and_missing(latentsync_folder: Path, tmp_path: Path) -> None:
    from heygemd.engines import latentsync_layout as layout

    files = layout.find_files(latentsync_folder)
    assert files.complete and files.missing == []
    assert set(files.found) == {"unet", "whisper", "vae_config", "vae", "mask", "unet_config"}
    empty = layout.find_files(tmp_path)
    assert not empty.complete and empty.found == {}
    assert empty.missing == [
        "latentsync_unet.pt",
        "whisper/tiny.pt",
        "sd-vae-ft-mse/config.json",
        "sd-vae-ft-mse/diffusion_pytorch_model.safetensors or sd-vae-ft-mse/diffusion_pytorch_model.bin",
        "mask.png",
    ]


def test_identity_names_the_weights(model, broken_copy: Path) -> None:
    assert model.identity().startswith("sha256:")
    path = broken_copy / "mask.png"
    import cv2

    image = cv2.imread(str(path))
    image[0, 0] = 0
    cv2.imwrite(str(path), image)
    assert load_model(broken_copy).identity() != model.identity()


# ------------------------------------------------------------------ out-of-memory, the random-weight folders


def test_out_of_memory_halves_the_windows_per_batch(latentsync_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A UNet batch of two windows that does not fit is run again as two batches of one, with the same faces."""
    model = load_model(latentsync_folder, batch_windows=2)
    crops, audio = random_inputs(32, seed=10)
    noise = initial_noise(5, 64)
    expected = model.generate(crops, audio, noise, 1, 1.5)
    real_unet = model._unet
    batches: list[int] = []

    def small_gpu(sample: torch.Tensor, timestep: int, tokens: torch.Tensor, *cache: object) -> torch.Tensor:
        batches.append(sample.shape[0])
        if sample.shape[0] > 2:  # two windows with guidance
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_unet(sample, timestep, tokens, *cache)

    monkeypatch.setattr(model, "_unet", small_gpu)
    faces = model.generate(crops, audio, noise, 1, 1.5)
    assert batches == [4, 2, 2] and model._batches.size == 1
    assert np.abs(faces.astype(int) - expected).max() <= 1
    model.close()


def test_the_probe_is_one_step_over_blank_full_windows(model, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fitting's probe denoises its windows as one UNet batch (guidance doubles it) at a single step."""
    real_unet = model._unet
    calls: list[tuple[int, ...]] = []

    def counting(sample: torch.Tensor, *args: object) -> torch.Tensor:
        calls.append(tuple(sample.shape))
        return real_unet(sample, *args)

    monkeypatch.setattr(model, "_unet", counting)
    model._probe(2, 1.5, False)
    assert calls == [(4, 13, 16, 8, 8)]  # 2 windows x 2 guidance branches, 16 frames of 64 / 8 latents
    calls.clear()
    model._probe(1, 1.0, False)
    assert calls == [(1, 13, 16, 8, 8)]


class PeakOfWindows:
    """``cuda_batches.PeakGauge`` that runs the probe and reads its peak as ``fixed + windows * per_window``."""

    def __init__(self, fixed: int, per_window: int, free: int):
        self.fixed, self.per_window, self.free_bytes = fixed, per_window, free
        self.probed: list[tuple[int, float, bool]] = []

    def peak(self, run: Callable[[], None]) -> int:
        run()
        return self.fixed + self.probed[-1][0] * self.per_window

    def free(self) -> int:
        return self.free_bytes


def test_the_windows_per_batch_fit_the_probes_peaks(latentsync_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA (here its gauge and probe stood in for) the windows per batch are the most that fit in the free
    memory by the peaks of one and two windows, at most the configured number."""
    gib = 1 << 30
    model = load_model(latentsync_folder, batch_windows=40)
    gauge = PeakOfWindows(fixed=4 * gib, per_window=gib, free=20 * gib)
    monkeypatch.setattr(model, "device", torch.device("cuda"))
    monkeypatch.setattr(model, "_probe", lambda *probe: gauge.probed.append(probe))
    assert model.fit_batch_windows(1.5, True, gauge=gauge) == 12  # (0.8 * 20 GiB - 4 GiB) // 1 GiB
    assert gauge.probed == [(1, 1.5, True), (2, 1.5, True)]
    assert model.batch_windows == 12 and model._batches.size == 12
    gauge.free_bytes = 200 * gib
    assert model.fit_batch_windows(1.5, True, gauge=gauge) == 12  # never more than it had
    model.close()


def test_a_probe_out_of_memory_leaves_one_window_per_batch(
    latentsync_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two windows do not fit in the GPU's memory now: the model still loads, one window per batch."""
    model = load_model(latentsync_folder, batch_windows=8)
    gauge = PeakOfWindows(fixed=1 << 30, per_window=1 << 30, free=20 << 30)
    monkeypatch.setattr(model, "device", torch.device("cuda"))

    def probe(windows: int, guidance_scale: float, deepcache: bool) -> None:
        if windows > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (a stand-in)")
        gauge.probed.append((windows, guidance_scale, deepcache))

    monkeypatch.setattr(model, "_probe", probe)
    assert model.fit_batch_windows(1.5, False, gauge=gauge) == 1 and model.batch_windows == 1
    assert gauge.probed == [(1, 1.5, False)]
    model.close()


def test_the_cpu_keeps_its_one_window_without_probing(latentsync_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_probe(*args: object) -> None:
        raise AssertionError("probed on the CPU")

    monkeypatch.setattr(LatentSyncModel, "_probe", no_probe)
    engine = LatentSyncEngine(latentsync_folder, device="cpu", batch_size=64, sampling=Sampling(2, 1.5, 1, False))
    assert engine.batch_size == 16 and engine.model.batch_windows == 1
    engine.close()
    model = load_model(latentsync_folder, batch_windows=4)
    assert model.fit_batch_windows(1.5, False) == 4
    model.close()


def test_the_full_config_is_the_published_model() -> None:
    """stage2_512.yaml's UNet, built on the meta device: the 1,267,944,644 values (parameters and the motion
    modules' position tables) of LatentSync 1.6, in 1,246 tensors."""
    from bench.latentsync_weights import FULL, TINY, unet_parameter_count

    assert unet_parameter_count(FULL) == 1_267_944_644
    assert unet_parameter_count(TINY) < 5_000_000


def test_the_random_folder_has_the_official_file_formats(latentsync_folder: Path) -> None:
    unet = torch.load(latentsync_folder / "latentsync_unet.pt", weights_only=True)
    assert set(unet) == {"global_step", "state_dict"}
    whisper = torch.load(latentsync_folder / "whisper" / "tiny.pt", weights_only=True)
    assert set(whisper) == {"dims", "model_state_dict"}
    assert whisper["dims"]["n_audio_state"] == 384 and whisper["dims"]["n_audio_layer"] == 4
    assert {v.dtype for v in whisper["model_state_dict"].values()} == {torch.float16}
    assert any(k.startswith("decoder.") for k in whisper["model_state_dict"])
    import cv2

    mask = cv2.imread(str(latentsync_folder / "mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (256, 256, 3) and set(np.unique(mask)) == {0, 255}


# ------------------------------------------------------------------ the fp16 path, on the CPU's float16 kernels


@pytest.fixture(scope="module")
def half_on_cpu(latentsync_folder: Path):
    """The model as CUDA of compute capability 8+ loads it (VAE and UNet in float16), here on the CPU: every cast of
    the fp16 path runs before a GPU is at hand; the GPU test below measures the same on CUDA's kernels."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(latentsync, "compute_dtype", lambda device, fp16, min_capability=0: torch.float16)
        loaded = load_model(latentsync_folder)
    yield loaded
    loaded.close()


@pytest.mark.parametrize("deepcache", [False, True])
def test_the_fp16_path_stays_close_to_fp32(half_on_cpu: LatentSyncModel, model, deepcache: bool) -> None:
    assert half_on_cpu.dtype == torch.float16 and next(half_on_cpu.unet.parameters()).dtype == torch.float16
    crops, audio = random_inputs(16, seed=13)
    noise = initial_noise(1247, 64)
    half = half_on_cpu.generate(crops, audio, noise, 4, 1.5, deepcache=deepcache)
    full = model.generate(crops, audio, noise, 4, 1.5, deepcache=deepcache)
    diff = np.abs(half.astype(int) - full.astype(int))
    assert half.dtype == np.uint8 and diff.mean() < 1.0 and np.percentile(diff, 99.9) <= 16, (diff.mean(), diff.max())
    latents = half_on_cpu.encode_faces(crops)
    assert latents.dtype == np.float32
    np.testing.assert_allclose(latents, model.encode_faces(crops), atol=0.05)


def test_the_fp16_audio_states_stay_close_to_fp32(half_on_cpu: LatentSyncModel, model) -> None:
    """Whisper runs in the model's dtype (its weights cast per call, LayerNorms in fp32, as OpenAI's code does)."""
    wav = np.random.default_rng(5).standard_normal(16000 * 2).astype(np.float32) * 0.1
    with half_on_cpu.encode_audio(wav) as half, model.encode_audio(wav) as full:
        ours, expected = half.windows(25.0, 0, 50), full.windows(25.0, 0, 50)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=5e-2, rtol=5e-2)


# ------------------------------------------------------------------ CUDA (run with -m gpu on a GPU machine)


@pytest.mark.gpu
def test_fp16_on_cuda_is_close_to_fp32(latentsync_folder: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    crops, audio = random_inputs(16, seed=11)
    noise = initial_noise(1247, 64)
    fp32 = load_model(latentsync_folder, device="cpu").generate(crops, audio, noise, 3, 1.5)
    half = load_model(latentsync_folder, device="cuda")
    if torch.cuda.get_device_capability()[0] > 7:
        assert half.dtype == torch.float16
    fp16 = half.generate(crops, audio, noise, 3, 1.5)
    diff = np.abs(fp16.astype(int) - fp32.astype(int))
    assert diff.mean() < 2.0 and np.percentile(diff, 99.9) <= 16, (diff.mean(), diff.max())
    half.close()
    assert torch.cuda.memory_allocated() < 16 * 2**20


@pytest.mark.gpu
@pytest.mark.parametrize("windows", [4, 100_000])
def test_the_windows_per_batch_fit_the_gpu(latentsync_folder: Path, windows: int) -> None:
    """At load on CUDA the windows per batch are fitted to the free memory: at least one, at most the configured
    number (100,000 windows of 16 faces do not fit), and the engine's batch_size counts their frames."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    sampling = Sampling(steps=2, guidance=1.5, seed=1247, deepcache=False)
    engine = LatentSyncEngine(latentsync_folder, device="cuda", batch_size=16 * windows, sampling=sampling)
    try:
        fitted = engine.model.batch_windows
        assert 1 <= fitted <= windows
        if windows == 100_000:
            assert fitted < windows
        assert engine.batch_size == 16 * fitted
    finally:
        engine.close()
