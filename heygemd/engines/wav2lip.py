"""The Wav2Lip generator (Prajwal et al., 2020), state-dict compatible with the published checkpoints.

The network is described by the layer tables below (one ``ConvSpec`` per conv -> BatchNorm -> ReLU unit), which
reproduce the reference ``models/wav2lip.py`` layer for layer, so the parameter names and shapes are those of
``wav2lip.pth`` / ``wav2lip_gan.pth``:

* face encoder: 7 blocks, 6x96x96 (masked + reference face) down to 512x1x1, every block's output kept;
* audio encoder: 1x80x16 mel window down to a 512x1x1 embedding;
* face decoder: 7 blocks from the audio embedding back up to 96x96; after each block the output is
  concatenated (channels) with the face-encoder output of the same size (U-Net skips, deepest first);
* output block: conv unit 80->32, a plain 1x1 conv 32->3 and a sigmoid: BGR in [0, 1].

``load_model`` validates a checkpoint file before using it; ``Wav2LipEngine`` runs the model on face crops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from heygemd.engines.cuda_batches import CopyStreams, fitting_batch_size
from heygemd.engines.model_files import listing
from heygemd.engines.torch_device import resolve_device
from heygemd.engines.torch_util import (
    HalvingBatches,
    cpu_threads,
    file_sha256,
    fold_batch_norm,
    read_state_dict,
)
from heygemd.errors import CheckpointError, ConfigError
from heygemd.pipeline.engine_contract import EngineNeeds, FaceBatch

IMG_SIZE = 96
"""Side of the square face image the model sees and returns."""
MEL_SHAPE = (80, 16)
"""(mel bands, mel columns) of one audio window."""
CPU_SUB_BATCH = 4
"""Faces per forward pass on the CPU, whatever ``engine.batch_size``, and so frames per render batch
(``run.batch_frames``): a forward pass peaks ~25 MiB + ~13 MiB per face above the weights (1 face: 40 MiB, 4: 90,
16: 250) and larger passes are no faster on a CPU (measured, one thread: 99 ms per face for passes of 4 and 8,
105 for 16, 117 for 1)."""


@dataclass(frozen=True)
class ConvSpec:
    """One conv unit: (transposed) convolution -> BatchNorm2d -> ReLU, optionally adding its input before the ReLU."""

    cin: int
    cout: int
    kernel: int
    stride: int | tuple[int, int]
    padding: int
    residual: bool = False
    transpose: bool = False
    output_padding: int = 0


def _down(cin: int, cout: int, stride: int | tuple[int, int] = 2, kernel: int = 3, padding: int = 1) -> ConvSpec:
    return ConvSpec(cin, cout, kernel, stride, padding)


def _same(channels: int) -> ConvSpec:
    """3x3, stride 1, padding 1, with the residual connection."""
    return ConvSpec(channels, channels, 3, 1, 1, residual=True)


def _up(cin: int, cout: int, stride: int = 2) -> ConvSpec:
    """3x3 transposed conv; stride 2 doubles the size (padding 1, output padding 1), stride 1 grows 1x1 to 3x3."""
    if stride == 1:
        return ConvSpec(cin, cout, 3, 1, 0, transpose=True)
    return ConvSpec(cin, cout, 3, 2, 1, transpose=True, output_padding=1)


FACE_ENCODER: tuple[tuple[ConvSpec, ...], ...] = (
    (ConvSpec(6, 16, 7, 1, 3),),  # 96x96
    (_down(16, 32), _same(32), _same(32)),  # 48x48
    (_down(32, 64), _same(64), _same(64), _same(64)),  # 24x24
    (_down(64, 128), _same(128), _same(128)),  # 12x12
    (_down(128, 256), _same(256), _same(256)),  # 6x6
    (_down(256, 512), _same(512)),  # 3x3
    (ConvSpec(512, 512, 3, 1, 0), ConvSpec(512, 512, 1, 1, 0)),  # 1x1
)
"""Face encoder blocks; block i's output is the skip connection for decoder block 6 - i."""

AUDIO_ENCODER: tuple[ConvSpec, ...] = (
    ConvSpec(1, 32, 3, 1, 1),
    _same(32),
    _same(32),  # 80x16
    _down(32, 64, stride=(3, 1)),
    _same(64),
    _same(64),  # 27x16
    _down(64, 128, stride=3),
    _same(128),
    _same(128),  # 9x6
    _down(128, 256, stride=(3, 2)),
    _same(256),  # 3x3
    ConvSpec(256, 512, 3, 1, 0),
    ConvSpec(512, 512, 1, 1, 0),  # 1x1
)
"""Audio encoder, one sequence: (1, 80, 16) -> (512, 1, 1)."""

