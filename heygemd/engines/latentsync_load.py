"""Loading LatentSync 1.6's files from ``models/latentsync/``, refusing anything broken with BAD_CHECKPOINT.

Strict where the reference is lenient: its UNet loader (``load_state_dict(strict=False)``) silently drops layers
whose shapes differ and keeps their zero initialisation, so a wrong file renders zeros. Here every tensor of the
UNet and of Whisper is checked against the config (missing keys, unexpected keys, shapes, non-finite values)
before anything is loaded. The VAE comes from its folder with ``local_files_only=True``; the scheduler is built
in code from the reference's configs/scheduler_config.json. Nothing is downloaded, even when a file is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from pydantic import ValidationError

from heygemd.engines import latentsync_layout as layout
from heygemd.engines import pretrained
from heygemd.engines.latentsync_audio import HIDDEN_STATES, N_MELS, WIDTH
from heygemd.engines.latentsync_config import LatentSyncConfig, read_config
from heygemd.engines.latentsync_unet import LatentSyncUNet, sinusoid_table
from heygemd.engines.latentsync_whisper import WhisperDims, WhisperEncoder, decoder_shapes
from heygemd.engines.model_files import ModelFiles, listing
from heygemd.engines.pretrained import READ_ERRORS, detail
from heygemd.engines.torch_util import check_container, check_state_dict, read_state_dict
from heygemd.errors import CheckpointError

LATENT_CHANNELS = 4
UNET_IN_CHANNELS = 3 * LATENT_CHANNELS + 1
"""[noisy latents 4 | mask 1 | masked-face latents 4 | reference latents 4]."""
VAE_SCALING = 0.18215
"""The reference sets ``vae.config.scaling_factor = 0.18215`` and ``shift_factor = 0`` whatever config.json says."""
WHISPER_CTX = 1500
"""Encoder steps of one 30 s segment."""

SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    # not in the reference's file: the diffusers 0.32 defaults it ran with
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}
"""LatentSync's configs/scheduler_config.json for diffusers' DDIMScheduler."""


def _fail(message: str, path: Path) -> CheckpointError:
    return CheckpointError(message, path=path, hint=layout.HINT)


def load_config(files: ModelFiles) -> LatentSyncConfig:
    """``unet_config.yaml`` when there is one, else the built-in 1.6 config; checked against the engine's needs."""
    path = files.found.get("unet_config")
    config = read_config(path, layout.HINT)
    unet = config.unet
    if unet.in_channels != UNET_IN_CHANNELS or unet.out_channels != LATENT_CHANNELS:
        raise _fail(
            f"in_channels {unet.in_channels} / out_channels {unet.out_channels}: LatentSync takes 13 / 4",
            path or files.folder,
        )
    if not unet.add_audio_layer or unet.cross_attention_dim != WIDTH:
        raise _fail(
            f"add_audio_layer {unet.add_audio_layer} / cross_attention_dim {unet.cross_attention_dim}: the audio "
            f"layers attend to whisper tiny's {WIDTH}-wide states (true / {WIDTH})",
            path or files.folder,
        )
    return config


def load_unet(files: ModelFiles, config: LatentSyncConfig, device: torch.device, dtype: torch.dtype) -> LatentSyncUNet:
    """The UNet of ``latentsync_unet.pt`` on ``device`` in ``dtype``, eval mode, every tensor checked first.

    One copy of the weights in memory at a time: the module is built on the meta device (no storage), the
    checkpoint read into memory (not mapped: the mapped file's pages would count beside the model's copy) and its
    tensors become the module's own (``assign=True``); those that must change device or dtype are converted one by
    one, each read tensor dropped once converted. The motion modules' position tables (``pos_encoder.pe``) are
    fixed sinusoids: a checkpoint without them gets them computed, as the reference's lenient loader would leave
    its initial ones."""
    path = files["unet"]
    with torch.device("meta"):
        unet = LatentSyncUNet(config.unet)
    expected = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    state = read_state_dict(path, hint=layout.HINT, mmap=False)
    for key, shape in expected.items():
        if key.endswith(".pos_encoder.pe") and key not in state:
            state[key] = sinusoid_table(shape[2], shape[1])
    check_state_dict(state, expected, path, what="LatentSync's UNet for this config", hint=layout.HINT)
    placed = {key: state.pop(key).to(device=device, dtype=dtype) for key in list(state)}
    unet.load_state_dict(placed, strict=True, assign=True)
    return unet.eval()


