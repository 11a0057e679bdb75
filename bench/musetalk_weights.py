"""Random MuseTalk 1.5 model folders in the official layout, built from configs (never downloaded).

``FULL``: the real configs (musetalkV15/musetalk.json, stabilityai/sd-vae-ft-mse, openai/whisper-tiny), about
4 GB of random fp32 weights, for the benchmark. ``TINY``: the same architecture families scaled down so tests stay
fast on 2 cores, keeping the contract shapes (8 latent input channels, 384-wide prompts, 5 hidden states).
Both are written exactly as a user's download is: ``musetalk.json`` + a bare ``unet.pth`` state_dict,
``sd-vae/config.json`` + ``diffusion_pytorch_model.bin`` (or ``.safetensors``), ``whisper/config.json`` +
``pytorch_model.bin`` (or ``model.safetensors``) + ``preprocessor_config.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel


@dataclass(frozen=True)
class MuseTalkConfigs:
    unet: dict[str, Any]
    vae: dict[str, Any]
    whisper: dict[str, Any]
    safetensors: bool = False
    """Write the VAE and Whisper weights as .safetensors instead of .bin."""
    extra: dict[str, Any] = field(default_factory=dict)


FULL_UNET: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.6.0.dev0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
FULL_VAE: dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.4.2",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
FULL_WHISPER: dict[str, Any] = {
    "d_model": 384,
    "encoder_layers": 4,
    "encoder_attention_heads": 6,
    "encoder_ffn_dim": 1536,
    "decoder_layers": 4,
    "decoder_attention_heads": 6,
    "decoder_ffn_dim": 1536,
    "num_mel_bins": 80,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "vocab_size": 51865,
}

TINY = MuseTalkConfigs(
    unet={
        **FULL_UNET,
        "attention_head_dim": 2,
        "block_out_channels": [16, 32],
        "layers_per_block": 1,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "norm_num_groups": 8,
        "sample_size": 32,
    },
    vae={**FULL_VAE, "block_out_channels": [8, 8, 8, 8], "layers_per_block": 1, "norm_num_groups": 4},
    whisper={
        **FULL_WHISPER,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": 32,
        "decoder_layers": 1,
        "decoder_attention_heads": 2,
        "decoder_ffn_dim": 32,
        "max_target_positions": 16,
        "vocab_size": 64,
        "pad_token_id": 1,
        "bos_token_id": 2,
        "eos_token_id": 3,
        "decoder_start_token_id": 2,
    },
)
FULL = MuseTalkConfigs(unet=FULL_UNET, vae=FULL_VAE, whisper=FULL_WHISPER)


def build_folder(folder: Path, configs: MuseTalkConfigs = TINY, seed: int = 0) -> Path:
    """Write a random MuseTalk model folder (``models/musetalk/`` layout) under ``folder``; returns ``folder``."""
    torch.manual_seed(seed)
    unet_dir, vae_dir, whisper_dir = folder / "musetalkV15", folder / "sd-vae", folder / "whisper"
    for d in (unet_dir, vae_dir, whisper_dir):
        d.mkdir(parents=True, exist_ok=True)

    (unet_dir / "musetalk.json").write_text(json.dumps(configs.unet, indent=2))
    unet = UNet2DConditionModel(**{k: v for k, v in configs.unet.items() if not k.startswith("_")})
    torch.save(unet.state_dict(), unet_dir / "unet.pth")
    del unet

    vae = AutoencoderKL(**{k: v for k, v in configs.vae.items() if not k.startswith("_")})
    vae.save_pretrained(vae_dir, safe_serialization=configs.safetensors)
    del vae

    whisper = WhisperModel(WhisperConfig(**configs.whisper))
    whisper.save_pretrained(whisper_dir)  # transformers 5 writes model.safetensors
    if not configs.safetensors:  # the layout of openai/whisper-tiny as MuseTalk's script downloads it
        torch.save(whisper.state_dict(), whisper_dir / "pytorch_model.bin")
        (whisper_dir / "model.safetensors").unlink()
    del whisper
    WhisperFeatureExtractor(feature_size=80).save_pretrained(whisper_dir)
    for extra in whisper_dir.glob("generation_config.json"):
        extra.unlink()
    return folder
