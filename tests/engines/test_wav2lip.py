"""The Wav2Lip generator against the published manifest and an independent functional forward; checkpoint
validation; the engine's pre/post-processing and batching."""

from __future__ import annotations

import copy
import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from heygemd.engines.torch_util import cpu_threads, fold_batch_norm
from heygemd.engines.wav2lip import Wav2Lip, Wav2LipEngine, face_input, load_model
from heygemd.errors import CheckpointError, ConfigError
from heygemd.pipeline.engine_contract import Engine, FaceBatch
from tests.engines.checkpoints import make_random_checkpoint, manifest_shapes, random_state_dict, wrap_checkpoint

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return random_state_dict(seed=0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official layout: module.-prefixed keys, optimizer, step and epoch; same seed as ``state``."""
    return make_random_checkpoint(tmp_path_factory.mktemp("models") / "wav2lip gan 模型.pth", seed=0)


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> Wav2Lip:
    return load_model(checkpoint)


@pytest.fixture(scope="module")
def engine(checkpoint: Path) -> Wav2LipEngine:
    return Wav2LipEngine(checkpoint, device="cpu", batch_size=8)


def _inputs(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    audio = torch.randn(batch, 1, 80, 16, generator=generator) * 1.5
    face = torch.rand(batch, 6, 96, 96, generator=generator)
    return audio, face


def _crops(sizes: list[tuple[int, int]], seed: int) -> list[np.ndarray]:
    """Smooth random BGR crops of the given (height, width)."""
    rng = np.random.default_rng(seed)
    crops = []
    for h, w in sizes:
        y, x = np.mgrid[0:h, 0:w]
        base = rng.uniform(40, 200, 3)
        image = base + 30 * np.sin(x[..., None] / rng.uniform(5, 15)) + 20 * np.cos(y[..., None] / rng.uniform(5, 15))
        crops.append(np.clip(image, 0, 255).astype(np.uint8))
    return crops


# ---------------------------------------------------------------- architecture


def test_state_dict_matches_the_published_manifest() -> None:
    expected = manifest_shapes()
    ours = Wav2Lip().state_dict()
    assert list(ours) == list(expected)  # same names, same order
    assert {k: tuple(v.shape) for k, v in ours.items()} == expected
    manifest_params = sum(math.prod(s) for k, s in expected.items() if not k.endswith(BUFFERS))
    model_params = sum(p.numel() for p in Wav2Lip().parameters())
    assert model_params == manifest_params == 36_298_035


def _unit(
    x: torch.Tensor,
    s: dict[str, torch.Tensor],
    prefix: str,
    stride,
    padding: int,
    residual: bool = False,
    transpose: bool = False,
    output_padding: int = 0,
) -> torch.Tensor:
    """conv (or transposed conv) -> batch norm (eval statistics) -> [+ input] -> relu, straight from the tensors."""
    w, b = s[f"{prefix}.conv_block.0.weight"], s[f"{prefix}.conv_block.0.bias"]
    if transpose:
        y = F.conv_transpose2d(x, w, b, stride=stride, padding=padding, output_padding=output_padding)
    else:
        y = F.conv2d(x, w, b, stride=stride, padding=padding)
    y = F.batch_norm(
        y,
        s[f"{prefix}.conv_block.1.running_mean"],
        s[f"{prefix}.conv_block.1.running_var"],
        s[f"{prefix}.conv_block.1.weight"],
        s[f"{prefix}.conv_block.1.bias"],
        training=False,
        eps=1e-5,
    )
    if residual:
        y = y + x
    return F.relu(y)


def _reference_forward(s: dict[str, torch.Tensor], audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
    """The published Wav2Lip forward pass, written out with functional ops and its layer hyper-parameters."""
    R = dict(stride=1, padding=1, residual=True)  # the 3x3 residual unit
    face_layers = [
        [dict(stride=1, padding=3)],
        [dict(stride=2, padding=1), R, R],
        [dict(stride=2, padding=1), R, R, R],
        [dict(stride=2, padding=1), R, R],
        [dict(stride=2, padding=1), R, R],
        [dict(stride=2, padding=1), R],
        [dict(stride=1, padding=0), dict(stride=1, padding=0)],
    ]
    feats = []
    x = face
    for b, block in enumerate(face_layers):
        for u, args in enumerate(block):
            x = _unit(x, s, f"face_encoder_blocks.{b}.{u}", **args)
        feats.append(x)

    audio_layers = [
        dict(stride=1, padding=1),
        R,
        R,
        dict(stride=(3, 1), padding=1),
        R,
        R,
        dict(stride=3, padding=1),
        R,
        R,
        dict(stride=(3, 2), padding=1),
        R,
        dict(stride=1, padding=0),
        dict(stride=1, padding=0),
    ]
    a = audio
    for u, args in enumerate(audio_layers):
        a = _unit(a, s, f"audio_encoder.{u}", **args)
    assert a.shape[1:] == (512, 1, 1)

    UP = dict(stride=2, padding=1, transpose=True, output_padding=1)
    decoder_layers = [
        [dict(stride=1, padding=0)],
        [dict(stride=1, padding=0, transpose=True), R],
        [UP, R, R],
        [UP, R, R],
        [UP, R, R],
        [UP, R, R],
        [UP, R, R],
    ]
    x = a
    for b, block in enumerate(decoder_layers):
        for u, args in enumerate(block):
            x = _unit(x, s, f"face_decoder_blocks.{b}.{u}", **args)
        x = torch.cat((x, feats.pop()), dim=1)

    x = _unit(x, s, "output_block.0", stride=1, padding=1)
    x = F.conv2d(x, s["output_block.1.weight"], s["output_block.1.bias"])
    return torch.sigmoid(x)


def test_model_matches_an_independent_functional_forward(model: Wav2Lip, state: dict[str, torch.Tensor]) -> None:
    audio, face = _inputs(2, seed=11)
    with torch.inference_mode():
        ours = model(audio, face)
        reference = _reference_forward(state, audio, face)
    assert ours.shape == (2, 3, 96, 96)
    assert float(ours.std()) > 0.05  # not saturated: the comparison is meaningful
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_output_depends_on_audio_and_face(model: Wav2Lip) -> None:
    audio, face = _inputs(1, seed=1)
    other_audio, other_face = _inputs(1, seed=2)
    with torch.inference_mode():
        base = model(audio, face)
        assert float((model(other_audio, face) - base).abs().max()) > 1e-3
        assert float((model(audio, other_face) - base).abs().max()) > 1e-3


# ---------------------------------------------------------------- loading


def test_random_checkpoint_loads_with_its_weights(model: Wav2Lip, state: dict[str, torch.Tensor]) -> None:
    assert isinstance(model, Wav2Lip)
    assert not model.training
    loaded = model.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_keys_without_prefix_and_without_optimizer_load(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "plain.pth"
    torch.save(wrap_checkpoint(state, prefix="", with_optimizer=False), path)
    loaded = load_model(path).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_bare_state_dict_loads(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "bare.pth"
    torch.save({"module." + k: v.half() if v.is_floating_point() else v for k, v in state.items()}, path)
    model = load_model(path)
    weight = model.state_dict()["audio_encoder.0.conv_block.0.weight"]
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight, state["audio_encoder.0.conv_block.0.weight"], atol=1e-3, rtol=1e-3)


def test_checkpoint_without_step_counters_loads_every_tensor(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    """The model is built on the meta device and takes the checkpoint's tensors over: nothing may stay unloaded."""
    path = tmp_path / "no-counters.pth"
    torch.save(wrap_checkpoint({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}), path)
    model = load_model(path)
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    assert not [name for name, tensor in tensors.items() if tensor.is_meta or tensor.device.type != "cpu"]
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert int(loaded["audio_encoder.0.conv_block.1.num_batches_tracked"]) == 0


def test_loading_holds_the_weights_once(checkpoint: Path) -> None:
    """Peak memory while loading stays near one copy of the weights (no model copy beside the checkpoint's)."""
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's RSS (pytest's, here); VmHWM is this process's.
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from heygemd.engines.wav2lip import load_model\n"
        "def status(field):\n"
        "    return int(next(l for l in open('/proc/self/status') if l.startswith(field)).split()[1]) * 1024\n"
        "before = status('VmRSS:')\n"
        "model = load_model(Path(sys.argv[1]))\n"
        "weights = sum(t.nbytes for t in model.state_dict().values())\n"
        "print((status('VmHWM:') - before) / weights)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(checkpoint)], capture_output=True, text=True, check=True)
    assert float(result.stdout.strip()) < 1.6, result.stdout  # two copies at once (model + checkpoint) measured 2.2


