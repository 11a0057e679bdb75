"""LatentSync's UNet configuration: the built-in 1.6 config, or ``models/latentsync/unet_config.yaml``.

The file is in LatentSync's own format (``configs/unet/stage2_512.yaml``): its ``model:`` section holds the
arguments of the reference ``UNet3DConditionModel``; of its ``data:`` section, ``resolution`` (the side of the
aligned face) and ``num_frames`` (the frames the temporal layers see at once) shape the computation. Arguments the
reference accepts but heygemd does not run (another mid block, class embeddings, linear projections, ...) are
refused by name rather than silently computed otherwise. No torch here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from heygemd.errors import CheckpointError

AUDIO_FEAT_LENGTH = (2, 2)
"""Video frames of audio context before and after each frame (``data.audio_feat_length``): 10 Whisper steps."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MotionModuleConfig(_Strict):
    """``motion_module_kwargs`` of the reference ``VanillaTemporalModule``, with its defaults."""

    num_attention_heads: int = Field(8, ge=1)
    num_transformer_block: int = Field(2, ge=1)
    attention_block_types: tuple[Literal["Temporal_Self"], ...] = ("Temporal_Self", "Temporal_Self")
    cross_frame_attention_mode: None = None
    temporal_position_encoding: bool = False
    temporal_position_encoding_max_len: int = Field(24, ge=1)
    temporal_attention_dim_div: int = Field(1, ge=1)
    zero_initialize: bool = True


class UNetConfig(_Strict):
    """The ``model:`` section: the reference ``UNet3DConditionModel``'s arguments and defaults (latentsync/models/
    unet.py), limited to the values heygemd computes."""

    sample_size: int | None = None
    in_channels: int = Field(4, ge=1)
    out_channels: int = Field(4, ge=1)
    center_input_sample: bool = False
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    down_block_types: tuple[Literal["CrossAttnDownBlock3D", "DownBlock3D"], ...] = (
        "CrossAttnDownBlock3D",
        "CrossAttnDownBlock3D",
        "CrossAttnDownBlock3D",
        "DownBlock3D",
    )
    mid_block_type: Literal["UNetMidBlock3DCrossAttn"] = "UNetMidBlock3DCrossAttn"
    up_block_types: tuple[Literal["UpBlock3D", "CrossAttnUpBlock3D"], ...] = (
        "UpBlock3D",
        "CrossAttnUpBlock3D",
        "CrossAttnUpBlock3D",
        "CrossAttnUpBlock3D",
    )
    only_cross_attention: bool = False
    """Accepted and without effect, as in the reference (its transformer blocks never read it)."""
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = Field(2, ge=1)
    downsample_padding: Literal[1] = 1
    mid_block_scale_factor: float = 1.0
    act_fn: Literal["silu", "swish"] = "silu"
    norm_num_groups: int = Field(32, ge=1)
    norm_eps: float = 1e-5
    cross_attention_dim: int = Field(1280, ge=1)
    attention_head_dim: int | tuple[int, ...] = 8
    """Heads per transformer (the reference's naming): each head is ``channels / attention_head_dim`` wide."""
    dual_cross_attention: Literal[False] = False
    use_linear_projection: Literal[False] = False
    class_embed_type: None = None
    num_class_embeds: None = None
    upcast_attention: bool = False
    """Accepted and without effect, as in the reference (its attention always runs in the input's dtype)."""
    resnet_time_scale_shift: Literal["default"] = "default"
    use_inflated_groupnorm: bool = False
    use_motion_module: bool = False
    motion_module_resolutions: tuple[int, ...] = (1, 2, 4, 8)
    motion_module_mid_block: bool = False
    motion_module_decoder_only: bool = False
    motion_module_type: Literal["Vanilla"] | None = None
    motion_module_kwargs: MotionModuleConfig = MotionModuleConfig()
    add_audio_layer: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> UNetConfig:
        blocks = len(self.block_out_channels)
        if not blocks or len(self.down_block_types) != blocks or len(self.up_block_types) != blocks:
            raise ValueError("block_out_channels, down_block_types and up_block_types must have the same length")
        if blocks > 4:
            raise ValueError("at most 4 blocks (the reference numbers the up blocks' resolutions from 8 down)")
        if isinstance(self.attention_head_dim, tuple) and len(self.attention_head_dim) != blocks:
            raise ValueError("attention_head_dim must be one number or one per block")
        if self.use_motion_module and self.motion_module_type is None:
            raise ValueError("use_motion_module needs motion_module_type: Vanilla")
        for channels in self.block_out_channels:
            if channels % self.norm_num_groups:
                raise ValueError(f"block_out_channels {channels} is not a multiple of norm_num_groups")
            if self.use_motion_module and channels % 32:
                raise ValueError(f"block_out_channels {channels}: the motion modules' GroupNorm needs multiples of 32")
        return self

    def heads(self) -> tuple[int, ...]:
        """Attention heads of each down block (the up blocks take them reversed, the mid block the last)."""
        if isinstance(self.attention_head_dim, int):
            return (self.attention_head_dim,) * len(self.block_out_channels)
        return self.attention_head_dim


