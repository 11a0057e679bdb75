"""``heygemd check``: is this machine ready to run jobs? Each check says what is wrong and how to fix it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from heygemd.daemon.library import view
from heygemd.engines import SPECS, ModelFiles, resolve, torch_device_name
from heygemd.errors import ConfigError, HeygemdError
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
        *_engine(settings),
        _faces(settings),
        _device(settings),
        _writable("inbox", settings.paths.inbox),
        _writable("outbox", settings.paths.outbox),
        _library(settings),
        _journald(settings.logging.format),
        *([_broker(settings)] if settings.queue.broker else []),
        _gpu_metrics(),
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


def _engine(settings: Settings) -> list[Check]:
    """The engine in use (does it load, its licence) and the files of every engine that needs some (required for
    the one in use, a note for the others), from the engine registry."""
    models = settings.paths.models
    chosen = resolve(settings.engine, models)
    try:
        loads = Check("engine", True, chosen.verify(settings.engine, models))
    except HeygemdError as exc:
        loads = Check("engine", False, exc.message, exc.hint)
    rows = [loads, Check("licence", True, f"{chosen.name}: {chosen.licence}", required=False)]
    for spec in SPECS:
        if spec.files is not None:
            rows.append(_files(spec.name, spec.files(settings.engine, models), required=spec is chosen))
    return rows


def _files(engine: str, files: ModelFiles, *, required: bool) -> Check:
    name = f"{engine} files"
    if files.complete:
        found = f"{files.names[0]} found" if len(files.names) == 1 else f"all {len(files.names)} files found"
        if not required:  # only the engine in use is loaded above
            found += f" (not loaded: HEYGEMD_ENGINE__NAME={engine} heygemd check loads them)"
        return Check(name, True, f"{files.folder}: {found}", required=required)
    found = ", ".join(files.names) or "none"
    return Check(
        name,
        False,
        f"{files.folder}: missing {', '.join(files.missing)} (found: {found})",
        files.hint,
        required=required,
    )


def _faces(settings: Settings) -> Check:
    import numpy as np

    from heygemd.pipeline import faces

    try:
        detector = faces.make_detector(
            settings.faces.detector,
            settings.paths.models,
            settings.paths.cache_dir,
            device=settings.engine.device,
            resolve_device=torch_device_name,
        )
        # A render reads the landmark model only at its first face; the check reads it now.
        detector.landmarks(np.zeros((64, 64, 3), dtype=np.uint8), np.array([8, 8, 56, 56], dtype=np.float32))
    except HeygemdError as exc:
        return Check("face detector", False, exc.message, exc.hint)
    return Check("face detector", True, f"{detector.name} (its landmark model reads)")


def _device(settings: Settings) -> Check:
    engine = resolve(settings.engine, settings.paths.models)
    if not engine.on_device:
        return Check("device", True, f"cpu ({engine.name} runs on the CPU)")
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


def _library(settings: Settings) -> Check:
    """The presenter library: where it is, how many presenters it holds and in what state (not required: a daemon
    without one renders the jobs' own videos)."""
    folder = settings.paths.presenters_dir
    if not folder.is_dir():
        return Check(
            "presenters",
            False,
            f"{folder} does not exist",
            "the daemon makes it at start; or make it, or set [paths] presenters",
            required=False,
        )
    try:
        states = [p.state for p in view(settings)]
    except OSError as exc:
        return Check(
            "presenters",
            False,
            f"{folder}: {exc.strerror or exc}",
            f"give the heygemd user read and write access to {folder} (chown/chmod, or the share's ACL)",
            required=False,
        )
    counts = ", ".join(f"{states.count(s)} {s}" for s in ("ready", "preparing", "failed") if states.count(s))
    return Check("presenters", True, f"{folder}: {len(states)} presenter(s)" + (f" ({counts})" if counts else ""))


def _journald(log_format: str) -> Check:
    from heygemd.logs import journal_problem

    if log_format in ("json", "console"):  # chosen on purpose (a container logs JSON lines): nothing to warn about
        return Check("journald", True, f"not used: logging.format = {log_format!r}")
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
    from heygemd.farm.broker import Broker, shown_url

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


def _gpu_metrics() -> Check:
    """Whether /metrics (and a farm worker's metrics port) export this machine's NVIDIA GPUs, and why not."""
    from heygemd.metrics.gpu import describe_gpus

    exported, detail = describe_gpus()
    if not exported:
        return Check(
            "GPU metrics",
            False,
            f"not exported: {detail}",
            "on a server with NVIDIA GPUs install the driver (it brings libnvidia-ml.so.1; nvidia-smi must work); "
            "a server without one needs nothing",
            required=False,
        )
    return Check("GPU metrics", True, detail)