def _refused(path: Path, *fragments: str) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    error = info.value
    assert error.code == "BAD_CHECKPOINT"
    assert str(path) in error.message
    for fragment in fragments:
        assert fragment in error.message
    return error


def test_text_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wav2lip.pth"
    path.write_text("404 Not Found: the download failed\n")
    _refused(path, "not a PyTorch checkpoint")


def test_missing_file_is_refused(tmp_path: Path) -> None:
    _refused(tmp_path / "absent.pth", "not found")


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_checkpoint_is_refused(tmp_path: Path, checkpoint: Path, keep: float) -> None:
    data = checkpoint.read_bytes()
    path = tmp_path / "partial.pth"
    path.write_bytes(data[: int(len(data) * keep)])
    _refused(path)


def test_truncated_legacy_checkpoint_is_refused(tmp_path: Path) -> None:
    full = tmp_path / "legacy.pth"
    torch.save({"state_dict": {"a": torch.ones(5000)}}, full, _use_new_zipfile_serialization=False)
    path = tmp_path / "legacy-partial.pth"
    path.write_bytes(full.read_bytes()[:8000])
    _refused(path, "truncated")


def test_checkpoint_without_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "optimizer-only.pth"
    torch.save({"optimizer": {"state": {}}, "global_step": 5}, path)
    _refused(path, "state_dict", "global_step")


