"""deploy/systemd: the worker template and the intake unit keep the daemon unit's hardening and pass
`systemd-analyze verify`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.test_unit_file import DEPLOY, UNIT, needs_systemd_analyze, one, parse_unit, values

WORKER = DEPLOY / "heygemd-worker@.service"
INTAKE = DEPLOY / "heygemd-intake.service"
HARDENING = (
    "NoNewPrivileges",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectControlGroups",
    "RestrictNamespaces",
    "CapabilityBoundingSet",
    "SystemCallFilter",
    "RestrictAddressFamilies",
    "ProtectProc",
    "User",
    "UMask",
    "ReadWritePaths",
)


def test_worker_template_is_one_instance_per_gpu_with_the_daemons_hardening() -> None:
    daemon, worker = parse_unit(UNIT.read_text()), parse_unit(WORKER.read_text())
    exec_start = one(worker, "Service", "ExecStart").split()
    assert exec_start[-5:] == ["worker", "--device", "cuda:%i", "--name", "cuda-%i@%H"]
    for key in (
        *HARDENING,
        "DeviceAllow",
        "DevicePolicy",
        "SupplementaryGroups",
        "KillMode",
        "TimeoutStopSec",
        "WatchdogSec",
    ):
        assert values(worker, "Service", key) == values(daemon, "Service", key), key
    assert one(worker, "Service", "Type") == "notify"


def test_intake_unit_runs_the_daemon_without_devices() -> None:
    daemon, intake = parse_unit(UNIT.read_text()), parse_unit(INTAKE.read_text())
    assert one(intake, "Service", "ExecStart") == one(daemon, "Service", "ExecStart")
    assert one(intake, "Unit", "Conflicts") == "heygemd.service"
    for key in HARDENING:
        assert values(intake, "Service", key) == values(daemon, "Service", key), key
    assert one(intake, "Service", "PrivateDevices") == "yes" and not values(intake, "Service", "DeviceAllow")


@needs_systemd_analyze
def test_farm_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    for source, name in ((WORKER, "heygemd-worker@0.service"), (INTAKE, "heygemd-intake.service")):
        unit = tmp_path / name
        unit.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={sys.executable}", source.read_text(), flags=re.M))
        done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
        lines = [
            line
            for line in (done.stdout + done.stderr).splitlines()
            if line and "RestartSteps" not in line and "RestartMaxDelaySec" not in line
        ]
        assert done.returncode == 0 and not lines, (name, lines)
