"""The engine registry: one spec per lip-sync engine, the one table every list of engines is derived from.

The names themselves live on the ground floor (``heygemd.engine_names``, so settings need not import this
package); the CLI's ``--engine`` choices, the settings' and job.toml's type, the web form, the API's enums and the
hints all come from there, and this table must list the same names in the same order (checked at import).

Each :class:`EngineSpec` says, for one engine:

- ``files``: what it needs in ``paths.models``, what is found, what is missing and where it goes (the
  ``<name> files`` row of ``heygemd check``);
- ``available``: whether ``auto`` may choose it now. ``auto`` takes the first engine of this table that is
  available; an engine without ``available`` is only ever chosen by name;
- ``load``: the engine built from the settings (its module is imported only then: torch only for the engine in
  use);
- ``verify``, ``on_device``, ``licence``: the ``engine``, ``device`` and ``licence`` rows of ``heygemd check``;
- ``configure``: the settings that may change per job (job.toml) set on the loaded engine, and the parameters
  that shape its pictures besides the weights, as status.json records them;
- ``engine_class``: its class, whose ``needs`` (``pipeline.engine_contract.EngineNeeds``) declare the audio
  features, the crop rule, the colour match, the presenter preparation and the footage warnings.

A new engine is its own module (a class implementing ``pipeline.engine_contract.Engine``), its name in
``heygemd.engine_names.EngineId``, and its spec in ``SPECS`` below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from heygemd.engine_names import AUTO, CHOICES, ENGINES, listed
from heygemd.engines import latentsync_layout, musetalk_layout
from heygemd.engines.model_files import ModelFiles, ModelLayout
from heygemd.errors import CheckpointError, ConfigError, EngineNotInstalled
from heygemd.pipeline.engine_contract import Engine, EngineNeeds
from heygemd.settings import EngineSettings

if TYPE_CHECKING:
    from heygemd.engines.latentsync import LatentSyncEngine, Sampling
    from heygemd.engines.mouthwarp import MouthWarpEngine
    from heygemd.engines.musetalk import MuseTalkEngine
    from heygemd.engines.wav2lip import Wav2LipEngine


EngineParameters = dict[str, int | float | bool]
"""What shapes an engine's pictures besides its weights (LatentSync: steps, guidance, seed, deepcache)."""


@dataclass(frozen=True)
class EngineSpec:
    """One engine, as the rest of heygemd knows it (see the module docstring)."""

    name: str
    licence: str
    """Under which terms its code and weights may be used (``heygemd check``'s ``licence`` row)."""
    engine_class: Callable[[], type[Engine]]
    """Its class, imported on call (for musetalk and wav2lip that imports torch)."""
    load: Callable[[EngineSettings, Path], Engine]
    """The engine built from the settings and ``paths.models``, warm and ready for ``generate``."""
    verify: Callable[[EngineSettings, Path], str]
    """``heygemd check``'s ``engine`` row when it is the engine in use: what was found and loads, or a
    HeygemdError saying what is wrong and what to do."""
    files: Callable[[EngineSettings, Path], ModelFiles] | None = None
    """The files it needs in ``paths.models``; None: it needs none."""
    available: Callable[[EngineSettings, Path], bool] | None = None
    """Whether ``auto`` may choose it now (its files are there); None: ``auto`` never chooses it (it is chosen on
    purpose)."""
    on_device: bool = True
    """It runs on ``engine.device`` (a torch engine); False: on the CPU whatever the setting."""
    configure: Callable[[Engine, EngineSettings], EngineParameters] | None = None
    """Sets the settings a job may change (job.toml's ``latentsync_steps``, ...) on the loaded engine, and returns
    the parameters that shape its pictures besides the weights, by the names status.json records them
    (``engine_parameters``); None: it has none."""

    def needs(self) -> EngineNeeds:
        """What it needs of the pipeline, read from its class without loading any weights."""
        return self.engine_class().needs