def test_missing_key_is_refused(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    partial = {k: v for k, v in state.items() if k != "face_decoder_blocks.3.1.conv_block.0.weight"}
    path = tmp_path / "missing.pth"
    torch.save(wrap_checkpoint(partial, with_optimizer=False), path)
    _refused(path, "missing 1 key", "face_decoder_blocks.3.1.conv_block.0.weight")


def test_wrong_shape_is_refused(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    changed = dict(state)
    changed["audio_encoder.3.conv_block.0.weight"] = torch.zeros(64, 32, 5, 5)
    path = tmp_path / "shape.pth"
    torch.save(wrap_checkpoint(changed, with_optimizer=False), path)
    _refused(path, "audio_encoder.3.conv_block.0.weight", "expected (64, 32, 3, 3)", "found (64, 32, 5, 5)")


def test_unexpected_key_is_refused(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    extra = dict(state)
    extra["binary_pred.0.weight"] = torch.zeros(1, 512, 1, 1)
    path = tmp_path / "extra.pth"
    torch.save(wrap_checkpoint(extra, with_optimizer=False), path)
    _refused(path, "unexpected", "binary_pred.0.weight")


def test_non_finite_weights_are_refused(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    broken = dict(state)
    broken["output_block.1.bias"] = torch.tensor([0.0, float("nan"), 0.0])
    path = tmp_path / "nan.pth"
    torch.save(wrap_checkpoint(broken, with_optimizer=False), path)
    _refused(path, "NaN", "output_block.1.bias")


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "Wav2Lip-SD-GAN.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    _refused(path, "TorchScript")


# ---------------------------------------------------------------- engine


def test_folded_batch_norm_matches_the_unfolded_model(model: Wav2Lip) -> None:
    folded = fold_batch_norm(copy.deepcopy(model)).to(memory_format=torch.channels_last)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    audio, face = _inputs(4, seed=21)
    with torch.inference_mode():
        expected = model(audio, face)
        got = folded(audio, face.contiguous(memory_format=torch.channels_last))
    assert float(expected.std()) > 0.05  # a spread output: the comparison means something
    assert float((got - expected).abs().max()) <= 1e-5


def test_engine_output_matches_the_unfolded_model(engine: Wav2LipEngine, model: Wav2Lip) -> None:
    crops = _crops([(96, 96)] * 5, seed=22)
    mels = np.random.default_rng(23).uniform(-4, 1, (5, 80, 16)).astype(np.float32)
    out = engine.generate(FaceBatch(crops=crops, landmarks=[], mels=mels))
    with torch.inference_mode():
        pred = model(torch.from_numpy(mels[:, None]), torch.from_numpy(face_input(crops)))
    expected = np.rint(pred.numpy().transpose(0, 2, 3, 1) * 255)
    assert np.abs(np.stack(out).astype(int) - expected).max() <= 1


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 2), (3, 3), (4, 3), (8, 6), (16, 12)])
def test_cpu_threads_leave_a_quarter_of_the_cores_to_ffmpeg(cores, threads, monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert cpu_threads(0) == threads
    assert cpu_threads(3) == 3


def test_face_input_masks_the_lower_half_and_keeps_bgr() -> None:
    crop = np.zeros((96, 96, 3), dtype=np.uint8)
    crop[..., 0], crop[..., 1], crop[..., 2] = 10, 120, 250  # B, G, R
    crop[:, :, 1] = np.arange(96, dtype=np.uint8)[:, None] + 100  # green encodes the row
    big = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)  # 192x192: resized down to 96
    x = face_input([crop, big])
    assert x.shape == (2, 6, 96, 96) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 3:], crop.transpose(2, 0, 1) / 255.0, atol=1e-7)
    assert np.all(x[:, :3, 48:] == 0)
    np.testing.assert_array_equal(x[:, :3, :48], x[:, 3:, :48])
    assert x[1, 3, 0, 0] == pytest.approx(10 / 255) and x[1, 5, 0, 0] == pytest.approx(250 / 255)
    np.testing.assert_allclose(x[1, 4, :, 0], (np.arange(96) + 100) / 255.0, atol=1 / 255)


