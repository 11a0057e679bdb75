"""Random LatentSync 1.6 model folders in the official layout and file formats, built from configs (never
downloaded).

``FULL``: the real configs (stage2_512.yaml's UNet, 1,267,944,644 values, about 5 GB of fp32; whisper tiny's dims;
stabilityai/sd-vae-ft-mse), for the benchmark: no ``unet_config.yaml`` is written, as in a user's download, so
the engine uses its built-in config. ``TINY``: the same classes with narrow channels and 64x64 faces, so tests stay
fast on 2 cores; it keeps the contract shapes (13 UNet input channels, 384-wide audio tokens, 5 Whisper states)
and writes its ``unet_config.yaml`` in LatentSync's format.

The files are written as the real ones are: ``latentsync_unet.pt`` = ``torch.save({"global_step", "state_dict"})``,
``whisper/tiny.pt`` = OpenAI's ``{"dims", "model_state_dict"}`` in fp16 (encoder and decoder),
``sd-vae-ft-mse/config.json`` + ``diffusion_pytorch_model.safetensors`` (or ``.bin``), and a 256x256 binary
``mask.png`` of the reference's format (white: kept, black: redrawn; drawn here, not LatentSync's file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import yaml
from diffusers import AutoencoderKL

from bench.musetalk_weights import FULL_VAE
from heygemd.engines import latentsync_layout as layout
from heygemd.engines.latentsync_config import STAGE2_512_MODEL, UNetConfig
from heygemd.engines.latentsync_unet import LatentSyncUNet
from heygemd.engines.latentsync_whisper import WhisperDims, WhisperEncoder, decoder_shapes, sinusoids

WHISPER_TINY_DIMS: dict[str, int] = {
    "n_mels": 80,
    "n_audio_ctx": 1500,
    "n_audio_state": 384,
    "n_audio_head": 6,
    "n_audio_layer": 4,
    "n_vocab": 51865,
    "n_text_ctx": 448,
    "n_text_state": 384,
    "n_text_head": 6,
    "n_text_layer": 4,
}
"""OpenAI's whisper tiny (``ModelDimensions`` of tiny.pt)."""


@dataclass(frozen=True)
class LatentSyncConfigs:
    unet: dict[str, Any]
    """The ``model:`` section."""
    vae: dict[str, Any]
    whisper: dict[str, int]
    data: dict[str, Any] | None = None
    """``data:`` fields (``resolution``, ``num_frames``) of a ``unet_config.yaml``; None: no yaml is written and
    the engine's built-in 1.6 config applies (``unet`` must then be stage2_512's)."""
    safetensors: bool = True
    """Write the VAE as .safetensors (else .bin)."""


FULL = LatentSyncConfigs(unet=STAGE2_512_MODEL, vae=FULL_VAE, whisper=WHISPER_TINY_DIMS)

TINY = LatentSyncConfigs(
    unet={
        **STAGE2_512_MODEL,
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
        "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
        "sample_size": 8,
    },
    vae={**FULL_VAE, "block_out_channels": [8, 8, 8, 8], "layers_per_block": 1, "norm_num_groups": 4},
    whisper={**WHISPER_TINY_DIMS, "n_vocab": 64, "n_text_ctx": 16, "n_text_layer": 1},
    data={"resolution": 64, "num_frames": 16, "audio_feat_length": [2, 2]},
)


def unet_parameter_count(configs: LatentSyncConfigs = FULL) -> int:
    """Values in the UNet's state dict (parameters and the motion modules' position tables), built on the meta
    device: nothing is allocated."""
    with torch.device("meta"):
        unet = LatentSyncUNet(UNetConfig.model_validate(configs.unet))
    return sum(v.numel() for v in unet.state_dict().values())


def whisper_checkpoint(dims: dict[str, int], generator: torch.Generator) -> dict[str, Any]:
    """OpenAI's format: random encoder and decoder weights of ``dims`` in fp16, the encoder's sinusoids."""
    parsed = WhisperDims.model_validate(dims)
    encoder = WhisperEncoder(parsed)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state["encoder.positional_embedding"] = sinusoids(parsed.n_audio_ctx, parsed.n_audio_state)
    for key, shape in decoder_shapes(parsed).items():
        state[key] = 0.02 * torch.randn(shape, generator=generator)
    return {"dims": dict(dims), "model_state_dict": {k: v.half() for k, v in state.items()}}


def mask_image(size: int = 256) -> np.ndarray:
    """uint8 BGR (size, size, 3): white, with a black rectangle over the lower face (the area redrawn)."""
    image = np.full((size, size, 3), 255, np.uint8)
    top, bottom = round(size * 0.37), round(size * 0.95)
    left, right = round(size * 0.04), round(size * 0.96)
    image[top:bottom, left:right] = 0
    return image


def build_folder(folder: Path, configs: LatentSyncConfigs = TINY, seed: int = 0) -> Path:
    """Write a random LatentSync model folder (``models/latentsync/`` layout) under ``folder``; returns ``folder``."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    folder = Path(folder)
    (folder / layout.WHISPER_WEIGHTS).parent.mkdir(parents=True, exist_ok=True)

    if configs.data is not None:
        document = {"data": configs.data, "model": configs.unet}
        (folder / layout.UNET_CONFIG).write_text(yaml.safe_dump(document, sort_keys=False))
    unet = LatentSyncUNet(UNetConfig.model_validate(configs.unet))
    torch.save({"global_step": 0, "state_dict": unet.state_dict()}, folder / layout.UNET_WEIGHTS)
    del unet

    torch.save(whisper_checkpoint(configs.whisper, generator), folder / layout.WHISPER_WEIGHTS)

    vae = AutoencoderKL(**{k: v for k, v in configs.vae.items() if not k.startswith("_")})
    vae.save_pretrained(folder / layout.VAE_DIR, safe_serialization=configs.safetensors)
    del vae

    cv2.imwrite(str(folder / layout.MASK), mask_image())
    return folder