class LatentSyncConfig(_Strict):
    """What shapes the computation: the UNet, the face resolution and the window length."""

    unet: UNetConfig
    resolution: int = Field(512, ge=8)
    """Side of the aligned face crop the model sees (``data.resolution``)."""
    num_frames: int = Field(16, ge=1)
    """Frames per window (``data.num_frames``): the temporal layers attend across them."""

    @model_validator(mode="after")
    def _fits(self) -> LatentSyncConfig:
        if self.resolution % 8:
            raise ValueError(f"resolution {self.resolution} is not a multiple of 8")
        motion = self.unet.motion_module_kwargs
        if self.unet.use_motion_module and motion.temporal_position_encoding:
            if self.num_frames > motion.temporal_position_encoding_max_len:
                raise ValueError(
                    f"num_frames {self.num_frames} exceeds temporal_position_encoding_max_len "
                    f"{motion.temporal_position_encoding_max_len}"
                )
        return self


STAGE2_512_MODEL: dict[str, Any] = {
    "act_fn": "silu",
    "add_audio_layer": True,
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
    "mid_block_type": "UNetMidBlock3DCrossAttn",
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 13,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-5,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "resnet_time_scale_shift": "default",
    "use_motion_module": True,
    "motion_module_resolutions": [1, 2, 4, 8],
    "motion_module_mid_block": False,
    "motion_module_decoder_only": False,
    "motion_module_type": "Vanilla",
    "motion_module_kwargs": {
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "attention_block_types": ["Temporal_Self", "Temporal_Self"],
        "temporal_position_encoding": True,
        "temporal_position_encoding_max_len": 24,
        "temporal_attention_dim_div": 1,
        "zero_initialize": True,
    },
}
"""The ``model:`` section of LatentSync's configs/unet/stage2_512.yaml (LatentSync 1.6)."""

BUILTIN = LatentSyncConfig(unet=UNetConfig.model_validate(STAGE2_512_MODEL), resolution=512, num_frames=16)
"""LatentSync 1.6: stage2_512.yaml (``data.resolution`` 512, ``data.num_frames`` 16)."""


def _summary(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "config"
        parts.append(f"{where}: {error['msg']}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def parse_config(document: Any, path: Path, hint: str) -> LatentSyncConfig:
    """The config of a LatentSync yaml document (``model:`` and ``data:`` sections); CheckpointError naming
    ``path`` when it is not one heygemd runs."""
    if not isinstance(document, dict) or not isinstance(document.get("model"), dict):
        raise CheckpointError("not a LatentSync UNet config (no 'model:' section)", path=path, hint=hint)
    data = document.get("data") or {}
    if not isinstance(data, dict):
        raise CheckpointError("the 'data:' section is not a mapping", path=path, hint=hint)
    feat = data.get("audio_feat_length", list(AUDIO_FEAT_LENGTH))
    if list(feat) != list(AUDIO_FEAT_LENGTH):
        raise CheckpointError(
            f"data.audio_feat_length {feat}: heygemd runs LatentSync's [2, 2] (50 audio tokens per frame)",
            path=path,
            hint=hint,
        )
    fields = {key: data[key] for key in ("resolution", "num_frames") if key in data}
    try:
        return LatentSyncConfig(unet=UNetConfig.model_validate(document["model"]), **fields)
    except ValidationError as exc:
        raise CheckpointError(
            f"not a LatentSync UNet config heygemd runs ({_summary(exc)})", path=path, hint=hint
        ) from None


def read_config(path: Path | None, hint: str) -> LatentSyncConfig:
    """``path`` (``models/latentsync/unet_config.yaml``) parsed, or the built-in 1.6 config when it is None."""
    if path is None:
        return BUILTIN
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CheckpointError(f"not a readable YAML file ({detail})", path=path, hint=hint) from None
    return parse_config(document, Path(path), hint)