def _read_checkpoint(path: Path) -> Mapping[str, Any]:
    is_zip = check_container(path, layout.HINT)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except READ_ERRORS as exc:
        raise _fail(f"cannot read the checkpoint, it may be truncated or corrupted ({detail(exc)})", path) from None
    if not isinstance(obj, Mapping):
        raise _fail(f"holds a {type(obj).__name__}, not OpenAI's {{'dims', 'model_state_dict'}}", path)
    return obj


def load_whisper(path: Path) -> WhisperEncoder:
    """Whisper tiny's encoder (fp32, CPU, eval) from OpenAI's checkpoint format; the decoder is checked and dropped."""
    checkpoint = _read_checkpoint(path)
    if "dims" not in checkpoint or "model_state_dict" not in checkpoint:
        keys = listing([str(k) for k in checkpoint]) or "none"
        raise _fail(f"not OpenAI's Whisper format: no 'dims' and 'model_state_dict' (top-level keys: {keys})", path)
    try:
        dims = WhisperDims.model_validate(checkpoint["dims"])
    except ValidationError as exc:
        raise _fail(f"'dims' are not Whisper's ModelDimensions ({detail(exc)})", path) from None
    layers = dims.n_audio_layer + 1
    if (dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, layers) != (N_MELS, WHISPER_CTX, WIDTH, HIDDEN_STATES):
        raise _fail(
            f"n_mels {dims.n_mels}, n_audio_ctx {dims.n_audio_ctx}, n_audio_state {dims.n_audio_state}, "
            f"n_audio_layer {dims.n_audio_layer}: LatentSync 1.6 uses whisper tiny (80, 1500, 384, 4)",
            path,
        )
    if dims.n_audio_head < 1 or dims.n_audio_state % dims.n_audio_head:
        raise _fail(f"n_audio_head {dims.n_audio_head} does not divide n_audio_state {dims.n_audio_state}", path)
    state = checkpoint["model_state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _fail("'model_state_dict' is not a dict of tensors", path)
    encoder = WhisperEncoder(dims)
    expected = {f"encoder.{k}": tuple(v.shape) for k, v in encoder.state_dict().items()}
    expected.update(decoder_shapes(dims))
    check_state_dict(state, expected, path, what="OpenAI's Whisper for these dims", hint=layout.HINT)
    encoder.load_state_dict(
        {k.removeprefix("encoder."): v.float() for k, v in state.items() if k.startswith("encoder.")}, strict=True
    )
    return encoder.eval()


def load_vae(files: ModelFiles) -> AutoencoderKL:
    """sd-vae-ft-mse, fp32 on the CPU in eval mode, from its folder only (diffusers converts the 2022 names)."""
    return pretrained.load_vae(files["vae_config"], files["vae"], engine="LatentSync", hint=layout.HINT)


def load_mask(path: Path) -> np.ndarray:
    """uint8 RGB (h, w, 3) of ``mask.png`` as the reference reads it (white: keep, black: the area redrawn)."""
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise _fail("not an image (LatentSync's latentsync/utils/mask.png is a 256x256 PNG)", path)
    if not (image < 128).any() or not (image >= 128).any():
        raise _fail("the mask is all one colour: it needs white (kept) and black (redrawn) pixels", path)
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def make_scheduler() -> DDIMScheduler:
    """A fresh DDIM scheduler of the reference's config (each generation sets its own timesteps)."""
    return DDIMScheduler(**SCHEDULER_CONFIG)