def test_engine_meets_the_protocol(engine: Wav2LipEngine, checkpoint: Path) -> None:
    assert isinstance(engine, Engine)
    assert engine.name == "wav2lip"
    assert engine.identity == "sha256:" + hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]
    assert engine.device == torch.device("cpu")
    assert engine.fp16 is False  # autocast is for CUDA only


def test_generate_returns_crops_of_the_original_sizes(engine: Wav2LipEngine, model: Wav2Lip) -> None:
    sizes = [(96, 96), (120, 100), (181, 163), (50, 50)]
    crops = _crops(sizes, seed=4)
    mels = np.random.default_rng(5).uniform(-4, 1, (len(crops), 80, 16)).astype(np.float32)
    batch = FaceBatch(crops=crops, landmarks=[np.zeros((68, 2), np.float32)] * len(crops), mels=mels)
    out = engine.generate(batch)
    assert [o.shape for o in out] == [(h, w, 3) for h, w in sizes]
    assert all(o.dtype == np.uint8 for o in out)
    # The 96x96 crop needs no resizing: it is the model's prediction as 8-bit BGR.
    with torch.inference_mode():
        pred = model(torch.from_numpy(mels[:1, None]), torch.from_numpy(face_input(crops[:1])))
    expected = np.rint(pred[0].numpy().transpose(1, 2, 0) * 255)
    assert np.abs(out[0].astype(int) - expected).max() <= 1


