"""``heygemd check``: is this machine ready to run jobs? Each check says what is wrong and how to fix it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from heygemd.engines import CHECKPOINT_NAMES, find_checkpoint, musetalk_layout, resolve_engine_name
from heygemd.errors import CheckpointError, ConfigError, HeygemdError
from heygemd.names import printable
from heygemd.settings import Settings


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True
    """A failed optional check is a warning: heygemd still runs (e.g. without journald it logs to stderr)."""


def run_checks(settings: Settings) -> list[Check]:
    return [
        *_tools(),
        _engine(settings),
        _musetalk_files(settings),
        _faces(settings),
        _device(settings),
        _writable("inbox", settings.paths.inbox),
        _writable("outbox", settings.paths.outbox),
        _journald(),
        *([_broker(settings)] if settings.queue.broker else []),
    ]


def all_required_ok(checks: list[Check]) -> bool:
    return all(check.ok for check in checks if check.required)


def format_checks(checks: list[Check]) -> str:
    lines = []
    for check in checks:
        mark = "ok  " if check.ok else ("FAIL" if check.required else "warn")
        lines.append(f"{mark}  {check.name}: {check.detail}")
        if not check.ok and check.fix:
            lines.append(f"      fix: {check.fix}")
    return "\n".join(printable(line) for line in lines)


def _tools() -> list[Check]:
    checks = []
    for tool in ("ffmpeg", "ffprobe"):
        path = shutil.which(tool)
        checks.append(
            Check(
                tool,
                path is not None,
                path or "not found on PATH",
                "sudo apt-get install ffmpeg (it provides ffprobe too)",
            )
        )
    return checks


def _engine(settings: Settings) -> Check:
    name = resolve_engine_name(settings.engine, settings.paths.models)
    if name == "mouthwarp":
        return Check("engine", True, "mouthwarp (weights-free; put wav2lip_gan.pth in models/ for Wav2Lip)")
    if name == "musetalk":
        return _musetalk_loads(settings)
    checkpoint = find_checkpoint(settings.engine, settings.paths.models)
    if checkpoint is None or not checkpoint.is_file():
        wanted = checkpoint or ", ".join(CHECKPOINT_NAMES)
        return Check(
            "engine",
            False,
            f"wav2lip selected but no checkpoint ({wanted})",
            f'copy wav2lip_gan.pth into {settings.paths.models}, or set engine.name = "mouthwarp"',
        )
    from heygemd.engines.wav2lip import load_model  # torch: only when the Wav2Lip engine is in use

    try:
        load_model(checkpoint, device="cpu")  # every key and shape checked, as the daemon will at start
    except CheckpointError as exc:
        return Check("engine", False, exc.message, exc.hint)
    size_mb = checkpoint.stat().st_size / 1e6
    return Check("engine", True, f"wav2lip, checkpoint {checkpoint} ({size_mb:.0f} MB) loads")


def _musetalk_files(settings: Settings) -> Check:
    """Which MuseTalk files are in models/musetalk/: required when musetalk is chosen, a note otherwise."""
    folder = musetalk_layout.musetalk_folder(settings.paths.models)
    files = musetalk_layout.find_files(folder)
    chosen = resolve_engine_name(settings.engine, settings.paths.models) == "musetalk"
    if files.complete:
        return Check("musetalk files", True, f"{folder}: all {len(files.found)} files found", required=chosen)
    found = ", ".join(str(p.relative_to(folder)) for p in files.found.values()) or "none"
    return Check(
        "musetalk files",
        False,
        f"{folder}: missing {', '.join(files.missing)} (found: {found})",
        musetalk_layout.HINT,
        required=chosen,
    )


def _musetalk_loads(settings: Settings) -> Check:
    folder = musetalk_layout.musetalk_folder(settings.paths.models)
    from heygemd.engines.musetalk import load_model  # torch, diffusers: only when MuseTalk is in use

    try:
        model = load_model(folder, device="cpu")  # every file opened, every UNet tensor checked, as at start
    except CheckpointError as exc:
        return Check("engine", False, exc.message, exc.hint)
    size_gb = sum(p.stat().st_size for p in model.files.weights) / 1e9
    model.close()
    return Check("engine", True, f"musetalk, {folder} ({size_gb:.1f} GB of weights) loads")


def _faces(settings: Settings) -> Check:
    import numpy as np

    from heygemd.pipeline import faces

    try:
        detector = faces.make_detector(
            settings.faces.detector, settings.paths.models, settings.paths.cache_dir, device=settings.engine.device
        )
        # A render reads the landmark model only at its first face; the check reads it now.
        detector.landmarks(np.zeros((64, 64, 3), dtype=np.uint8), np.array([8, 8, 56, 56], dtype=np.float32))
    except HeygemdError as exc:
        return Check("face detector", False, exc.message, exc.hint)
    return Check("face detector", True, f"{detector.name} (its landmark model reads)")


def _device(settings: Settings) -> Check:
    name = resolve_engine_name(settings.engine, settings.paths.models)
    if name == "mouthwarp":
        return Check("device", True, "cpu (mouthwarp runs on the CPU)")
    from heygemd.engines.torch_device import describe_device

    try:
        return Check("device", True, describe_device(settings.engine.device))
    except ConfigError as exc:
        return Check("device", False, exc.message, exc.hint)


def _writable(label: str, folder: Path) -> Check:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".heygemd-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return Check(
            label,
            False,
            f"{folder}: {exc.strerror or exc}",
            f"create {folder} and give the heygemd user write access (chown/chmod, or the share's ACL)",
        )
    return Check(label, True, f"{folder} is writable")


def _journald() -> Check:
    from heygemd.logs import journal_problem

    problem = journal_problem()
    if problem is not None:
        return Check(
            "journald",
            False,
            f"{problem}: logs go to stderr as JSON lines",
            "run heygemd under systemd (deploy/systemd/heygemd.service) to log to the journal",
            required=False,
        )
    return Check("journald", True, "reachable")


def _broker(settings: Settings) -> Check:
    """The farm's Redis (only when ``queue.broker`` is set): the intake claims nothing while it is unreachable."""
    from heygemd.queue.broker import Broker, shown_url

    shown = shown_url(settings.queue.broker)
    problem = Broker(settings.queue.broker).problem()
    if problem is not None:
        return Check(
            "broker",
            False,
            f"{shown}: {problem}",
            "start redis-server on the queue host (systemctl start redis-server) and check queue.broker "
            "(host, port, password); jobs wait in the inbox meanwhile",
        )
    return Check("broker", True, f"{shown} answers")
