"""The Whisper encoder as LatentSync's vendored OpenAI code runs it (latentsync/whisper/whisper/model.py), loading
OpenAI's checkpoint format (``{"dims": {...}, "model_state_dict": {...}}``, e.g. ``whisper/tiny.pt``).

Its arithmetic, which the audio features depend on: weights cast to the input's dtype, LayerNorms in fp32,
attention with both query and key scaled by ``head_dim ** -0.25``, the softmax in fp32. ``forward`` returns the
input of the first block (after conv1, conv2, GELU and the positional embedding) and the output of every block,
without the final ``ln_post`` (the reference's ``include_embeddings``): (batch, layers + 1, ctx, state).
Only the encoder is built; the decoder's tensors are checked by shape (``decoder_shapes``) and dropped.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn


class WhisperDims(BaseModel):
    """OpenAI's ``ModelDimensions``: exactly these ten numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int


class LayerNorm(nn.LayerNorm):
    """In fp32 whatever the input, cast back (OpenAI's ``LayerNorm``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class Linear(nn.Linear):
    """Weights cast to the input's dtype (OpenAI's ``Linear``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


class Conv1d(nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return self._conv_forward(x, self.weight.to(x.dtype), bias)


class MultiHeadAttention(nn.Module):
    def __init__(self, state: int, heads: int):
        super().__init__()
        self.n_head = heads
        self.query = Linear(state, state)
        self.key = Linear(state, state, bias=False)
        self.value = Linear(state, state)
        self.out = Linear(state, state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.query(x), self.key(x), self.value(x)
        batch, ctx, state = q.shape
        scale = (state // self.n_head) ** -0.25
        q = q.view(batch, ctx, self.n_head, -1).permute(0, 2, 1, 3) * scale
        k = k.view(batch, ctx, self.n_head, -1).permute(0, 2, 3, 1) * scale
        v = v.view(batch, ctx, self.n_head, -1).permute(0, 2, 1, 3)
        weights = F.softmax((q @ k).float(), dim=-1).to(q.dtype)
        return self.out((weights @ v).permute(0, 2, 1, 3).flatten(start_dim=2))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, state: int, heads: int):
        super().__init__()
        self.attn = MultiHeadAttention(state, heads)
        self.attn_ln = LayerNorm(state)
        self.mlp = nn.Sequential(Linear(state, state * 4), nn.GELU(), Linear(state * 4, state))
        self.mlp_ln = LayerNorm(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """OpenAI's ``AudioEncoder`` (parameter names without the ``encoder.`` prefix)."""

    positional_embedding: torch.Tensor

    def __init__(self, dims: WhisperDims):
        super().__init__()
        self.dims = dims
        state = dims.n_audio_state
        self.conv1 = Conv1d(dims.n_mels, state, kernel_size=3, padding=1)
        self.conv2 = Conv1d(state, state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", torch.zeros(dims.n_audio_ctx, state))
        self.blocks = nn.ModuleList(
            [ResidualAttentionBlock(state, dims.n_audio_head) for _ in range(dims.n_audio_layer)]
        )
        self.ln_post = LayerNorm(state)
        """Loaded with the checkpoint, never applied: LatentSync takes the states before it."""

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, 2 * n_audio_ctx) log-mel -> (batch, n_audio_layer + 1, n_audio_ctx, n_audio_state)."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).permute(0, 2, 1)
        positions = self.positional_embedding
        if x.shape[1:] != positions.shape:
            raise ValueError(f"mel of {mel.shape[-1]} frames: the encoder takes {2 * positions.shape[0]}")
        x = (x + positions).to(x.dtype)
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return torch.stack(states, dim=1)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """OpenAI's positional embedding of the encoder (what ``positional_embedding`` holds in its checkpoints)."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(channels // 2))
    scaled = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


def decoder_shapes(dims: WhisperDims) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor of OpenAI's ``TextDecoder`` in a checkpoint (``decoder.`` prefix)."""
    state, mlp = dims.n_text_state, dims.n_text_state * 4
    shapes: dict[str, tuple[int, ...]] = {
        "decoder.token_embedding.weight": (dims.n_vocab, state),
        "decoder.positional_embedding": (dims.n_text_ctx, state),
    }
    for i in range(dims.n_text_layer):
        block = f"decoder.blocks.{i}"
        for attn in ("attn", "cross_attn"):
            for name in ("query", "key", "value", "out"):
                shapes[f"{block}.{attn}.{name}.weight"] = (state, state)
                if name != "key":
                    shapes[f"{block}.{attn}.{name}.bias"] = (state,)
        for ln in ("attn_ln", "cross_attn_ln", "mlp_ln"):
            shapes[f"{block}.{ln}.weight"] = shapes[f"{block}.{ln}.bias"] = (state,)
        shapes[f"{block}.mlp.0.weight"], shapes[f"{block}.mlp.0.bias"] = (mlp, state), (mlp,)
        shapes[f"{block}.mlp.2.weight"], shapes[f"{block}.mlp.2.bias"] = (state, mlp), (state,)
    shapes["decoder.ln.weight"] = shapes["decoder.ln.bias"] = (state,)
    return shapes