def test_sub_batches_give_the_same_output_as_one_batch(engine: Wav2LipEngine) -> None:
    crops = _crops([(100, 90)] * 3, seed=6)
    mels = np.random.default_rng(7).uniform(-4, 1, (3, 80, 16)).astype(np.float32)
    batch = FaceBatch(crops=crops, landmarks=[np.zeros((68, 2), np.float32)] * 3, mels=mels)
    whole = engine.generate(batch)  # one pass of 3 faces
    engine.batch_size = 2  # passes of 2 and 1
    try:
        pieces = engine.generate(batch)
    finally:
        engine.batch_size = 8
    for a, b in zip(whole, pieces, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # float summation order may move a rounding
    assert np.mean([np.mean(a != b) for a, b in zip(whole, pieces, strict=True)]) < 0.01
    # Different audio windows give different mouths: the sub-batches kept their own mels.
    assert not np.array_equal(whole[0], whole[1])


def test_empty_batch_and_mismatched_mels(engine: Wav2LipEngine) -> None:
    empty = FaceBatch(crops=[], landmarks=[], mels=np.zeros((0, 80, 16), np.float32))
    assert engine.generate(empty) == []
    crops = _crops([(96, 96)] * 2, seed=8)
    with pytest.raises(ValueError, match="mels"):
        engine.generate(FaceBatch(crops=crops, landmarks=[], mels=np.zeros((3, 80, 16), np.float32)))


def test_closed_engine_refuses_work(checkpoint: Path) -> None:
    closing = Wav2LipEngine(checkpoint, device="cpu", batch_size=2)
    closing.release()  # usable after release
    crops = _crops([(96, 96)], seed=9)
    batch = FaceBatch(crops=crops, landmarks=[], mels=np.zeros((1, 80, 16), np.float32))
    assert len(closing.generate(batch)) == 1
    closing.close()
    with pytest.raises(RuntimeError, match="close"):
        closing.generate(batch)


def test_engine_with_bad_checkpoint_raises_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "wav2lip_gan.pth"
    path.write_bytes(b"\x00" * 1000)
    with pytest.raises(CheckpointError):
        Wav2LipEngine(path, device="cpu")


@pytest.mark.parametrize("device", ["tpu", "cuda:x"])
def test_unknown_device_is_a_config_error(checkpoint: Path, device: str) -> None:
    with pytest.raises(ConfigError):
        Wav2LipEngine(checkpoint, device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_config_error(checkpoint: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Wav2LipEngine(checkpoint, device="cuda")
    assert "CUDA is not available" in info.value.message
    assert info.value.hint


def test_batch_size_must_be_positive(checkpoint: Path) -> None:
    with pytest.raises(ConfigError):
        Wav2LipEngine(checkpoint, device="cpu", batch_size=0)


# ---------------------------------------------------------------- CUDA only

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
def test_fp16_on_cuda_matches_cpu(checkpoint: Path, engine: Wav2LipEngine) -> None:
    crops = _crops([(120, 110)] * 6, seed=12)
    mels = np.random.default_rng(13).uniform(-4, 1, (6, 80, 16)).astype(np.float32)
    batch = FaceBatch(crops=crops, landmarks=[], mels=mels)
    gpu = Wav2LipEngine(checkpoint, device="auto", batch_size=4, fp16=True)
    try:
        assert gpu.device.type == "cuda" and gpu.fp16
        fast = gpu.generate(batch)
    finally:
        gpu.close()
    exact = engine.generate(batch)
    diffs = [np.abs(a.astype(int) - b.astype(int)) for a, b in zip(fast, exact, strict=True)]
    assert max(d.max() for d in diffs) <= 8
    assert np.mean([d.mean() for d in diffs]) < 1.0


@pytest.mark.gpu
@needs_cuda
def test_out_of_memory_halves_the_batch(checkpoint: Path) -> None:
    crops = _crops([(96, 96)] * 64, seed=14)
    mels = np.random.default_rng(15).uniform(-4, 1, (64, 80, 16)).astype(np.float32)
    batch = FaceBatch(crops=crops, landmarks=[], mels=mels)
    gpu = Wav2LipEngine(checkpoint, device="cuda", batch_size=64, fp16=False)
    try:
        expected = gpu.generate(batch)  # unconstrained: one batch of 64
        assert gpu.batch_size == 64
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        gpu.generate(FaceBatch(crops=crops[:4], landmarks=[], mels=mels[:4]))
        peak_for_4 = torch.cuda.max_memory_allocated()
        total = torch.cuda.get_device_properties(0).total_memory
        # Cap this process at roughly what 8 frames need: 64 at once must run out of memory.
        torch.cuda.set_per_process_memory_fraction(min(1.0, 2.0 * peak_for_4 / total))
        try:
            halved = gpu.generate(batch)
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
        assert 1 <= gpu.batch_size < 64
        for a, b in zip(expected, halved, strict=True):
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    finally:
        gpu.close()
