"""Where the LatentSync 1.6 files live: LatentSync's own download beside the VAE, under ``models/latentsync/``.

No torch here: ``heygemd check`` and the engine choice look at the files without loading anything.

```
models/latentsync/
  latentsync_unet.pt                 the UNet, from huggingface.co/ByteDance/LatentSync-1.6 (OpenRAIL weights)
  whisper/tiny.pt                    OpenAI's whisper tiny, from the same download (MIT)
  sd-vae-ft-mse/config.json          stabilityai/sd-vae-ft-mse (MIT)
  sd-vae-ft-mse/diffusion_pytorch_model.safetensors   (or diffusion_pytorch_model.bin)
  mask.png                           latentsync/utils/mask.png of github.com/bytedance/LatentSync (Apache-2.0)
  unet_config.yaml                   optional: one of LatentSync's configs/unet/*.yaml; absent: stage2_512.yaml's
                                     model section and 512 px, 16-frame windows (LatentSync 1.6)
```
"""

from __future__ import annotations

from pathlib import Path

from heygemd.engines.model_files import ModelFiles, ModelLayout

FOLDER = "latentsync"
"""The sub-folder of ``paths.models`` holding LatentSync's files."""

UNET_WEIGHTS = "latentsync_unet.pt"
WHISPER_WEIGHTS = "whisper/tiny.pt"
VAE_DIR = "sd-vae-ft-mse"
VAE_CONFIG = f"{VAE_DIR}/config.json"
VAE_WEIGHTS = (f"{VAE_DIR}/diffusion_pytorch_model.safetensors", f"{VAE_DIR}/diffusion_pytorch_model.bin")
MASK = "mask.png"
UNET_CONFIG = "unet_config.yaml"

HINT = (
    "Put LatentSync 1.6's files into models/latentsync/: latentsync_unet.pt and whisper/tiny.pt from "
    "huggingface.co/ByteDance/LatentSync-1.6, sd-vae-ft-mse/ (config.json, diffusion_pytorch_model.safetensors "
    "or .bin) from huggingface.co/stabilityai/sd-vae-ft-mse, and mask.png copied from latentsync/utils/mask.png "
    "of github.com/bytedance/LatentSync; or choose another engine."
)
"""What to do about a missing or broken LatentSync file (the hint of its BAD_CHECKPOINT)."""


LAYOUT = ModelLayout(
    engine="LatentSync",
    required={
        "unet": (UNET_WEIGHTS,),
        "whisper": (WHISPER_WEIGHTS,),
        "vae_config": (VAE_CONFIG,),
        "vae": VAE_WEIGHTS,
        "mask": (MASK,),
    },
    optional={"unet_config": UNET_CONFIG},
    weights=("unet", "unet_config", "vae", "vae_config", "whisper", "mask"),
    hint=HINT,
)


def latentsync_folder(models_dir: Path) -> Path:
    return Path(models_dir) / FOLDER


def find_files(folder: Path) -> ModelFiles:
    """Which of the LatentSync files ``folder`` (``models/latentsync/``) holds; nothing is opened."""
    return LAYOUT.find(folder)