FACE_DECODER: tuple[tuple[ConvSpec, ...], ...] = (
    (ConvSpec(512, 512, 1, 1, 0),),  # 1x1, then + encoder 6 -> 1024
    (_up(1024, 512, stride=1), _same(512)),  # 3x3, + encoder 5 -> 1024
    (_up(1024, 512), _same(512), _same(512)),  # 6x6, + encoder 4 -> 768
    (_up(768, 384), _same(384), _same(384)),  # 12x12, + encoder 3 -> 512
    (_up(512, 256), _same(256), _same(256)),  # 24x24, + encoder 2 -> 320
    (_up(320, 128), _same(128), _same(128)),  # 48x48, + encoder 1 -> 160
    (_up(160, 64), _same(64), _same(64)),  # 96x96, + encoder 0 -> 80
)
"""Face decoder blocks; each output is concatenated with the matching face-encoder output."""

OUTPUT_UNIT = ConvSpec(80, 32, 3, 1, 1)


class ConvUnit(nn.Module):
    """``conv_block`` = (ConvTranspose2d | Conv2d) + BatchNorm2d, then ReLU (after the residual add)."""

    def __init__(self, spec: ConvSpec):
        super().__init__()
        if spec.transpose:
            conv: nn.Module = nn.ConvTranspose2d(
                spec.cin, spec.cout, spec.kernel, spec.stride, spec.padding, spec.output_padding
            )
        else:
            conv = nn.Conv2d(spec.cin, spec.cout, spec.kernel, spec.stride, spec.padding)
        self.conv_block = nn.Sequential(conv, nn.BatchNorm2d(spec.cout))
        self.act = nn.ReLU()
        self.residual = spec.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


def _units(specs: tuple[ConvSpec, ...]) -> nn.Sequential:
    return nn.Sequential(*(ConvUnit(s) for s in specs))


class Wav2Lip(nn.Module):
    """The generator: ``forward(audio (B,1,80,16), face (B,6,96,96)) -> (B,3,96,96)`` in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(_units(block) for block in FACE_ENCODER)
        self.audio_encoder = _units(AUDIO_ENCODER)
        self.face_decoder_blocks = nn.ModuleList(_units(block) for block in FACE_DECODER)
        self.output_block = nn.Sequential(
            ConvUnit(OUTPUT_UNIT), nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0), nn.Sigmoid()
        )

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        if audio.dim() != 4 or tuple(audio.shape[1:]) != (1, *MEL_SHAPE):
            raise ValueError(f"audio must be (B, 1, 80, 16), got {tuple(audio.shape)}")
        if face.dim() != 4 or tuple(face.shape[1:]) != (6, IMG_SIZE, IMG_SIZE):
            raise ValueError(f"face must be (B, 6, 96, 96), got {tuple(face.shape)}")
        if audio.shape[0] != face.shape[0]:
            raise ValueError(f"batch sizes differ: audio {audio.shape[0]}, face {face.shape[0]}")
        skips: list[torch.Tensor] = []
        x = face
        for block in self.face_encoder_blocks:
            x = block(x)
            skips.append(x)
        x = self.audio_encoder(audio)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)
        return self.output_block(x)


# ---------------------------------------------------------------- checkpoint loading


def _validate(path: Path, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """CheckpointError for missing/unexpected keys, wrong shapes or non-finite weights."""
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"missing {len(missing)} key(s): {listing(missing)}", path=path)
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise CheckpointError(
            f"{len(unexpected)} unexpected key(s): {listing(unexpected)} (not a Wav2Lip generator checkpoint?)",
            path=path,
        )
    wrong = [
        f"{k}: expected {tuple(expected[k].shape)}, found {tuple(v.shape)}"
        for k, v in state.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if wrong:
        raise CheckpointError(f"wrong shape for {len(wrong)} tensor(s): {listing(wrong)}", path=path)
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"non-finite values (NaN/Inf) in {listing(broken)}", path=path)


def load_model(path: Path, device: str | torch.device = "cpu") -> Wav2Lip:
    """A Wav2Lip generator with the weights of checkpoint ``path``, on ``device``, in eval mode.

    Raises CheckpointError (naming the file) when the file is not a readable torch save, holds no state dict,
    or its keys/shapes are not those of the Wav2Lip generator; ConfigError for an unusable ``device``.
    """
    path = Path(path)
    target = resolve_device(device)
    # The model is built without memory (meta tensors) and takes the checkpoint's tensors over (assign=True): the
    # weights exist once while loading, not twice (a model's own copy + the checkpoint's, ~150 MiB more at peak).
    # For that the file is read, not memory-mapped: a mapping would stay resident as long as any tensor lives.
    with torch.device("meta"):
        model = Wav2Lip()
    expected = model.state_dict()
    state = read_state_dict(path, mmap=False)
    _validate(path, state, expected)
    for key, value in expected.items():
        if key not in state:  # only BatchNorm step counters may be absent (unused in eval mode)
            state[key] = torch.zeros((), dtype=value.dtype)
        elif state[key].dtype != value.dtype:  # e.g. a half-precision save: the model computes in float32
            state[key] = state[key].to(value.dtype)
    model.load_state_dict(state, strict=True, assign=True)
    del state
    return model.to(target).eval()


# ---------------------------------------------------------------- the engine


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """cv2.resize with INTER_AREA when shrinking and INTER_LINEAR when enlarging."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    interpolation = cv2.INTER_AREA if width * height < w * h else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def face_input(crops: list[np.ndarray]) -> np.ndarray:
    """float32 (B, 6, 96, 96) model input: each crop resized to 96x96, BGR / 255, channels 0-2 the crop with
    rows 48: (the lower half, where the mouth is) zeroed, channels 3-5 the unmasked crop."""
    out = np.empty((len(crops), IMG_SIZE, IMG_SIZE, 6), dtype=np.float32)
    face_input_into(crops, out)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def face_input_into(crops: list[np.ndarray], out: np.ndarray) -> None:
    """``face_input`` written channels-last into ``out[:len(crops)]``, a float32 (>=B, 96, 96, 6) buffer: viewed as
    (B, 6, 96, 96) it is the model's input in channels-last memory, with no copy."""
    half = IMG_SIZE // 2
    for i, crop in enumerate(crops):
        if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8 or min(crop.shape[:2]) < 1:
            raise ValueError(f"crop {i} must be a non-empty (h, w, 3) uint8 BGR image, got {crop.shape} {crop.dtype}")
        face = out[i, :, :, 3:]
        np.divide(_resize(crop, IMG_SIZE, IMG_SIZE), np.float32(255.0), out=face)
        out[i, :half, :, :3] = face[:half]
        out[i, half:, :, :3] = 0.0


