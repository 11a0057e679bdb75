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

from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class LatentSyncFiles:
    """The files of one ``models/latentsync/`` folder: those found and those missing (relative names)."""

    folder: Path
    found: dict[str, Path]
    """Role (``unet``, ``whisper``, ``vae_config``, ``vae``, ``mask``, and ``unet_config`` when present) -> the
    file found for it."""
    missing: list[str]
    """Relative names of the required files not there (for alternatives: ``a.safetensors or a.bin``)."""

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def weights(self) -> list[Path]:
        """Every file that shapes the output, in a fixed order (their hash is the engine's identity)."""
        roles = ("unet", "unet_config", "vae", "vae_config", "whisper", "mask")
        return [self.found[role] for role in roles if role in self.found]

    def __getitem__(self, role: str) -> Path:
        return self.found[role]


_REQUIRED: dict[str, tuple[str, ...]] = {
    "unet": (UNET_WEIGHTS,),
    "whisper": (WHISPER_WEIGHTS,),
    "vae_config": (VAE_CONFIG,),
    "vae": VAE_WEIGHTS,
    "mask": (MASK,),
}


def latentsync_folder(models_dir: Path) -> Path:
    return Path(models_dir) / FOLDER


def find_files(folder: Path) -> LatentSyncFiles:
    """Which of the LatentSync files ``folder`` (``models/latentsync/``) holds; nothing is opened."""
    folder = Path(folder)
    found: dict[str, Path] = {}
    missing: list[str] = []
    for role, names in _REQUIRED.items():
        present = [folder / name for name in names if (folder / name).is_file()]
        if present:
            found[role] = present[0]
        else:
            missing.append(" or ".join(names))
    if (folder / UNET_CONFIG).is_file():
        found["unet_config"] = folder / UNET_CONFIG
    return LatentSyncFiles(folder=folder, found=found, missing=missing)
