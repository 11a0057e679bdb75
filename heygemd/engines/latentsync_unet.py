"""LatentSync's UNet (the reference ``UNet3DConditionModel``, latentsync/models/unet.py, unet_blocks.py,
resnet.py, attention.py, motion_module.py), written for inference.

The module tree and parameter names are the reference's, so its published ``latentsync_unet.pt`` loads as it is;
the arithmetic is the reference's too:

* tensors are (batch, channels, frames, height, width); every convolution is a 2-D one applied per frame;
* the ResNet blocks' GroupNorms and the final ``conv_norm_out`` are plain GroupNorms over the 5-D tensor, so their
  statistics span all frames of a window (``use_inflated_groupnorm: true`` makes them per frame);
* each spatial transformer (GroupNorm and attention per frame, ``attention_head_dim`` heads) attends to the audio
  tokens, (batch * frames, 50, 384), in ``attn2``;
* the motion modules (temporal self-attention across the frames of a window, with a sinusoidal position added
  before each attention) follow every ResNet/transformer pair of the down and up blocks whose resolution is in
  ``motion_module_resolutions`` (LatentSync 1.6: all of them; not the mid block).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from heygemd.engines.latentsync_config import MotionModuleConfig, UNetConfig


def _to_frames(x: torch.Tensor) -> torch.Tensor:
    """(b, c, f, h, w) -> (b * f, c, h, w), frames of one sample consecutive."""
    b, c, f, h, w = x.shape
    return x.transpose(1, 2).reshape(b * f, c, h, w)


def _to_video(x: torch.Tensor, frames: int) -> torch.Tensor:
    """(b * f, c, h, w) -> (b, c, f, h, w)."""
    bf, c, h, w = x.shape
    return x.reshape(bf // frames, frames, c, h, w).transpose(1, 2)


class FrameConv(nn.Conv2d):
    """The reference's ``InflatedConv3d``: a 2-D convolution applied to every frame."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _to_video(super().forward(_to_frames(x)), x.shape[2])


class FrameGroupNorm(nn.GroupNorm):
    """The reference's ``InflatedGroupNorm``: statistics per frame (only with ``use_inflated_groupnorm``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _to_video(super().forward(_to_frames(x)), x.shape[2])


def _group_norm(groups: int, channels: int, eps: float, per_frame: bool) -> nn.GroupNorm:
    cls = FrameGroupNorm if per_frame else nn.GroupNorm
    return cls(num_groups=groups, num_channels=channels, eps=eps, affine=True)


class Attention(nn.Module):
    """Multi-head attention (``to_q``, ``to_k``, ``to_v`` without bias, ``to_out.0`` with), scaled dot product."""

    def __init__(self, query_dim: int, heads: int, head_dim: int, context_dim: int | None = None):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim)])

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        return x.reshape(batch, length, self.heads, dim // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        source = x if context is None else context
        q, k, v = self._split(self.to_q(x)), self._split(self.to_k(source)), self._split(self.to_v(source))
        out = F.scaled_dot_product_attention(q, k, v)
        batch, heads, length, head_dim = out.shape
        return self.to_out[0](out.transpose(1, 2).reshape(batch, length, heads * head_dim))


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """diffusers' GEGLU feed-forward (``net.0.proj``, ``net.2``), four times as wide inside."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner = dim * mult
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class TransformerBlock(nn.Module):
    """Self-attention, cross-attention to the audio tokens (``add_audio_layer``), feed-forward; pre-LayerNorm."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int, audio: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm2: nn.LayerNorm | None = nn.LayerNorm(dim) if audio else None
        self.attn2: Attention | None = Attention(dim, heads, head_dim, context_dim) if audio else None
        self.ff = FeedForward(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        if self.attn2 is not None and self.norm2 is not None:
            x = self.attn2(self.norm2(x), audio) + x
        return self.ff(self.norm3(x)) + x


class Transformer3D(nn.Module):
    """The reference's ``Transformer3DModel``: per frame, GroupNorm, 1x1 conv in, one block, 1x1 conv out, residual."""

    def __init__(self, channels: int, heads: int, groups: int, context_dim: int, audio: bool):
        super().__init__()
        head_dim = channels // heads
        inner = heads * head_dim
        self.norm = nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(channels, inner, kernel_size=1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(inner, heads, head_dim, context_dim, audio)])
        self.proj_out = nn.Conv2d(inner, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        frames = x.shape[2]
        residual = _to_frames(x)
        bf, _, height, width = residual.shape
        h = self.proj_in(self.norm(residual))
        inner = h.shape[1]
        h = h.permute(0, 2, 3, 1).reshape(bf, height * width, inner)
        for block in self.transformer_blocks:
            h = block(h, audio)
        h = self.proj_out(h.reshape(bf, height, width, inner).permute(0, 3, 1, 2))
        return _to_video(h + residual, frames)


class PositionalEncoding(nn.Module):
    """Sinusoidal positions of the frames, added before each temporal attention (buffer ``pe``, (1, max_len, dim))."""

    pe: torch.Tensor

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        self.register_buffer("pe", sinusoid_table(dim, max_len))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.shape[1]]