# ------------------------------------------------------------------ musetalk


def _musetalk_class() -> type[MuseTalkEngine]:
    from heygemd.engines.musetalk import MuseTalkEngine  # torch, diffusers: only when MuseTalk is in use

    return MuseTalkEngine


def _musetalk_files(settings: EngineSettings, models_dir: Path) -> ModelFiles:
    return musetalk_layout.find_files(musetalk_layout.musetalk_folder(models_dir))


def _musetalk_complete(settings: EngineSettings, models_dir: Path) -> bool:
    return _musetalk_files(settings, models_dir).complete


def _load_musetalk(settings: EngineSettings, models_dir: Path) -> MuseTalkEngine:
    return _musetalk_class()(
        musetalk_layout.musetalk_folder(models_dir),
        device=settings.device,
        batch_size=settings.batch_size,
        fp16=settings.fp16,
    )


def _verify_musetalk(settings: EngineSettings, models_dir: Path) -> str:
    folder = musetalk_layout.musetalk_folder(models_dir)
    from heygemd.engines.musetalk import load_model  # torch, diffusers: only when MuseTalk is in use

    model = load_model(folder, device="cpu")  # every file opened, every UNet tensor checked, as at start
    size_gb = sum(p.stat().st_size for p in model.files.weights) / 1e9
    model.close()
    return f"musetalk, {folder} ({size_gb:.1f} GB of weights) loads"


# ------------------------------------------------------------------ wav2lip

CHECKPOINT_NAMES = ("wav2lip_gan.pth", "wav2lip.pth")


def find_checkpoint(settings: EngineSettings, models_dir: Path) -> Path | None:
    """The Wav2Lip checkpoint to use: the configured one, else the first official name found in ``models_dir``."""
    if settings.checkpoint is not None:
        return settings.checkpoint
    for name in CHECKPOINT_NAMES:
        candidate = models_dir / name
        if candidate.is_file():
            return candidate
    return None


def _wav2lip_class() -> type[Wav2LipEngine]:
    from heygemd.engines.wav2lip import Wav2LipEngine  # torch: only when the Wav2Lip engine is in use

    return Wav2LipEngine


def _wav2lip_files(settings: EngineSettings, models_dir: Path) -> ModelFiles:
    if settings.checkpoint is not None:
        hint = f"Put the Wav2Lip checkpoint at {settings.checkpoint}, or correct engine.checkpoint."
        return ModelLayout("Wav2Lip", {"checkpoint": (settings.checkpoint.name,)}, hint).find(
            settings.checkpoint.parent
        )
    hint = (
        f"Put the official Wav2Lip checkpoint ({' or '.join(CHECKPOINT_NAMES)}, about 416 MB, from the "
        f"Rudrabha/Wav2Lip README) in {models_dir}."
    )
    return ModelLayout("Wav2Lip", {"checkpoint": CHECKPOINT_NAMES}, hint).find(models_dir)


def _wav2lip_found(settings: EngineSettings, models_dir: Path) -> bool:
    return find_checkpoint(settings, models_dir) is not None


def _load_wav2lip(settings: EngineSettings, models_dir: Path) -> Wav2LipEngine:
    checkpoint = find_checkpoint(settings, models_dir)
    if checkpoint is None:
        raise CheckpointError(
            f"engine 'wav2lip' needs a checkpoint, but none of {', '.join(CHECKPOINT_NAMES)} is there",
            path=models_dir,
        )
    return _wav2lip_class()(
        checkpoint,
        device=settings.device,
        batch_size=settings.batch_size,
        fp16=settings.fp16,
        threads=settings.cpu_threads,
        torch_compile=settings.compile,
    )


