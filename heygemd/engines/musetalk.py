"""The MuseTalk 1.5 engine (TMElyralab/MuseTalk, commit 0a89dec): single-step latent inpainting of a 256x256
face crop, conditioned on Whisper-tiny features.

For each crop: the VAE encodes the crop with its lower half blacked out and the whole crop (RGB,
Normalize(0.5, 0.5), latent **mean** times the scaling factor: deterministic, as MuseTalk's training code does;
the reference inference draws an unseeded sample); the two latents, masked first, make the UNet's 8 input
channels; the UNet runs once at timestep 0 with the frame's 50 audio tokens plus the sinusoidal positional
encoding as ``encoder_hidden_states``; its output is the latent of the new face, decoded by the VAE.

Public contract (scripts outside the package use it):

* ``audio_prompts(wav, whisper_dir, fps) -> (N, 50, 384)``: the reference ``get_audio_feature`` +
  ``get_whisper_chunk`` for its first ``floor(seconds * fps)`` frames (before the PE), at the true ``fps``;
* ``load_model(folder, device) -> MuseTalkModel`` with ``generate_crops(crops, prompts)``: uint8 BGR
  (B, 256, 256, 3) crops and float32 (B, 50, 384) prompts to uint8 BGR (B, 256, 256, 3).

``MuseTalkEngine`` is the ``Engine``: fp16 on CUDA, batches that halve on out-of-memory, the presenter's latents
prepared once per video (``prepare_presenter``) so a new audio only runs Whisper, the UNet and the decoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

from heygemd.engines import musetalk_layout
from heygemd.engines.cuda_batches import fitting_batch_size
from heygemd.engines.musetalk_audio import TOKENS, WhisperFeatures, audio_prompts_with, positional_encoding
from heygemd.engines.musetalk_load import (
    LATENT_CHANNELS,
    PROMPT_WIDTH,
    load_unet,
    load_vae,
    load_whisper,
)
from heygemd.engines.torch_device import compute_dtype, resolve_device
from heygemd.engines.torch_util import HalvingBatches, files_sha256
from heygemd.errors import ConfigError
from heygemd.pipeline.engine_contract import EngineNeeds, FaceBatch

__all__ = ["CROP_SIZE", "MuseTalkEngine", "MuseTalkModel", "audio_prompts", "load_model"]

CROP_SIZE = 256
"""Side of the square face crop the model sees and returns."""
LATENT_SIZE = CROP_SIZE // 8
CPU_SUB_BATCH = 4
"""Faces per VAE/UNet pass on the CPU, whatever ``engine.batch_size``, and so frames per render batch
(``run.batch_frames``), as Wav2Lip's: the presenter's preparation encodes two 256x256 images per face at once, so
the 64 faces of the default batch peaked at 1.9 GB even with the tests' tiny model (its activations grow with the
batch, not the weights). Passes of 4 are no slower on a CPU and give the pixels of larger passes but for float
rounding, as any other batch size does (at most 1 level, in ~0.002 % of the pixels)."""


def audio_prompts(wav: np.ndarray, whisper_dir: Path, fps: float) -> np.ndarray:
    """float32 (floor(len(wav) / 16000 * fps), 50, 384): MuseTalk's audio prompts of 16 kHz mono ``wav``.

    ``whisper_dir`` is ``models/musetalk/whisper/``; CheckpointError when its files are missing or broken.
    """
    encoder, extractor = load_whisper(Path(whisper_dir))
    return audio_prompts_with(wav, encoder, extractor, fps)


class MuseTalkModel:
    """The three models on one device and dtype: Whisper's encoder, the VAE and the UNet."""

    def __init__(self, folder: Path, device: str | torch.device = "cpu", fp16: bool = False):
        self.folder = Path(folder)
        self.files = musetalk_layout.find_files(self.folder).require()
        self.device = resolve_device(device)
        self.dtype = compute_dtype(self.device, fp16)
        self.unet: UNet2DConditionModel = _placed(load_unet(self.files), self.device, self.dtype)
        self.vae: AutoencoderKL = _placed(load_vae(self.files), self.device, self.dtype)
        encoder, self.extractor = load_whisper(self.files["whisper"].parent)
        self.encoder = _placed(encoder, self.device, self.dtype)
        self.scaling = float(self.vae.config["scaling_factor"])  # a FrozenDict, typed as a plain dict
        self.pe = positional_encoding().to(self.device, self.dtype)  # same dtype as the prompts: no promotion
        self.timestep = torch.tensor([0], device=self.device)

    def encode_audio(self, wav: np.ndarray) -> WhisperFeatures:
        return WhisperFeatures(wav, self.encoder, self.extractor, self.device, self.dtype)

    def encode_latents(self, crops: np.ndarray) -> np.ndarray:
        """float32 (B, 8, 32, 32): masked-crop latents (channels 0-3) then whole-crop latents (4-7)."""
        pixels = _check_crops(crops)
        with torch.inference_mode():
            rgb = torch.from_numpy(np.ascontiguousarray(pixels[..., ::-1])).to(self.device)
            x = rgb.permute(0, 3, 1, 2).float() / 255.0
            masked = x.clone()
            masked[:, :, CROP_SIZE // 2 :, :] = 0.0  # before Normalize: the lower half becomes -1 (black)
            both = torch.cat([masked, x], dim=0)
            both = ((both - 0.5) / 0.5).to(self.dtype)
            mean = self.vae.encode(both).latent_dist.mean * self.scaling
            count = len(pixels)
            latents = torch.cat([mean[:count], mean[count:]], dim=1)
            return latents.float().cpu().numpy()

    def generate_from_latents(self, latents: np.ndarray, prompts: np.ndarray) -> np.ndarray:
        """uint8 BGR (B, 256, 256, 3) faces for (B, 8, 32, 32) latents and (B, 50, 384) prompts."""
        count = len(latents)
        if latents.shape != (count, 2 * LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE):
            raise ValueError(f"latents must be ({count}, 8, 32, 32), got {latents.shape}")
        if prompts.shape != (count, TOKENS, PROMPT_WIDTH):
            raise ValueError(f"prompts must be ({count}, 50, 384), got {prompts.shape}")
        with torch.inference_mode():
            lat = torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32)).to(self.device, self.dtype)
            tokens = torch.from_numpy(np.ascontiguousarray(prompts, dtype=np.float32)).to(self.device, self.dtype)
            predicted = self.unet(lat, self.timestep, encoder_hidden_states=tokens + self.pe).sample
            image = self.vae.decode((predicted / self.scaling).to(self.dtype)).sample
            image = (image.float() / 2 + 0.5).clamp(0, 1)
            pixels = (image.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy()
        return np.ascontiguousarray(pixels[..., ::-1])

    def generate_crops(self, crops: np.ndarray, prompts: np.ndarray) -> np.ndarray:
        """uint8 BGR (B, 256, 256, 3) lip-synced faces for uint8 BGR crops and float32 (B, 50, 384) prompts."""
        return self.generate_from_latents(self.encode_latents(crops), np.asarray(prompts, dtype=np.float32))

    def identity(self) -> str:
        """sha256 prefix of the three weight files (UNet, VAE, Whisper), for status.json."""
        return "sha256:" + files_sha256(self.files.weights)[:12]

    def close(self) -> None:
        for name in ("unet", "vae", "encoder", "pe"):
            if hasattr(self, name):
                delattr(self, name)


M = TypeVar("M", bound=torch.nn.Module)


def _placed(model: M, device: torch.device, dtype: torch.dtype) -> M:
    """``model`` on ``device``, cast to ``dtype`` only when that is not fp32 (fp16 on CUDA)."""
    model = model.to(device)
    return model.half() if dtype == torch.float16 else model


def _check_crops(crops: np.ndarray) -> np.ndarray:
    pixels = np.asarray(crops)
    if pixels.ndim != 4 or pixels.shape[1:] != (CROP_SIZE, CROP_SIZE, 3) or pixels.dtype != np.uint8:
        raise ValueError(f"crops must be uint8 (B, 256, 256, 3) BGR, got {pixels.shape} {pixels.dtype}")
    return pixels


def load_model(folder: Path, device: str | torch.device = "cpu", fp16: bool = False) -> MuseTalkModel:
    """MuseTalk 1.5 from ``folder`` (``models/musetalk/``), fp32 unless ``fp16`` on CUDA.

    Raises CheckpointError naming the file when one is missing, truncated, or does not match its config.
    """
    return MuseTalkModel(folder, device, fp16)


def to_model_size(crop: np.ndarray) -> np.ndarray:
    """A face crop stretched to 256x256 as the reference does (LANCZOS4)."""
    if crop.shape[:2] == (CROP_SIZE, CROP_SIZE):
        return crop
    return cv2.resize(crop, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LANCZOS4)


class MuseTalkEngine:
    """The MuseTalk engine (``Engine``, ``PromptEngine``, ``PresenterEngine``); the model stays loaded until
    ``close()``. On CUDA ``batch_size`` starts at the largest that fits in the free GPU memory (at most the
    configured one, ``cuda_batches.fitting_batch_size``), and halves on out-of-memory and stays halved; on the CPU
    it is at most ``CPU_SUB_BATCH``."""

    name = "musetalk"
    needs = EngineNeeds(audio="whisper", crop="musetalk_v15", colour_match=True, presenter_prep=True)

    def __init__(self, folder: Path, device: str = "auto", batch_size: int = 16, fp16: bool = True):
        if batch_size < 1:
            raise ConfigError(f"engine.batch_size must be at least 1, got {batch_size}")
        self.folder = Path(folder)
        self._model: MuseTalkModel | None = load_model(self.folder, device, fp16)
        self.device = self._model.device
        self.identity = self._model.identity()
        self.prep_version = f"musetalk-v15-{self.identity}-{str(self._model.dtype).removeprefix('torch.')}"
        size = batch_size if self.device.type != "cpu" else min(batch_size, CPU_SUB_BATCH)
        self._batches = HalvingBatches(
            size, device=self.device, what="a single 256x256 face", path=self._model.files["unet"]
        )
        self._batches.size = fitting_batch_size(self._probe, self.device, size)
        self.encoder_calls = 0
        """Crops VAE-encoded so far (a reused presenter's cached preparation adds none)."""

    @property
    def model(self) -> MuseTalkModel:
        if self._model is None:
            raise RuntimeError("MuseTalkEngine used after close()")
        return self._model

    @property
    def batch_size(self) -> int:
        return self._batches.size

    @batch_size.setter
    def batch_size(self, size: int) -> None:
        self._batches.size = size

    def _probe(self, count: int) -> None:
        """One UNet + VAE-decoder pass on ``count`` blank latents (the batch-size measurement at load)."""
        latents = np.zeros((count, *self.prep_shape()), dtype=np.float32)
        self.model.generate_from_latents(latents, np.zeros((count, TOKENS, PROMPT_WIDTH), dtype=np.float32))

    def prepare(self, mel: np.ndarray) -> None:
        """MuseTalk reads each frame's Whisper window; nothing to adapt per recording."""

    def encode_audio(self, wav: np.ndarray) -> WhisperFeatures:
        return self.model.encode_audio(wav)

    def prep_shape(self) -> tuple[int, ...]:
        return (2 * LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE)

    def prepare_presenter(self, crops: list[np.ndarray]) -> np.ndarray:
        """float32 (B, 8, 32, 32) latents of face crops (any size; stretched to 256x256)."""
        if crops:
            faces = np.stack([to_model_size(c) for c in crops])
        else:
            faces = np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)
        latents = np.empty((len(faces), *self.prep_shape()), dtype=np.float32)

        def infer(start: int, stop: int) -> None:
            latents[start:stop] = self.model.encode_latents(faces[start:stop])

        self._batches.run(len(faces), infer)
        self.encoder_calls += len(faces)
        return latents

    def generate(self, batch: FaceBatch) -> list[np.ndarray]:
        """Lip-synced crops (uint8 BGR, each the size of its input crop), one per crop of ``batch``."""
        count = len(batch)
        if batch.prompts is None or len(batch.prompts) != count:
            raise ValueError("MuseTalk needs one (50, 384) prompt per crop in FaceBatch.prompts")
        if count == 0:
            return []
        latents = batch.prepared if batch.prepared is not None else self.prepare_presenter(batch.crops)
        prompts = np.asarray(batch.prompts, dtype=np.float32)
        faces = np.empty((count, CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8)

        def infer(start: int, stop: int) -> None:
            faces[start:stop] = self.model.generate_from_latents(np.asarray(latents[start:stop]), prompts[start:stop])

        self._batches.run(count, infer)
        return [
            cv2.resize(faces[i], (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR)
            for i, crop in enumerate(batch.crops)
        ]

    def release(self) -> None:
        """Return cached GPU memory to the driver between jobs; the model stays loaded."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def close(self) -> None:
        """Drop the models (and their GPU memory); the engine is unusable afterwards."""
        if self._model is not None:
            self._model.close()
        self._model = None
        self.release()