def sinusoid_table(dim: int, max_len: int) -> torch.Tensor:
    """(1, max_len, dim) table of the reference's motion-module ``PositionalEncoding``."""
    position = torch.arange(max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    table = torch.zeros(1, max_len, dim)
    table[0, :, 0::2] = torch.sin(position * div_term)
    table[0, :, 1::2] = torch.cos(position * div_term)
    return table


class TemporalAttention(Attention):
    """Self-attention across the frames of a window, one sequence per sample and pixel."""

    def __init__(self, dim: int, heads: int, head_dim: int, position_len: int | None):
        super().__init__(dim, heads, head_dim)
        self.pos_encoder = PositionalEncoding(dim, position_len) if position_len is not None else None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, *, frames: int = 1) -> torch.Tensor:
        bf, pixels, channels = x.shape
        batch = bf // frames
        h = x.reshape(batch, frames, pixels, channels).transpose(1, 2).reshape(batch * pixels, frames, channels)
        if self.pos_encoder is not None:
            h = self.pos_encoder(h)
        h = super().forward(h)
        return h.reshape(batch, pixels, frames, channels).transpose(1, 2).reshape(bf, pixels, channels)


class TemporalTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, config: MotionModuleConfig):
        super().__init__()
        position_len = config.temporal_position_encoding_max_len if config.temporal_position_encoding else None
        self.attention_blocks = nn.ModuleList(
            [TemporalAttention(dim, heads, head_dim, position_len) for _ in config.attention_block_types]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in config.attention_block_types])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms, strict=True):
            x = attention(norm(x), frames=frames) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer3D(nn.Module):
    """The reference's ``TemporalTransformer3DModel``: GroupNorm (32 groups) per frame, linear in, temporal
    blocks, linear out, residual."""

    def __init__(self, channels: int, config: MotionModuleConfig):
        super().__init__()
        heads = config.num_attention_heads
        head_dim = channels // heads // config.temporal_attention_dim_div
        inner = heads * head_dim
        self.norm = nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [TemporalTransformerBlock(inner, heads, head_dim, config) for _ in range(config.num_transformer_block)]
        )
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[2]
        residual = _to_frames(x)
        bf, channels, height, width = residual.shape
        h = self.norm(residual).permute(0, 2, 3, 1).reshape(bf, height * width, channels)
        h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, frames)
        h = self.proj_out(h).reshape(bf, height, width, channels).permute(0, 3, 1, 2)
        return _to_video(h + residual, frames)


