"""Where the MuseTalk 1.5 files live: MuseTalk's own download layout under ``models/musetalk/``.

No torch here: ``heygemd check`` and the ``auto`` engine choice look at the files without loading anything.

```
models/musetalk/
  musetalkV15/musetalk.json   musetalkV15/unet.pth                 the v1.5 UNet: config + bare state_dict
  sd-vae/config.json          sd-vae/diffusion_pytorch_model.bin   stabilityai/sd-vae-ft-mse (.bin or .safetensors)
  whisper/config.json         whisper/pytorch_model.bin            openai/whisper-tiny (.bin or .safetensors)
  whisper/preprocessor_config.json
```
"""

from __future__ import annotations

from pathlib import Path

from heygemd.engines.model_files import ModelFiles, ModelLayout

FOLDER = "musetalk"
"""The sub-folder of ``paths.models`` holding MuseTalk's files."""

UNET_DIR, VAE_DIR, WHISPER_DIR = "musetalkV15", "sd-vae", "whisper"
UNET_CONFIG = f"{UNET_DIR}/musetalk.json"
UNET_WEIGHTS = f"{UNET_DIR}/unet.pth"
VAE_CONFIG = f"{VAE_DIR}/config.json"
VAE_WEIGHTS = (f"{VAE_DIR}/diffusion_pytorch_model.safetensors", f"{VAE_DIR}/diffusion_pytorch_model.bin")
WHISPER_CONFIG = f"{WHISPER_DIR}/config.json"
WHISPER_PREPROCESSOR = f"{WHISPER_DIR}/preprocessor_config.json"
WHISPER_WEIGHTS = (f"{WHISPER_DIR}/model.safetensors", f"{WHISPER_DIR}/pytorch_model.bin")

HINT = (
    "Copy MuseTalk's model folders into models/musetalk/ as its download_weights.sh lays them out: "
    "musetalkV15/ (musetalk.json, unet.pth) from huggingface.co/TMElyralab/MuseTalk, sd-vae/ (config.json, "
    "diffusion_pytorch_model.bin) from stabilityai/sd-vae-ft-mse, whisper/ (config.json, pytorch_model.bin, "
    'preprocessor_config.json) from openai/whisper-tiny; or choose engine = "wav2lip" or "mouthwarp".'
)
"""What to do about a missing or broken MuseTalk file (the hint of its BAD_CHECKPOINT)."""


LAYOUT = ModelLayout(
    engine="MuseTalk",
    required={
        "unet_config": (UNET_CONFIG,),
        "unet": (UNET_WEIGHTS,),
        "vae_config": (VAE_CONFIG,),
        "vae": VAE_WEIGHTS,
        "whisper_config": (WHISPER_CONFIG,),
        "whisper": WHISPER_WEIGHTS,
        "whisper_preprocessor": (WHISPER_PREPROCESSOR,),
    },
    weights=("unet", "vae", "whisper"),
    hint=HINT,
)


def musetalk_folder(models_dir: Path) -> Path:
    return Path(models_dir) / FOLDER


def find_files(folder: Path) -> ModelFiles:
    """Which of the MuseTalk files ``folder`` (``models/musetalk/``) holds; nothing is opened."""
    return LAYOUT.find(folder)
