"""Lip-sync engines behind one interface (see ``base.Engine``).

``musetalk``: MuseTalk 1.5 (256x256 latent inpainting, Whisper features), files in ``models/musetalk/``.
``wav2lip``: the published Wav2Lip generator, checkpoint supplied by the user in ``models/``.
``mouthwarp``: weights-free, audio-driven mouth animation from face landmarks; runs on any CPU.
Importing this package does not import torch: the torch engines are imported only when chosen.
"""

from __future__ import annotations

from pathlib import Path

from heygemd.engines import musetalk_layout
from heygemd.engines.base import Engine, EngineNeeds, FaceBatch, FrameFeatures, PresenterEngine, PromptEngine
from heygemd.errors import CheckpointError, ConfigError
from heygemd.settings import EngineSettings

CHECKPOINT_NAMES = ("wav2lip_gan.pth", "wav2lip.pth")

__all__ = [
    "Engine",
    "EngineNeeds",
    "FaceBatch",
    "FrameFeatures",
    "PresenterEngine",
    "PromptEngine",
    "engine_needs",
    "find_checkpoint",
    "resolve_engine_name",
    "load_engine",
    "CHECKPOINT_NAMES",
]


def find_checkpoint(settings: EngineSettings, models_dir: Path) -> Path | None:
    """The Wav2Lip checkpoint to use: the configured one, else the first official name found in ``models_dir``."""
    if settings.checkpoint is not None:
        return settings.checkpoint
    for name in CHECKPOINT_NAMES:
        candidate = models_dir / name
        if candidate.is_file():
            return candidate
    return None


def resolve_engine_name(settings: EngineSettings, models_dir: Path, requested: str | None = None) -> str:
    """``auto`` becomes ``musetalk`` when ``models/musetalk/`` is complete, else ``wav2lip`` when a checkpoint is
    present, else ``mouthwarp``."""
    name = requested or settings.name
    if name == "auto":
        if musetalk_layout.find_files(musetalk_layout.musetalk_folder(models_dir)).complete:
            return "musetalk"
        return "wav2lip" if find_checkpoint(settings, models_dir) is not None else "mouthwarp"
    return name


def engine_needs(name: str) -> EngineNeeds:
    """What engine ``name`` (not ``auto``) needs, read from its class without loading any weights."""
    if name == "musetalk":
        from heygemd.engines.musetalk import MuseTalkEngine

        return MuseTalkEngine.needs
    if name == "wav2lip":
        from heygemd.engines.wav2lip import Wav2LipEngine

        return Wav2LipEngine.needs
    if name == "mouthwarp":
        from heygemd.engines.mouthwarp import MouthWarpEngine

        return MouthWarpEngine.needs
    raise ConfigError(f"unknown engine {name!r}", hint='Use engine = "auto", "musetalk", "wav2lip" or "mouthwarp".')


def load_engine(settings: EngineSettings, models_dir: Path, requested: str | None = None) -> Engine:
    """Build the engine named by ``requested`` or the settings, warm and ready for ``generate``."""
    name = resolve_engine_name(settings, models_dir, requested)
    if name == "mouthwarp":
        from heygemd.engines.mouthwarp import MouthWarpEngine

        return MouthWarpEngine()
    if name == "wav2lip":
        checkpoint = find_checkpoint(settings, models_dir)
        if checkpoint is None:
            raise CheckpointError(
                f"engine 'wav2lip' needs a checkpoint, but none of {', '.join(CHECKPOINT_NAMES)} is there",
                path=models_dir,
            )
        from heygemd.engines.wav2lip import Wav2LipEngine

        return Wav2LipEngine(
            checkpoint,
            device=settings.device,
            batch_size=settings.batch_size,
            fp16=settings.fp16,
            threads=settings.cpu_threads,
            torch_compile=settings.compile,
        )
    if name == "musetalk":
        from heygemd.engines.musetalk import MuseTalkEngine

        return MuseTalkEngine(
            musetalk_layout.musetalk_folder(models_dir),
            device=settings.device,
            batch_size=settings.batch_size,
            fp16=settings.fp16,
        )
    raise ConfigError(f"unknown engine {name!r}", hint='Use engine = "auto", "musetalk", "wav2lip" or "mouthwarp".')