class MotionModule(nn.Module):
    """The reference's ``VanillaTemporalModule``."""

    def __init__(self, channels: int, config: MotionModuleConfig):
        super().__init__()
        self.temporal_transformer = TemporalTransformer3D(channels, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal_transformer(x)


class ResnetBlock3D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, config: UNetConfig, scale: float = 1.0):
        super().__init__()
        groups, eps, per_frame = config.norm_num_groups, config.norm_eps, config.use_inflated_groupnorm
        self.norm1 = _group_norm(groups, in_channels, eps, per_frame)
        self.conv1 = FrameConv(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = _group_norm(groups, out_channels, eps, per_frame)
        self.conv2 = FrameConv(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.conv_shortcut = (
            FrameConv(in_channels, out_channels, kernel_size=1, stride=1, padding=0)
            if in_channels != out_channels
            else None
        )
        self.output_scale_factor = scale

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        return (shortcut + h) / self.output_scale_factor


class Downsample3D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = FrameConv(channels, channels, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample3D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = FrameConv(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, ...] | None = None) -> torch.Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)


class UNetBlock(nn.Module):
    """One down, mid or up block: ResNets, each followed by its transformer (cross-attention blocks) and its motion
    module (where the resolution has one), then the down- or upsampler."""

    def __init__(self) -> None:
        super().__init__()
        self.resnets = nn.ModuleList()
        self.attentions = nn.ModuleList()
        self.motion_modules = nn.ModuleList()

    def _add(self, resnet: ResnetBlock3D, channels: int, config: UNetConfig, heads: int | None, motion: bool) -> None:
        self.resnets.append(resnet)
        if heads is not None:
            self.attentions.append(
                Transformer3D(
                    channels, heads, config.norm_num_groups, config.cross_attention_dim, config.add_audio_layer
                )
            )
        if motion:
            self.motion_modules.append(MotionModule(channels, config.motion_module_kwargs))

    def _layer(self, i: int, x: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        x = self.resnets[i](x, temb)
        if len(self.attentions):
            x = self.attentions[i](x, audio)
        if len(self.motion_modules):
            x = self.motion_modules[i](x)
        return x


class DownBlock(UNetBlock):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        config: UNetConfig,
        heads: int | None,
        downsample: bool,
        motion: bool,
    ):
        super().__init__()
        for i in range(config.layers_per_block):
            resnet = ResnetBlock3D(in_channels if i == 0 else out_channels, out_channels, temb_channels, config)
            self._add(resnet, out_channels, config, heads, motion)
        self.downsamplers = nn.ModuleList([Downsample3D(out_channels)]) if downsample else None

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i in range(len(self.resnets)):
            x = self._layer(i, x, temb, audio)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class MidBlock(UNetBlock):
    def __init__(self, channels: int, temb_channels: int, config: UNetConfig, heads: int):
        super().__init__()
        scale = config.mid_block_scale_factor
        self.resnets.append(ResnetBlock3D(channels, channels, temb_channels, config, scale))
        self._add(
            ResnetBlock3D(channels, channels, temb_channels, config, scale),
            channels,
            config,
            heads,
            config.use_motion_module and config.motion_module_mid_block,
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, audio)
        if len(self.motion_modules):
            x = self.motion_modules[0](x)
        return self.resnets[1](x, temb)


class UpBlock(UNetBlock):
    def __init__(
        self,
        in_channels: int,
        prev_channels: int,
        out_channels: int,
        temb_channels: int,
        config: UNetConfig,
        heads: int | None,
        upsample: bool,
        motion: bool,
    ):
        super().__init__()
        layers = config.layers_per_block + 1
        for i in range(layers):
            skip_channels = in_channels if i == layers - 1 else out_channels
            resnet_in = prev_channels if i == 0 else out_channels
            resnet = ResnetBlock3D(resnet_in + skip_channels, out_channels, temb_channels, config)
            self._add(resnet, out_channels, config, heads, motion)
        self.upsamplers = nn.ModuleList([Upsample3D(out_channels)]) if upsample else None

    def forward(
        self,
        x: torch.Tensor,
        skips: list[torch.Tensor],
        temb: torch.Tensor,
        audio: torch.Tensor,
        size: tuple[int, ...] | None,
        *,
        before_last: bool = False,
    ) -> torch.Tensor:
        """The block's output; with ``before_last`` the input of its last layer (``skips`` then keeps that
        layer's skip connection)."""
        for i in range(len(self.resnets) - (1 if before_last else 0)):
            x = self.layer(i, x, skips.pop(), temb, audio)
        if self.upsamplers is not None and not before_last:
            x = self.upsamplers[0](x, size)
        return x

    def layer(
        self, i: int, x: torch.Tensor, skip: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor
    ) -> torch.Tensor:
        return self._layer(i, torch.cat([x, skip], dim=1), temb, audio)


@dataclass
class FeatureCache:
    """DeepCache's reuse of deep features (``DeepCacheSDHelper(cache_branch_id=0)``, which the reference's CLI and
    Gradio app enable with ``cache_interval=3``): a full step keeps the input of the last layer of the last up block;
    a reusing step computes only ``conv_in``, that last layer (its skip connection is ``conv_in``'s output) and the
    output convolution. (The helper also recomputes the last up block's other motion modules on cached inputs, whose
    results are then discarded: they are left out here.)"""

    feature: torch.Tensor | None = None


class LatentSyncUNet(nn.Module):
    """``forward(sample (B, in, F, h, w), timesteps (B,), audio (B * F, tokens, cross_attention_dim))`` -> the
    predicted noise (B, out, F, h, w)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        channels = config.block_out_channels
        temb_channels = channels[0] * 4
        heads = config.heads()
        motion_on = config.use_motion_module

        self.conv_in = FrameConv(config.in_channels, channels[0], kernel_size=3, padding=(1, 1))
        self.time_proj = Timesteps(channels[0], config.flip_sin_to_cos, config.freq_shift)
        self.time_embedding = TimestepEmbedding(channels[0], temb_channels)

        self.down_blocks = nn.ModuleList()
        out = channels[0]
        for i, down_kind in enumerate(config.down_block_types):
            resolution = 2**i
            motion = motion_on and resolution in config.motion_module_resolutions
            motion = motion and not config.motion_module_decoder_only
            last = i == len(channels) - 1
            attention = heads[i] if down_kind == "CrossAttnDownBlock3D" else None
            block_in, out = out, channels[i]
            self.down_blocks.append(DownBlock(block_in, out, temb_channels, config, attention, not last, motion))

        self.mid_block = MidBlock(channels[-1], temb_channels, config, heads[-1])

        self.up_blocks = nn.ModuleList()
        reversed_channels, reversed_heads = list(reversed(channels)), list(reversed(heads))
        out = reversed_channels[0]
        for i, up_kind in enumerate(config.up_block_types):
            resolution = 2 ** (3 - i)
            motion = motion_on and resolution in config.motion_module_resolutions
            last = i == len(channels) - 1
            prev, out = out, reversed_channels[i]
            block_in = reversed_channels[min(i + 1, len(channels) - 1)]
            attention = reversed_heads[i] if up_kind == "CrossAttnUpBlock3D" else None
            self.up_blocks.append(UpBlock(block_in, prev, out, temb_channels, config, attention, not last, motion))

        self.conv_norm_out = _group_norm(
            config.norm_num_groups, channels[0], config.norm_eps, config.use_inflated_groupnorm
        )
        self.conv_out = FrameConv(channels[0], config.out_channels, kernel_size=3, padding=1)

    def forward(
        self,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        audio: torch.Tensor,
        cache: FeatureCache | None = None,
        reuse: bool = False,
    ) -> torch.Tensor:
        """The predicted noise; with a ``cache``, ``reuse`` computes only the shallow branch from the feature the
        last full step (``reuse`` False) kept in it."""
        factor = 2 ** (len(self.up_blocks) - 1)
        forward_size = any(side % factor for side in sample.shape[-2:])
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        temb = self.time_embedding(self.time_proj(timesteps.expand(sample.shape[0])).to(self.conv_in.weight.dtype))

        x = self.conv_in(sample)
        last = self.up_blocks[-1]
        assert isinstance(last, UpBlock)
        if reuse:
            if cache is None or cache.feature is None:
                raise ValueError("reuse needs a cache filled by a full step")
            x = last.layer(len(last.resnets) - 1, cache.feature, x, temb, audio)
            return self.conv_out(F.silu(self.conv_norm_out(x)))
        skips = [x]
        for down in self.down_blocks:
            x, block_skips = down(x, temb, audio)
            skips.extend(block_skips)
        x = self.mid_block(x, temb, audio)
        count = self.config.layers_per_block + 1  # skip connections per up block, one per ResNet
        for i, up in enumerate(self.up_blocks):
            block_skips, skips = skips[-count:], skips[:-count]
            size = tuple(skips[-1].shape[2:]) if forward_size and i < len(self.up_blocks) - 1 else None
            if up is last and cache is not None:
                cache.feature = up(x, block_skips, temb, audio, size, before_last=True)
                x = last.layer(len(last.resnets) - 1, cache.feature, block_skips.pop(), temb, audio)
            else:
                x = up(x, block_skips, temb, audio, size)
        return self.conv_out(F.silu(self.conv_norm_out(x)))