def _verify_wav2lip(settings: EngineSettings, models_dir: Path) -> str:
    checkpoint = find_checkpoint(settings, models_dir)
    if checkpoint is None or not checkpoint.is_file():
        wanted = checkpoint or ", ".join(CHECKPOINT_NAMES)
        raise CheckpointError(
            f"wav2lip selected but no checkpoint ({wanted})",
            hint=f'copy wav2lip_gan.pth into {models_dir}, or set engine.name = "mouthwarp"',
        )
    from heygemd.engines.wav2lip import load_model  # torch: only when the Wav2Lip engine is in use

    load_model(checkpoint, device="cpu")  # every key and shape checked, as the daemon will at start
    size_mb = checkpoint.stat().st_size / 1e6
    return f"wav2lip, checkpoint {checkpoint} ({size_mb:.0f} MB) loads"


# ------------------------------------------------------------------ mouthwarp


def _mouthwarp_class() -> type[MouthWarpEngine]:
    from heygemd.engines.mouthwarp import MouthWarpEngine

    return MouthWarpEngine


def _load_mouthwarp(settings: EngineSettings, models_dir: Path) -> MouthWarpEngine:
    return _mouthwarp_class()()


def _verify_mouthwarp(settings: EngineSettings, models_dir: Path) -> str:
    return "mouthwarp (weights-free; put wav2lip_gan.pth in models/ for Wav2Lip)"


def _always(settings: EngineSettings, models_dir: Path) -> bool:
    return True


# ------------------------------------------------------------------ latentsync


def _latentsync_class() -> type[LatentSyncEngine]:
    from heygemd.engines.latentsync import LatentSyncEngine  # torch, diffusers: only when LatentSync is in use

    return LatentSyncEngine


def _latentsync_files(settings: EngineSettings, models_dir: Path) -> ModelFiles:
    return latentsync_layout.find_files(latentsync_layout.latentsync_folder(models_dir))


def _latentsync_sampling(settings: EngineSettings) -> Sampling:
    from heygemd.engines.latentsync import Sampling

    return Sampling(
        steps=settings.latentsync_steps,
        guidance=settings.latentsync_guidance,
        seed=settings.latentsync_seed,
        deepcache=settings.latentsync_deepcache,
    )


def _load_latentsync(settings: EngineSettings, models_dir: Path) -> LatentSyncEngine:
    return _latentsync_class()(
        latentsync_layout.latentsync_folder(models_dir),
        device=settings.device,
        batch_size=settings.batch_size,
        fp16=settings.fp16,
        sampling=_latentsync_sampling(settings),
    )


def _verify_latentsync(settings: EngineSettings, models_dir: Path) -> str:
    folder = latentsync_layout.latentsync_folder(models_dir)
    from heygemd.engines.latentsync import load_model  # torch, diffusers: only when LatentSync is in use

    model = load_model(folder, device="cpu")  # every file opened, every tensor checked, as at start
    size_gb = sum(p.stat().st_size for p in model.files.weights) / 1e9
    model.close()
    return f"latentsync, {folder} ({size_gb:.1f} GB of weights) loads"


def _configure_latentsync(engine: Engine, settings: EngineSettings) -> EngineParameters:
    sampling = _latentsync_sampling(settings)
    engine.sampling = sampling  # type: ignore[attr-defined]  # a LatentSyncEngine: this spec loaded it
    return {
        "steps": sampling.steps,
        "guidance": sampling.guidance,
        "seed": sampling.seed,
        "deepcache": sampling.deepcache,
    }


# ------------------------------------------------------------------ the table