class Wav2LipEngine:
    """The Wav2Lip engine (``heygemd.pipeline.engine_contract.Engine``): the model stays loaded until ``close()``.

    At load the batch norms are folded into the convolutions (``torch_util.fold_batch_norm``) and the weights put
    in channels-last memory; the model's input and output buffers are kept between batches (regrown only for a
    larger batch). On the CPU, torch uses ``threads`` intra-op threads (0: ``torch_util.cpu_threads``, leaving
    room for ffmpeg). ``torch_compile`` wraps the model in ``torch.compile`` (opt-in: the first batches are slow while
    it compiles, and it needs a C++ compiler on the CPU).

    ``batch_size`` is the current sub-batch size; on CUDA it starts at the largest that fits in the free GPU
    memory (``cuda_batches.fitting_batch_size``, at most the configured one), the copies to and from the GPU
    overlap the compute of the neighbouring sub-batches (``cuda_batches.CopyStreams``), and on out-of-memory the
    size is halved (down to 1) and stays halved for the rest of the engine's life.
    """

    name = "wav2lip"
    needs = EngineNeeds()

    def __init__(
        self,
        checkpoint: Path,
        device: str = "auto",
        batch_size: int = 64,
        fp16: bool = True,
        threads: int = 0,
        torch_compile: bool = False,
    ):
        if batch_size < 1:
            raise ConfigError(f"engine.batch_size must be at least 1, got {batch_size}")
        if threads < 0:
            raise ConfigError(f"engine.cpu_threads must be 0 (automatic) or more, got {threads}")
        self.checkpoint = Path(checkpoint)
        self.device: torch.device = resolve_device(device)
        size = batch_size if self.device.type != "cpu" else min(batch_size, CPU_SUB_BATCH)
        self._batches = HalvingBatches(size, device=self.device, what="a single 96x96 face", path=self.checkpoint)
        self.fp16 = bool(fp16) and self.device.type == "cuda"
        if self.device.type == "cpu":
            torch.set_num_threads(cpu_threads(threads))
        model = fold_batch_norm(load_model(self.checkpoint, self.device))
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing in the stubs
        self._model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = (
            torch.compile(model) if torch_compile else model
        )
        self.identity = "sha256:" + file_sha256(self.checkpoint)[:12]
        self._faces = np.empty((0, IMG_SIZE, IMG_SIZE, 6), dtype=np.float32)
        self._audio = np.empty((0, 1, *MEL_SHAPE), dtype=np.float32)
        self._mouths = np.empty((0, IMG_SIZE, IMG_SIZE, 3), dtype=np.uint8)
        self._streams = CopyStreams(self.device) if self.device.type == "cuda" else None
        if self.device.type == "cuda":
            self._batches.size = fitting_batch_size(self._probe, self.device, self._batches.size)

    @property
    def batch_size(self) -> int:
        return self._batches.size

    @batch_size.setter
    def batch_size(self, size: int) -> None:
        self._batches.size = size

    def prepare(self, mel: np.ndarray) -> None:
        """Wav2Lip reads each frame's mel window as the reference does; nothing to adapt per recording."""

    def _buffers(self, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The input (faces channels-last, audio) and output buffers, at least ``count`` long."""
        if len(self._faces) < count:
            pinned = self.device.type == "cuda"  # page-locked host memory: the copies to the GPU can be asynchronous

            def empty(shape: tuple[int, ...], dtype: torch.dtype) -> np.ndarray:
                return torch.empty(shape, dtype=dtype, pin_memory=pinned).numpy()

            self._faces = empty((count, IMG_SIZE, IMG_SIZE, 6), torch.float32)
            self._audio = empty((count, 1, *MEL_SHAPE), torch.float32)
            self._mouths = empty((count, IMG_SIZE, IMG_SIZE, 3), torch.uint8)
        return self._faces, self._audio, self._mouths

    def generate(self, batch: FaceBatch) -> list[np.ndarray]:
        """Mouth-synced crops (uint8 BGR, each the size of its input crop), one per crop of ``batch``."""
        model = self._model
        if model is None:
            raise RuntimeError("Wav2LipEngine.generate called after close()")
        count = len(batch)
        mels = np.asarray(batch.mels, dtype=np.float32)
        if mels.shape != (count, *MEL_SHAPE):
            raise ValueError(f"mels must be ({count}, 80, 16) for {count} crops, got {mels.shape}")
        if count == 0:
            return []
        faces, audio, mouths = self._buffers(count)
        face_input_into(batch.crops, faces)
        audio[:count, 0] = mels

        def infer(start: int, stop: int) -> None:
            self._infer(model, audio[start:stop], faces[start:stop], mouths[start:stop])

        try:
            self._batches.run(count, infer)
        finally:
            if self._streams is not None:
                self._streams.wait()  # the downloads have landed (and the uploads are done with the inputs)
        return [_resize(mouths[i], crop.shape[1], crop.shape[0]) for i, crop in enumerate(batch.crops)]

    def _probe(self, count: int) -> None:
        """One inference on ``count`` blank faces (the batch-size measurement at load)."""
        model = self._model
        if model is None:
            raise RuntimeError("Wav2LipEngine used after close()")
        faces, audio, mouths = self._buffers(count)
        faces[:count] = 0.0
        audio[:count] = 0.0
        try:
            self._infer(model, audio[:count], faces[:count], mouths[:count])
        finally:
            if self._streams is not None:
                self._streams.wait()

    def _infer(
        self,
        model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        audio: np.ndarray,
        faces: np.ndarray,
        out: np.ndarray,
    ) -> None:
        """Predict one sub-batch into ``out``, (n, 96, 96, 3) uint8 BGR; ``faces`` is channels-last (n, 96, 96, 6)."""
        streams = self._streams
        with (
            torch.inference_mode(),
            torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.fp16),
        ):
            audio_h = torch.from_numpy(audio)
            faces_h = torch.from_numpy(faces).permute(0, 3, 1, 2)
            if streams is not None:  # CUDA: uploads, compute and downloads of successive sub-batches overlap
                audio_t, faces_t = streams.to_device(audio_h, faces_h)
            else:
                audio_t, faces_t = audio_h.to(self.device), faces_h.to(self.device)
            pred = model(audio_t, faces_t)
            pixels = (pred.float().clamp_(0.0, 1.0) * 255.0).round_().to(torch.uint8).permute(0, 2, 3, 1)
            if streams is not None:
                streams.to_host(pixels.contiguous(), torch.from_numpy(out))
            else:
                torch.from_numpy(out).copy_(pixels)

    def release(self) -> None:
        """Return cached GPU memory to the driver between jobs; the model stays loaded."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def close(self) -> None:
        """Drop the model (and its GPU memory); the engine is unusable afterwards."""
        self._model = None
        self.release()
