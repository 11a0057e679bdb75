"""LatentSync's reference computation re-stated for the tests, from its formulas (bytedance/LatentSync at a229c39),
independently of heygemd's engine: functions over the checkpoint's tensors, not heygemd's modules.

* ``unet``: latentsync/models/unet.py, unet_blocks.py, resnet.py, attention.py, motion_module.py;
* ``ddim_timesteps`` / ``ddim_step``: diffusers' DDIMScheduler for configs/scheduler_config.json, written out from
  ``alphas_cumprod`` (leading spacing, steps_offset 1, set_alpha_to_one false, eta 0, epsilon prediction);
* ``generate``: lipsync_pipeline.py ``__call__`` per 16-frame window, image_processor.py's masks, the posterior mean
  where the reference samples;
* ``whisper_encoder`` / ``log_mel`` / ``audio2feat`` / ``feature2chunks``: latentsync/whisper.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import librosa
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from diffusers import AutoencoderKL

State = dict[str, torch.Tensor]

# ------------------------------------------------------------------ the UNet


def frames_first(x: torch.Tensor) -> torch.Tensor:
    """rearrange "b c f h w -> (b f) c h w"."""
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def frames_back(x: torch.Tensor, f: int) -> torch.Tensor:
    """rearrange "(b f) c h w -> b c f h w"."""
    bf, c, h, w = x.shape
    return x.reshape(bf // f, f, c, h, w).permute(0, 2, 1, 3, 4)


def conv(sd: State, p: str, x: torch.Tensor, stride: int = 1, padding: int = 1) -> torch.Tensor:
    """InflatedConv3d: the 2-D convolution on every frame."""
    y = F.conv2d(frames_first(x), sd[p + ".weight"], sd[p + ".bias"], stride=stride, padding=padding)
    return frames_back(y, x.shape[2])


def linear(sd: State, p: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, sd[p + ".weight"], sd.get(p + ".bias"))


def layer_norm(sd: State, p: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], 1e-5)


def attention(sd: State, p: str, x: torch.Tensor, heads: int, context: torch.Tensor | None = None) -> torch.Tensor:
    context = x if context is None else context
    q, k, v = linear(sd, p + ".to_q", x), linear(sd, p + ".to_k", context), linear(sd, p + ".to_v", context)

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], heads, t.shape[2] // heads).permute(0, 2, 1, 3)

    q, k, v = split(q), split(k), split(v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    out = (weights @ v).permute(0, 2, 1, 3)
    return linear(sd, p + ".to_out.0", out.reshape(out.shape[0], out.shape[1], -1))


def feed_forward(sd: State, p: str, x: torch.Tensor) -> torch.Tensor:
    hidden, gate = linear(sd, p + ".net.0.proj", x).chunk(2, dim=-1)
    return linear(sd, p + ".net.2", hidden * F.gelu(gate))


def resnet(sd: State, p: str, x: torch.Tensor, temb: torch.Tensor, cfg: dict[str, Any], scale: float = 1.0):
    groups, eps = cfg["norm_num_groups"], float(cfg["norm_eps"])
    # plain nn.GroupNorm on the 5-D tensor: statistics over all frames of the sample
    h = F.silu(F.group_norm(x, groups, sd[p + ".norm1.weight"], sd[p + ".norm1.bias"], eps))
    h = conv(sd, p + ".conv1", h)
    h = h + linear(sd, p + ".time_emb_proj", F.silu(temb))[:, :, None, None, None]
    h = F.silu(F.group_norm(h, groups, sd[p + ".norm2.weight"], sd[p + ".norm2.bias"], eps))
    h = conv(sd, p + ".conv2", h)
    if p + ".conv_shortcut.weight" in sd:
        x = conv(sd, p + ".conv_shortcut", x, padding=0)
    return (x + h) / scale


def transformer(sd: State, p: str, x: torch.Tensor, audio: torch.Tensor, heads: int, groups: int) -> torch.Tensor:
    f = x.shape[2]
    x = frames_first(x)
    bf, c, hh, ww = x.shape
    residual = x
    h = F.group_norm(x, groups, sd[p + ".norm.weight"], sd[p + ".norm.bias"], 1e-6)
    h = F.conv2d(h, sd[p + ".proj_in.weight"], sd[p + ".proj_in.bias"])
    h = h.permute(0, 2, 3, 1).reshape(bf, hh * ww, -1)
    b = p + ".transformer_blocks.0"
    h = attention(sd, b + ".attn1", layer_norm(sd, b + ".norm1", h), heads) + h
    h = attention(sd, b + ".attn2", layer_norm(sd, b + ".norm2", h), heads, audio) + h
    h = feed_forward(sd, b + ".ff", layer_norm(sd, b + ".norm3", h)) + h
    h = h.reshape(bf, hh, ww, -1).permute(0, 3, 1, 2)
    h = F.conv2d(h, sd[p + ".proj_out.weight"], sd[p + ".proj_out.bias"])
    return frames_back(h + residual, f)


def motion_module(sd: State, p: str, x: torch.Tensor, heads: int) -> torch.Tensor:
    p = p + ".temporal_transformer"
    f = x.shape[2]
    x = frames_first(x)
    bf, c, hh, ww = x.shape
    residual = x
    h = F.group_norm(x, 32, sd[p + ".norm.weight"], sd[p + ".norm.bias"], 1e-6)
    h = linear(sd, p + ".proj_in", h.permute(0, 2, 3, 1).reshape(bf, hh * ww, c))
    b = p + ".transformer_blocks.0"
    for k in range(2):
        a = f"{b}.attention_blocks.{k}"
        n = layer_norm(sd, f"{b}.norms.{k}", h)
        s = n.shape[1]
        n = n.reshape(bf // f, f, s, c).permute(0, 2, 1, 3).reshape(-1, f, c)  # "(b f) s c -> (b s) f c"
        n = n + sd[a + ".pos_encoder.pe"][:, :f]
        out = attention(sd, a, n, heads)
        out = out.reshape(bf // f, s, f, c).permute(0, 2, 1, 3).reshape(bf, s, c)  # "(b s) f c -> (b f) s c"
        h = out + h
    h = feed_forward(sd, b + ".ff", layer_norm(sd, b + ".ff_norm", h)) + h
    h = linear(sd, p + ".proj_out", h).reshape(bf, hh, ww, c).permute(0, 3, 1, 2)
    return frames_back(h + residual, f)


def timestep_embedding(sd: State, t: int, batch: int, channels: int) -> torch.Tensor:
    half = channels // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32) / half  # freq_shift 0
    emb = torch.full((batch,), float(t))[:, None] * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.cos(emb), torch.sin(emb)], dim=-1)  # flip_sin_to_cos
    return linear(sd, "time_embedding.linear_2", F.silu(linear(sd, "time_embedding.linear_1", emb)))


class DeepCache:
    """DeepCache's ``DeepCacheSDHelper`` with ``set_params(cache_interval=3, cache_branch_id=0)`` (what the
    reference's inference.py and gradio_app.py enable), restated: the down blocks' and up blocks' ResNets and
    transformers, the down- and upsamplers, the whole down, mid and up blocks each return their output of the last
    full step (step index % 3 == 0) when ``is_skip_step`` says so; the motion modules are not wrapped."""

    def __init__(self, interval: int = 3):
        self.interval = interval
        self.step = 0
        """Index of the current timestep in the scheduler's list."""
        self.outputs: dict[tuple[str, str, int, int], Any] = {}

    def skip(self, block: int, layer: int, kind: str) -> bool:
        if self.step % self.interval == 0:
            return False
        if block > 0 or kind == "mid":
            return True
        return layer >= 0 if kind == "down" else layer > 0

    def __call__(self, key: tuple[str, str, int, int], compute: Callable[[], Any]) -> Any:
        if self.skip(key[2], key[3], key[0]):
            return self.outputs[key]
        self.outputs[key] = result = compute()
        return result