SPECS: tuple[EngineSpec, ...] = (
    EngineSpec(
        name="musetalk",
        licence="code MIT; MuseTalk 1.5 weights: 'any purpose, even commercially' (its README) and "
        "creativeml-openrail-m (its model card): check both for your use; sd-vae-ft-mse MIT; whisper-tiny MIT",
        engine_class=_musetalk_class,
        load=_load_musetalk,
        verify=_verify_musetalk,
        files=_musetalk_files,
        available=_musetalk_complete,
    ),
    EngineSpec(
        name="wav2lip",
        licence="the official Wav2Lip checkpoints: research and non-commercial use only",
        engine_class=_wav2lip_class,
        load=_load_wav2lip,
        verify=_verify_wav2lip,
        files=_wav2lip_files,
        available=_wav2lip_found,
    ),
    EngineSpec(
        name="mouthwarp",
        licence="heygemd's own code, no weights",
        engine_class=_mouthwarp_class,
        load=_load_mouthwarp,
        verify=_verify_mouthwarp,
        available=_always,
        on_device=False,
    ),
    EngineSpec(
        name="latentsync",
        licence="heygemd's code Apache-2.0 (mask.png: LatentSync's file, Apache-2.0, keep its attribution); "
        "LatentSync 1.6 UNet weights OpenRAIL: commercial use allowed, its use restrictions must be passed on to "
        "your users (check the model card of the copy you download); whisper tiny MIT; sd-vae-ft-mse MIT; no "
        "InsightFace or other non-commercial model",
        engine_class=_latentsync_class,
        load=_load_latentsync,
        verify=_verify_latentsync,
        files=_latentsync_files,
        configure=_configure_latentsync,
    ),
)
"""Every engine, in the order ``auto`` tries them (those with ``available``; LatentSync, slower and sharper, is only
ever chosen by name)."""

if tuple(spec.name for spec in SPECS) != ENGINES:
    raise RuntimeError(f"the engine registry lists {[s.name for s in SPECS]}, engine_names.ENGINES {list(ENGINES)}")

_BY_NAME = {spec.name: spec for spec in SPECS}


def spec_named(name: str) -> EngineSpec:
    """The spec of engine ``name`` (not ``auto``); ConfigError for a name no engine has."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown engine {name!r}", hint=f"Use engine = {listed(CHOICES)}.") from None


def resolve(settings: EngineSettings, models_dir: Path, requested: str | None = None) -> EngineSpec:
    """The engine named by ``requested`` or the settings; ``auto``: the first of ``SPECS`` available now."""
    name = requested or settings.name
    if name != AUTO:
        return spec_named(name)
    for spec in SPECS:
        if spec.available is not None and spec.available(settings, models_dir):
            return spec
    raise ConfigError(f'engine = "{AUTO}" found no engine it may choose', hint=f"Name one: engine = {listed(ENGINES)}.")


def available_names(settings: EngineSettings, models_dir: Path) -> tuple[str, ...]:
    """The engines ``auto`` may choose now (their files are there), in its order."""
    return tuple(spec.name for spec in SPECS if spec.available is not None and spec.available(settings, models_dir))


def installed_names(settings: EngineSettings, models_dir: Path) -> tuple[str, ...]:
    """The engines a process with these settings can run: those whose files are all in ``paths.models`` (one that
    needs none always), in ``auto``'s order."""
    return tuple(spec.name for spec in SPECS if spec.files is None or spec.files(settings, models_dir).complete)


def check_installed(name: str, settings: EngineSettings, models_dir: Path) -> None:
    """EngineNotInstalled, naming the files missing and where they go, when engine ``name`` lacks any."""
    spec = spec_named(name)
    files = spec.files(settings, models_dir) if spec.files is not None else None
    if files is None or files.complete:
        return
    try:
        where = f"{files.folder.relative_to(models_dir.parent).as_posix()}/"  # models/musetalk/, as the admin knows it
    except ValueError:
        where = f"{files.folder}/"
    raise EngineNotInstalled(
        f"engine {name!r} is not installed: {where} lacks {', '.join(files.missing)}",
        hint=f"{files.hint} `heygemd check` lists what is there.",
    )


def resolve_engine_name(settings: EngineSettings, models_dir: Path, requested: str | None = None) -> str:
    """``resolve``'s engine name (what status.json and the dashboard show)."""
    return resolve(settings, models_dir, requested).name
