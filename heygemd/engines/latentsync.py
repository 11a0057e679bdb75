"""LatentSync 1.6 (ByteDance, github.com/bytedance/LatentSync, code Apache-2.0): audio-conditioned latent
diffusion over a 512x512 aligned face, 16-frame windows with temporal layers.

Per window of up to ``num_frames`` (16) aligned faces, as the reference's ``LipsyncPipeline`` computes it:

1. the faces in RGB, ``x / 255`` normalised to [-1, 1]; the masked faces are those times LatentSync's
   ``mask.png`` (LANCZOS4-resized to the crop, white = keep), so the redrawn lower face becomes 0 (mid grey);
2. VAE latents of the masked and of the whole faces times 0.18215, the posterior **mean** (the reference draws
   an unseeded sample: the mean makes a render reproducible); the mask, nearest-resized to the latents, is one
   more channel;
3. DDIM (the reference's scheduler config, eta 0) from one noise tensor shared by every frame, the UNet fed
   [noisy latents 4 | mask 1 | masked-face latents 4 | face latents 4] and the frames' audio tokens; with
   ``guidance_scale > 1`` classifier-free guidance, all-zero audio as the unconditional branch;
4. the latents decoded, the pixels outside the mask's hole put back from the input face, converted to uint8 by
   truncation (``(x / 2 + 0.5).clamp(0, 1) * 255``).

Public contract (scripts outside the package use it):

* ``audio_features(wav, whisper_path, fps) -> float32 (N, 50, 384)``: the reference's ``audio2feat`` +
  ``feature2chunks`` at ``fps`` (``latentsync_audio``);
* ``load_model(folder, device) -> LatentSyncModel`` with ``unet_forward(sample, timestep, audio)`` (one UNet call)
  and ``generate(crops, audio, noise, num_steps, guidance_scale)`` (uint8 BGR faces);
* ``initial_noise(seed, resolution)``: the shared noise of a render, from a seed.

fp16 on CUDA where the reference uses it (compute capability 8 and newer), fp32 elsewhere.

``LatentSyncEngine`` is the ``Engine`` (``PromptEngine``, ``PresenterEngine``): the faces aligned by
``pipeline.align`` (crop rule ``latentsync_affine``), 16-frame windows (``EngineNeeds.window``) batched on CUDA (as
many as fit in the free GPU memory at load) and halved on out-of-memory, the presenter's latents (masked and whole
faces) prepared once per video and cached, so a new audio runs only Whisper, the UNet and the decoder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from heygemd.engines import latentsync_layout
from heygemd.engines.cuda_batches import PeakGauge, fitting_batch_size
from heygemd.engines.latentsync_audio import TOKENS, WIDTH, WhisperStates, audio_features_with
from heygemd.engines.latentsync_load import (
    LATENT_CHANNELS,
    UNET_IN_CHANNELS,
    VAE_SCALING,
    load_config,
    load_mask,
    load_unet,
    load_vae,
    load_whisper,
    make_scheduler,
)
from heygemd.engines.latentsync_unet import FeatureCache
from heygemd.engines.torch_device import compute_dtype, resolve_device
from heygemd.engines.torch_util import HalvingBatches, files_sha256
from heygemd.errors import ConfigError, SilentAudio
from heygemd.pipeline.engine_contract import EngineNeeds, FaceBatch

__all__ = ["LatentSyncEngine", "LatentSyncModel", "Sampling", "audio_features", "initial_noise", "load_model"]

DEEPCACHE_INTERVAL = 3
"""With ``deepcache``, steps 0, 3, 6, ... of a window run the whole UNet, the others reuse their deep features
(the reference's ``DeepCacheSDHelper.set_params(cache_interval=3, cache_branch_id=0)``)."""
CPU_VAE_FRAMES = 4
"""Faces per VAE encoder/decoder pass on the CPU (a 512x512 face holds ~130 MB per activation there); on CUDA a
pass takes a window's frames (16: ~1 GB per activation in fp16). The VAE treats each face alone, so the passes
change no result."""


def audio_features(wav: np.ndarray, whisper_path: Path, fps: float) -> np.ndarray:
    """float32 (N, 50, 384): the reference's audio windows of 16 kHz mono ``wav`` at ``fps`` (N frames, about
    two more than the audio lasts, as the reference makes them), from ``models/latentsync/whisper/tiny.pt``.

    CheckpointError when the file is missing or broken; ValueError for audio shorter than 20 ms."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    encoder = load_whisper(Path(whisper_path))
    return audio_features_with(wav, encoder, fps, torch.device("cpu"), torch.float32)


def initial_noise(seed: int, resolution: int) -> np.ndarray:
    """float32 (4, resolution / 8, resolution / 8) standard normal noise from ``seed`` (a CPU generator, so the
    same on every device; the reference draws it on the GPU)."""
    generator = torch.Generator().manual_seed(seed)
    side = resolution // 8
    return torch.randn((LATENT_CHANNELS, side, side), generator=generator).numpy()


class LatentSyncModel:
    """Whisper's encoder, the VAE and the UNet on one device; the mask and the configs."""

    def __init__(self, folder: Path, device: str | torch.device = "cpu", fp16: bool = True, batch_windows: int = 1):
        self.folder = Path(folder)
        self.files = latentsync_layout.find_files(self.folder).require()
        self.config = load_config(self.files)
        self.device = resolve_device(device)
        self.dtype = compute_dtype(self.device, fp16, min_capability=8)  # fp16 where the reference runs it: Ampere+
        self.mask_image = load_mask(self.files["mask"])
        self.encoder = load_whisper(self.files["whisper"]).to(self.device)
        self.vae = _placed(load_vae(self.files), self.device, self.dtype)
        self.unet = load_unet(self.files, self.config, self.device, self.dtype)
        self._masks: dict[int, torch.Tensor] = {}
        self._batches = HalvingBatches(
            batch_windows,
            device=self.device,
            what=f"a single {self.config.num_frames}-frame window",
            path=self.files["unet"],
        )

    @property
    def batch_windows(self) -> int:
        """Windows per UNet batch now (halved on CUDA out-of-memory)."""
        return self._batches.size

    @batch_windows.setter
    def batch_windows(self, windows: int) -> None:
        self._batches.size = max(1, windows)

    def fit_batch_windows(self, guidance_scale: float, deepcache: bool, gauge: PeakGauge | None = None) -> int:
        """On CUDA, ``batch_windows`` becomes the most windows (at most the current number) that fit in the free
        GPU memory, from the peaks of one and of two blank windows denoised at one step with ``guidance_scale``
        (guidance doubles the UNet's batch) (``cuda_batches.fitting_batch_size``; ``gauge`` reads the memory);
        elsewhere it stays. Out-of-memory halving stays behind it. A probe that runs out of memory leaves one window
        per batch (the model loads; the renders halve no further). Returns the new ``batch_windows``."""
        try:
            self._batches.size = fitting_batch_size(
                lambda windows: self._probe(windows, guidance_scale, deepcache),
                self.device,
                self._batches.size,
                probes=(1, 2),
                gauge=gauge,
            )
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            self._batches.size = 1
        return self._batches.size

    def _probe(self, windows: int, guidance_scale: float, deepcache: bool) -> None:
        """``windows`` blank full windows through the denoising, decoding and paste-back at one step."""
        frames, side = windows * self.num_frames, self.resolution
        crops = np.zeros((frames, side, side, 3), np.uint8)
        latents = np.zeros((frames, 2 * LATENT_CHANNELS, side // 8, side // 8), np.float32)
        audio = np.zeros((frames, TOKENS, WIDTH), np.float32)
        noise = np.zeros((LATENT_CHANNELS, side // 8, side // 8), np.float32)
        self._windows(crops, latents, audio, noise, windows, 1, guidance_scale, deepcache)

    @property
    def resolution(self) -> int:
        """Side of the aligned face crops the model was trained on (512 for 1.6)."""
        return self.config.resolution

    @property
    def num_frames(self) -> int:
        """Frames per window (16): the temporal layers see them together."""
        return self.config.num_frames

    # ------------------------------------------------------------------ audio

    def encode_audio(self, wav: np.ndarray) -> WhisperStates:
        """The encoder states of a whole 16 kHz mono recording, windowed per frame by ``windows(fps, a, b)``."""
        return WhisperStates(wav, self.encoder, self.device, self.dtype)

    # ------------------------------------------------------------------ one UNet call

    def unet_forward(self, sample: np.ndarray, timestep: int, audio: np.ndarray) -> np.ndarray:
        """float32 (B, 4, F, h, w) predicted noise for ``sample`` (B, 13, F, h, w) = [noisy latents 4 | mask 1 |
        masked-face latents 4 | face latents 4] at ``timestep``, with ``audio`` (B * F, 50, 384) sample-major."""
        x = torch.as_tensor(np.asarray(sample, dtype=np.float32))
        tokens = torch.as_tensor(np.asarray(audio, dtype=np.float32))
        if x.ndim != 5 or x.shape[1] != UNET_IN_CHANNELS:
            raise ValueError(f"sample must be (B, 13, F, h, w), got {tuple(x.shape)}")
        if tuple(tokens.shape) != (x.shape[0] * x.shape[2], TOKENS, WIDTH):
            raise ValueError(f"audio must be ({x.shape[0] * x.shape[2]}, 50, 384), got {tuple(tokens.shape)}")
        with torch.inference_mode():
            return self._unet(x.to(self.device), int(timestep), tokens.to(self.device)).cpu().numpy()

    def _unet(
        self,
        sample: torch.Tensor,
        timestep: int,
        audio: torch.Tensor,
        cache: FeatureCache | None = None,
        reuse: bool = False,
    ) -> torch.Tensor:
        t = torch.tensor([timestep], dtype=torch.int64, device=self.device)
        return self.unet(sample.to(self.dtype), t, audio.to(self.dtype), cache, reuse).float()

    # ------------------------------------------------------------------ faces

    def _mask(self, size: int) -> torch.Tensor:
        """float64 (3, size, size) on the device: mask.png LANCZOS4-resized as uint8, / 255 (the reference's
        ``load_fixed_mask``)."""
        if size not in self._masks:
            resized = cv2.resize(self.mask_image, (size, size), interpolation=cv2.INTER_LANCZOS4) / 255.0
            self._masks[size] = torch.from_numpy(resized).permute(2, 0, 1).contiguous().to(self.device)
        return self._masks[size]

    def _pixels(self, crops: np.ndarray) -> torch.Tensor:
        """float32 (F, 3, R, R) RGB in [-1, 1] on the device, from uint8 BGR (F, R, R, 3) crops."""
        rgb = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1])).to(self.device)
        return (rgb.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5

    def _vae_passes(self, count: int) -> list[tuple[int, int]]:
        size = CPU_VAE_FRAMES if self.device.type == "cpu" else self.num_frames
        return [(a, min(a + size, count)) for a in range(0, count, size)]

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        means = [self.vae.encode(images[a:b].to(self.dtype)).latent_dist.mean for a, b in self._vae_passes(len(images))]
        return torch.cat(means).float() * VAE_SCALING

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, 4, h, w) scaled latents -> (N, 3, R, R) float32 pixels in about [-1, 1]."""
        latents = latents / VAE_SCALING
        images = [self.vae.decode(latents[a:b].to(self.dtype)).sample for a, b in self._vae_passes(len(latents))]
        return torch.cat(images).float()

    def encode_faces(self, crops: np.ndarray) -> np.ndarray:
        """float32 (F, 8, R/8, R/8): latents of the masked faces (channels 0-3) and of the whole faces (4-7) of
        uint8 BGR (F, R, R, 3) aligned crops."""
        pixels = _check_crops(crops)
        with torch.inference_mode():
            faces = self._pixels(pixels)
            masked = faces.double() * self._mask(pixels.shape[1])
            latents = torch.cat([self._encode(masked), self._encode(faces)], dim=1)
            return latents.cpu().numpy()

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        crops: np.ndarray,
        audio: np.ndarray,
        noise: np.ndarray,
        num_steps: int,
        guidance_scale: float,
        *,
        deepcache: bool = False,
    ) -> np.ndarray:
        """uint8 BGR (F, R, R, 3) lip-synced faces for uint8 BGR (F, R, R, 3) aligned crops (R: ``resolution``),
        their float32 (F, 50, 384) audio tokens and the (4, R/8, R/8) noise every frame starts from.

        ``deepcache``: 2 of every 3 steps reuse the deep features of the step before them (``FeatureCache``), as
        the reference's command line and Gradio app run it; faster, and not the same pixels as without."""
        latents = self.encode_faces(crops)
        return self.generate_from_latents(crops, latents, audio, noise, num_steps, guidance_scale, deepcache=deepcache)

    def generate_from_latents(
        self,
        crops: np.ndarray,
        latents: np.ndarray,
        audio: np.ndarray,
        noise: np.ndarray,
        num_steps: int,
        guidance_scale: float,
        *,
        deepcache: bool = False,
    ) -> np.ndarray:
        """``generate`` with the crops' ``encode_faces`` latents already made (a presenter's cached preparation)."""
        pixels = _check_crops(crops)
        count, size = len(pixels), pixels.shape[1]
        side = size // 8
        if latents.shape != (count, 2 * LATENT_CHANNELS, side, side):
            raise ValueError(f"latents must be ({count}, 8, {side}, {side}), got {latents.shape}")
        if audio.shape != (count, TOKENS, WIDTH):
            raise ValueError(f"audio must be ({count}, 50, 384), got {audio.shape}")
        if noise.shape != (LATENT_CHANNELS, side, side):
            raise ValueError(f"noise must be (4, {side}, {side}), got {noise.shape}")
        if num_steps < 1:
            raise ValueError(f"num_steps must be at least 1, got {num_steps}")
        out = np.empty_like(pixels)
        length = self.num_frames
        whole = count // length
        groups = [(0, whole, length), (whole * length, 1 if count % length else 0, count % length)]
        for first, windows, frames in groups:

            def infer(start: int, stop: int, first: int = first, frames: int = frames) -> None:
                a, b = first + start * frames, first + stop * frames
                out[a:b] = self._windows(
                    pixels[a:b], latents[a:b], audio[a:b], noise, stop - start, num_steps, guidance_scale, deepcache
                )

            self._batches.run(windows, infer)
        return out

    def _windows(
        self,
        crops: np.ndarray,
        latents: np.ndarray,
        audio: np.ndarray,
        noise: np.ndarray,
        windows: int,
        num_steps: int,
        guidance_scale: float,
        deepcache: bool,
    ) -> np.ndarray:
        """uint8 BGR faces of ``windows`` consecutive windows of equal length, denoised as one batch."""
        frames = len(crops) // windows
        side = latents.shape[-1]
        guided = guidance_scale > 1.0
        with torch.inference_mode():
            mask = self._mask(crops.shape[1])
            lat = torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32)).to(self.device)
            lat = lat.reshape(windows, frames, 2 * LATENT_CHANNELS, side, side).transpose(1, 2)
            mask_latent = F.interpolate(mask[None, 0:1], size=(side, side)).float()  # nearest, as the reference
            mask_latent = mask_latent[:, :, None].expand(windows, 1, frames, side, side)
            condition = torch.cat([mask_latent, lat], dim=1)
            tokens = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(self.device)
            if guided:
                condition = torch.cat([condition, condition])
                tokens = torch.cat([torch.zeros_like(tokens), tokens])
            start = torch.from_numpy(np.ascontiguousarray(noise, dtype=np.float32)).to(self.device)
            x = start[None, :, None].expand(windows, LATENT_CHANNELS, frames, side, side).contiguous()
            scheduler = make_scheduler()
            scheduler.set_timesteps(num_steps)
            cache = FeatureCache() if deepcache else None
            for index, t in enumerate(scheduler.timesteps):
                model_input = torch.cat([x, x]) if guided else x
                reuse = deepcache and index % DEEPCACHE_INTERVAL != 0
                predicted = self._unet(torch.cat([model_input, condition], dim=1), int(t), tokens, cache, reuse)
                if guided:
                    uncond, cond = predicted.chunk(2)
                    predicted = uncond + guidance_scale * (cond - uncond)
                x = scheduler.step(predicted, t, x, eta=0.0, return_dict=False)[0]
            decoded = self._decode(x.transpose(1, 2).reshape(windows * frames, LATENT_CHANNELS, side, side))
            keep_generated = (1 - mask[0:1]).float()  # the reference passes 1 - mask and blends with 1 - that
            faces = self._pixels(crops)
            combined = decoded * keep_generated + faces * (1 - keep_generated)
            images = ((combined / 2 + 0.5).clamp(0, 1) * 255).to(torch.uint8)
            rgb = images.permute(0, 2, 3, 1).cpu().numpy()
        return np.ascontiguousarray(rgb[..., ::-1])

    # ------------------------------------------------------------------ lifetime

    def identity(self) -> str:
        """sha256 prefix of every file that shapes the output (UNet, its config, VAE, Whisper, mask)."""
        return "sha256:" + files_sha256(self.files.weights)[:12]

    def release(self) -> None:
        """Return cached GPU memory to the driver; the model stays loaded."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def close(self) -> None:
        """Drop the models (and their GPU memory); the object is unusable afterwards."""
        for name in ("unet", "vae", "encoder"):
            if hasattr(self, name):
                delattr(self, name)
        self._masks.clear()
        self.release()


M = TypeVar("M", bound=torch.nn.Module)


def _placed(model: M, device: torch.device, dtype: torch.dtype) -> M:
    model = model.to(device)
    return model.half() if dtype == torch.float16 else model


def _check_crops(crops: np.ndarray) -> np.ndarray:
    pixels = np.asarray(crops)
    if (
        pixels.ndim != 4
        or pixels.shape[1] != pixels.shape[2]
        or pixels.shape[1] % 8
        or pixels.shape[3] != 3
        or pixels.dtype != np.uint8
    ):
        raise ValueError(
            f"crops must be uint8 (F, R, R, 3) BGR with R a multiple of 8, got {pixels.shape} {pixels.dtype}"
        )
    return pixels


def load_model(
    folder: Path, device: str | torch.device = "cpu", fp16: bool = True, batch_windows: int = 1
) -> LatentSyncModel:
    """LatentSync from ``folder`` (``models/latentsync/``): fp16 on CUDA of compute capability 8+ unless ``fp16``
    is False, fp32 elsewhere; ``batch_windows`` windows per UNet batch at most (halved on out-of-memory).

    Raises CheckpointError naming the file when one is missing, truncated, or does not match its config."""
    return LatentSyncModel(folder, device, fp16, batch_windows)


@dataclasses.dataclass(frozen=True)
class Sampling:
    """What shapes LatentSync's pictures besides its weights: the settings ``engine.latentsync_steps``,
    ``latentsync_guidance`` (both also in job.toml), ``latentsync_seed`` and ``latentsync_deepcache``."""

    steps: int
    guidance: float
    seed: int
    deepcache: bool


class LatentSyncEngine:
    """The LatentSync engine (``Engine``, ``PromptEngine``, ``PresenterEngine``); the model stays loaded until
    ``close()``. A render batch is whole windows (``EngineNeeds.window``, the config's ``num_frames``); on CUDA
    ``batch_size // window`` windows at most share a UNet batch, starting at the most that fit in the free GPU
    memory (``LatentSyncModel.fit_batch_windows``) and halved on out-of-memory; on the CPU one window.
    ``batch_size`` is the frames of those windows."""

    name = "latentsync"
    needs = EngineNeeds(audio="whisper", crop="latentsync_affine", presenter_prep=True, window=16)

    def __init__(
        self,
        folder: Path,
        device: str = "auto",
        batch_size: int = 64,
        fp16: bool = True,
        *,
        sampling: Sampling,
    ):
        if batch_size < 1:
            raise ConfigError(f"engine.batch_size must be at least 1, got {batch_size}")
        self.folder = Path(folder)
        self._model: LatentSyncModel | None = load_model(self.folder, device, fp16)
        model = self._model
        self.device = model.device
        self.needs = dataclasses.replace(type(self).needs, window=model.num_frames)
        self.identity = model.identity()
        dtype = str(model.dtype).removeprefix("torch.")
        self.prep_version = f"latentsync-{self.identity}-{dtype}-{model.resolution}"
        self.sampling = sampling
        if self.device.type != "cpu":
            self.batch_size = batch_size
            model.fit_batch_windows(sampling.guidance, sampling.deepcache)
        self.encoder_calls = 0
        """Faces VAE-encoded so far (a reused presenter's cached preparation adds none)."""

    @property
    def model(self) -> LatentSyncModel:
        if self._model is None:
            raise RuntimeError("LatentSyncEngine used after close()")
        return self._model

    @property
    def sampling(self) -> Sampling:
        """Steps, guidance, seed and DeepCache of the renders from now on (a job.toml may change them)."""
        return self._sampling

    @sampling.setter
    def sampling(self, sampling: Sampling) -> None:
        self._sampling = sampling
        self._noise = initial_noise(sampling.seed, self.model.resolution)

    @property
    def batch_size(self) -> int:
        return self.model.batch_windows * self.model.num_frames

    @batch_size.setter
    def batch_size(self, size: int) -> None:
        self.model.batch_windows = size // self.model.num_frames

    def prepare(self, mel: np.ndarray) -> None:
        """LatentSync reads each frame's Whisper window; nothing to adapt per recording."""

    def encode_audio(self, wav: np.ndarray) -> WhisperStates:
        try:
            return self.model.encode_audio(wav)
        except ValueError as exc:  # shorter than 20 ms
            raise SilentAudio(str(exc), hint="Use a recording of the speech at least a few seconds long.") from None

    def prep_shape(self) -> tuple[int, ...]:
        side = self.model.resolution // 8
        return (2 * LATENT_CHANNELS, side, side)

    def prepare_presenter(self, crops: list[np.ndarray]) -> np.ndarray:
        """float32 (B, 8, R/8, R/8): latents of the masked and of the whole aligned faces."""
        faces = self._faces(crops)
        latents = self.model.encode_faces(faces) if len(faces) else np.zeros((0, *self.prep_shape()), np.float32)
        self.encoder_calls += len(faces)
        return latents

    def generate(self, batch: FaceBatch) -> list[np.ndarray]:
        """Lip-synced aligned faces (uint8 BGR, each the size of its crop), one per crop of ``batch``; each of
        ``batch.windows`` is denoised as one window (consecutive full windows share a UNet batch)."""
        count = len(batch)
        if batch.prompts is None or len(batch.prompts) != count:
            raise ValueError("LatentSync needs one (50, 384) audio window per crop in FaceBatch.prompts")
        if count == 0:
            return []
        length = self.model.num_frames
        windows = batch.windows or tuple(min(length, count - a) for a in range(0, count, length))
        if sum(windows) != count or max(windows) > length:
            raise ValueError(f"windows {windows} do not cover the {count} crops in runs of at most {length}")
        faces = self._faces(batch.crops)
        if batch.prepared is not None:
            latents = np.asarray(batch.prepared, dtype=np.float32)
        else:
            latents = self.prepare_presenter(batch.crops)
        audio = np.asarray(batch.prompts, dtype=np.float32)
        out = np.empty_like(faces)
        for a, b in _runs_of_full_windows(windows, length):
            out[a:b] = self.model.generate_from_latents(
                faces[a:b],
                latents[a:b],
                audio[a:b],
                self._noise,
                self.sampling.steps,
                self.sampling.guidance,
                deepcache=self.sampling.deepcache,
            )
        return [_resized(face, crop.shape[:2]) for face, crop in zip(out, batch.crops, strict=True)]

    def _faces(self, crops: list[np.ndarray]) -> np.ndarray:
        """uint8 BGR (B, R, R, 3): the crops at the model's resolution (the aligned crops are 512: 1.6's own)."""
        side = self.model.resolution
        if not crops:
            return np.zeros((0, side, side, 3), np.uint8)
        return np.stack([_resized(crop, (side, side)) for crop in crops])

    def release(self) -> None:
        """Return cached GPU memory to the driver between jobs; the model stays loaded."""
        if self._model is not None:
            self._model.release()

    def close(self) -> None:
        """Drop the models (and their GPU memory); the engine is unusable afterwards."""
        if self._model is not None:
            self._model.close()
        self._model = None


def _runs_of_full_windows(windows: tuple[int, ...], length: int) -> list[tuple[int, int]]:
    """``(start, stop)`` crop ranges for ``generate_from_latents``: consecutive full windows together, each shorter
    window alone (that method cuts a range into full windows and at most one shorter last one)."""
    runs: list[tuple[int, int]] = []
    start = 0
    for size in windows:
        if runs and size == length and (runs[-1][1] - runs[-1][0]) % length == 0:
            runs[-1] = (runs[-1][0], start + size)
        else:
            runs.append((start, start + size))
        start += size
    return runs


def _resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` at ``size`` (height, width): unchanged when it has it; else area-averaged down, bicubic up."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    shrink = height < image.shape[0]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