def _always(key: tuple[str, str, int, int], compute: Callable[[], Any]) -> Any:
    return compute()


def unet(
    sd: State, cfg: dict[str, Any], sample: torch.Tensor, t: int, audio: torch.Tensor, cache: DeepCache | None = None
) -> torch.Tensor:
    """UNet3DConditionModel.forward for stage2-like configs (motion modules in every down and up block), with
    DeepCache's wrappers when ``cache`` is given."""
    channels, groups, heads = cfg["block_out_channels"], cfg["norm_num_groups"], cfg["attention_head_dim"]
    mm_heads = cfg["motion_module_kwargs"]["num_attention_heads"]
    layers = cfg["layers_per_block"]
    wrap = cache if cache is not None else _always
    temb = timestep_embedding(sd, t, sample.shape[0], channels[0])
    x = conv(sd, "conv_in", sample)
    skips = [x]

    def down_block(i: int, kind: str, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        p, outputs = f"down_blocks.{i}", []
        for j in range(layers):
            x = wrap(("down", "resnet", i, j), lambda x=x, j=j: resnet(sd, f"{p}.resnets.{j}", x, temb, cfg))
            if kind == "CrossAttnDownBlock3D":
                x = wrap(
                    ("down", "attentions", i, j),
                    lambda x=x, j=j: transformer(sd, f"{p}.attentions.{j}", x, audio, heads, groups),
                )
            x = motion_module(sd, f"{p}.motion_modules.{j}", x, mm_heads)
            outputs.append(x)
        if i < len(channels) - 1:
            x = wrap(("down", "downsampler", i, layers), lambda x=x: conv(sd, f"{p}.downsamplers.0.conv", x, stride=2))
            outputs.append(x)
        return x, outputs

    for i, kind in enumerate(cfg["down_block_types"]):
        x, outputs = wrap(("down", "block", i, 0), lambda i=i, kind=kind, x=x: down_block(i, kind, x))
        skips.extend(outputs)

    def mid_block(x: torch.Tensor) -> torch.Tensor:
        x = resnet(sd, "mid_block.resnets.0", x, temb, cfg)
        x = transformer(sd, "mid_block.attentions.0", x, audio, heads, groups)
        return resnet(sd, "mid_block.resnets.1", x, temb, cfg)

    x = wrap(("mid", "mid_block", 0, 0), lambda x=x: mid_block(x))
    blocks = len(cfg["up_block_types"])

    def up_block(i: int, kind: str, x: torch.Tensor, res: list[torch.Tensor]) -> torch.Tensor:
        p, b = f"up_blocks.{i}", blocks - i - 1  # the helper numbers the up blocks and their layers from the end
        for j in range(layers + 1):
            x = torch.cat([x, res.pop()], dim=1)
            layer = layers + 1 - j - 1
            x = wrap(("up", "resnet", b, layer), lambda x=x, j=j: resnet(sd, f"{p}.resnets.{j}", x, temb, cfg))
            if kind == "CrossAttnUpBlock3D":
                x = wrap(
                    ("up", "attentions", b, layer),
                    lambda x=x, j=j: transformer(sd, f"{p}.attentions.{j}", x, audio, heads, groups),
                )
            x = motion_module(sd, f"{p}.motion_modules.{j}", x, mm_heads)
        if i < len(channels) - 1:

            def upsample(x: torch.Tensor = x) -> torch.Tensor:
                return conv(
                    sd, f"{p}.upsamplers.0.conv", F.interpolate(x, scale_factor=[1.0, 2.0, 2.0], mode="nearest")
                )

            x = wrap(("up", "upsampler", b, 0), upsample)
        return x

    for i, kind in enumerate(cfg["up_block_types"]):
        res, skips = skips[-(layers + 1) :], skips[: -(layers + 1)]
        x = wrap(("up", "block", blocks - i - 1, 0), lambda i=i, kind=kind, x=x, res=res: up_block(i, kind, x, res))
    x = F.silu(F.group_norm(x, groups, sd["conv_norm_out.weight"], sd["conv_norm_out.bias"], float(cfg["norm_eps"])))
    return conv(sd, "conv_out", x)


def load_unet(folder: Path) -> tuple[State, dict[str, Any]]:
    """The checkpoint's tensors and the ``model:`` section of the folder's unet_config.yaml."""
    checkpoint = torch.load(folder / "latentsync_unet.pt", map_location="cpu", weights_only=True)
    config = yaml.safe_load((folder / "unet_config.yaml").read_text())["model"]
    return {k: v.float() for k, v in checkpoint["state_dict"].items()}, config


# ------------------------------------------------------------------ DDIM (configs/scheduler_config.json)


def alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def ddim_timesteps(steps: int) -> list[int]:
    ratio = 1000 // steps
    return [i * ratio + 1 for i in reversed(range(steps))]


def ddim_step(eps: torch.Tensor, t: int, x: torch.Tensor, steps: int) -> torch.Tensor:
    ac = alphas_cumprod()
    prev = t - 1000 // steps
    a_t = ac[t]
    a_prev = ac[prev] if prev >= 0 else ac[0]  # set_alpha_to_one: false
    x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
    return a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps


# ------------------------------------------------------------------ the pipeline's window loop


def fixed_mask(path: Path, resolution: int) -> torch.Tensor:
    """image_processor.load_fixed_mask: float64 (3, R, R)."""
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    image = cv2.resize(image, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4) / 255.0
    return torch.from_numpy(image).permute(2, 0, 1)


def window_inputs(vae: AutoencoderKL, faces_rgb: np.ndarray, mask: torch.Tensor):
    """prepare_masks_and_masked_images + prepare_mask_latents + prepare_image_latents (posterior means), batch 1:
    pixel_values (f, 3, R, R), masks (f, 1, R, R) float64, and the (1, c, f, h, w) mask / masked / ref latents."""
    images = torch.from_numpy(faces_rgb).permute(0, 3, 1, 2)
    pixel_values = (images / 255.0 - 0.5) / 0.5
    masked = pixel_values * mask
    masks = mask[0:1].expand(len(images), 1, *mask.shape[1:])
    side = mask.shape[1] // 8
    mask_latents = F.interpolate(masks, size=(side, side)).float()
    masked_latents = vae.encode(masked.float()).latent_dist.mean * 0.18215
    ref_latents = vae.encode(pixel_values).latent_dist.mean * 0.18215

    def video(t: torch.Tensor) -> torch.Tensor:  # "f c h w -> 1 c f h w"
        return t.permute(1, 0, 2, 3)[None]

    return pixel_values, masks, video(mask_latents), video(masked_latents), video(ref_latents)


def generate(
    folder: Path,
    crops_bgr: np.ndarray,
    audio: np.ndarray,
    noise: np.ndarray,
    steps: int,
    guidance: float,
    deepcache: bool = False,
) -> np.ndarray:
    sd, cfg = load_unet(folder)
    vae = AutoencoderKL.from_pretrained(folder / "sd-vae-ft-mse", local_files_only=True).eval()
    resolution = crops_bgr.shape[1]
    mask = fixed_mask(folder / "mask.png", resolution)
    guided = guidance > 1.0
    outputs = []
    with torch.no_grad():
        for start in range(0, len(crops_bgr), 16):
            faces = np.ascontiguousarray(crops_bgr[start : start + 16, :, :, ::-1])
            f = len(faces)
            pixel_values, masks, mask_lat, masked_lat, ref_lat = window_inputs(vae, faces, mask)
            audio_embeds = torch.from_numpy(audio[start : start + f])
            if guided:
                audio_embeds = torch.cat([torch.zeros_like(audio_embeds), audio_embeds])
                mask_lat, masked_lat, ref_lat = (torch.cat([t] * 2) for t in (mask_lat, masked_lat, ref_lat))
            latents = torch.from_numpy(noise)[None, :, None].repeat(1, 1, f, 1, 1)
            cache = DeepCache() if deepcache else None
            for index, t in enumerate(ddim_timesteps(steps)):
                model_input = torch.cat([latents] * 2) if guided else latents
                model_input = torch.cat([model_input, mask_lat, masked_lat, ref_lat], dim=1)
                if cache is not None:
                    cache.step = index
                eps = unet(sd, cfg, model_input, t, audio_embeds, cache)
                if guided:
                    uncond, cond = eps.chunk(2)
                    eps = uncond + guidance * (cond - uncond)
                latents = ddim_step(eps, t, latents, steps)
            decoded = vae.decode(frames_first(latents / 0.18215)).sample
            keep_generated = (1 - masks).float()  # paste_surrounding_pixels_back(decoded, pixels, 1 - masks)
            combined = decoded * keep_generated + pixel_values * (1 - keep_generated)
            images = ((combined.permute(0, 2, 3, 1) / 2 + 0.5).clamp(0, 1) * 255).to(torch.uint8)
            outputs.append(images.numpy()[..., ::-1])
    return np.concatenate(outputs)


# ------------------------------------------------------------------ audio (latentsync/whisper)


def whisper_encoder(sd: State, mel: torch.Tensor, heads: int) -> torch.Tensor:
    """AudioEncoder.forward(include_embeddings=True), fp32: (1, 5, 1500, 384) states before ln_post."""

    def ln(p: str, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], 1e-5)

    x = F.gelu(F.conv1d(mel, sd["encoder.conv1.weight"], sd["encoder.conv1.bias"], padding=1))
    x = F.gelu(F.conv1d(x, sd["encoder.conv2.weight"], sd["encoder.conv2.bias"], stride=2, padding=1))
    x = x.permute(0, 2, 1) + sd["encoder.positional_embedding"]
    states = [x]
    blocks = len({k.split(".")[2] for k in sd if k.startswith("encoder.blocks.")})
    for i in range(blocks):
        p = f"encoder.blocks.{i}"
        h = ln(p + ".attn_ln", x)
        q = linear(sd, p + ".attn.query", h)
        k = linear(sd, p + ".attn.key", h)
        v = linear(sd, p + ".attn.value", h)
        n, ctx, state = q.shape
        scale = (state // heads) ** -0.25
        q = q.view(n, ctx, heads, -1).permute(0, 2, 1, 3) * scale
        k = k.view(n, ctx, heads, -1).permute(0, 2, 3, 1) * scale
        v = v.view(n, ctx, heads, -1).permute(0, 2, 1, 3)
        w = torch.softmax(q @ k, dim=-1)
        x = x + linear(sd, p + ".attn.out", (w @ v).permute(0, 2, 1, 3).flatten(start_dim=2))
        h = ln(p + ".mlp_ln", x)
        x = x + linear(sd, p + ".mlp.2", F.gelu(linear(sd, p + ".mlp.0", h)))
        states.append(x)
    return torch.stack(states, dim=1)


def log_mel(wav: np.ndarray) -> torch.Tensor:
    """whisper/audio.py log_mel_spectrogram of the whole recording: (80, len // 160)."""
    audio = torch.from_numpy(wav)
    stft = torch.stft(audio, 400, 160, window=torch.hann_window(400), return_complex=True)
    magnitudes = stft[:, :-1].abs() ** 2
    filters = torch.from_numpy(librosa.filters.mel(sr=16000, n_fft=400, n_mels=80))
    log_spec = torch.clamp(filters @ magnitudes, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def audio2feat(whisper_path: Path, wav: np.ndarray) -> torch.Tensor:
    """transcribe (30 s segments of the whole log-mel, padded with 0.0) + _audio2feat: (T, 5, 384)."""
    checkpoint = torch.load(whisper_path, map_location="cpu", weights_only=True)
    sd = {k: v.float() for k, v in checkpoint["model_state_dict"].items()}
    heads = checkpoint["dims"]["n_audio_head"]
    mel = log_mel(wav)
    parts = []
    with torch.no_grad():
        for seek in range(0, mel.shape[-1], 3000):
            end = min(seek + 3000, mel.shape[-1])
            segment = mel[:, seek : seek + 3000]
            segment = F.pad(segment, (0, 3000 - segment.shape[-1]))
            embeddings = whisper_encoder(sd, segment[None], heads).numpy()
            embeddings = embeddings.transpose(0, 2, 1, 3).squeeze(0)
            parts.append(embeddings[: int((end - seek) / 2)])
    return torch.from_numpy(np.concatenate(parts, axis=0))


def feature2chunks(feature_array: torch.Tensor, fps: float) -> np.ndarray:
    """Audio2Feature.feature2chunks with get_sliced_feature, audio_feat_length [2, 2]."""
    whisper_chunks = []
    whisper_idx_multiplier = 50.0 / fps
    i = 0
    while True:
        start_idx = int(i * whisper_idx_multiplier)
        length = len(feature_array)
        center_idx = int(i * 50 / fps)
        selected = []
        for idx in range(center_idx - 2 * 2, center_idx + (2 + 1) * 2):
            idx = min(length - 1, max(0, idx))
            selected.append(feature_array[idx])
        whisper_chunks.append(torch.cat(selected, dim=0).reshape(-1, 384))
        i += 1
        if start_idx > len(feature_array):
            break
    return torch.stack(whisper_chunks).numpy()
