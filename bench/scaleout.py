"""``python -m bench --scale-out N``: the farm's throughput with N workers against one worker.

Each round starts its own redis-server (127.0.0.1, a free port, no persistence), the intake (``heygemd run``
with ``[queue] broker``) and 1 or N ``heygemd worker`` processes (engine mouthwarp, CPU) on fresh folders;
once every worker is ready, the same batch of jobs is dropped into the inbox at once, and the time until every
job's status.json says finished is measured. Stdlib only here: the processes are real heygemd ones.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

EFFICIENCY_TARGET = 0.9
"""Goal of issue 10: N workers on N cores give at least 0.9 x N the throughput of one (less ffmpeg's cores)."""

START_TIMEOUT_S = 300.0
FINISHED = ("done", "partial", "failed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _events(log: Path) -> list[dict]:
    events = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _round(workers: int, jobs: int, video: Path, audio: Path, root: Path) -> dict:
    """One farm with ``workers`` workers; the seconds it takes for ``jobs`` jobs."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise SystemExit("bench: redis-server not found (deploy/setup.sh installs it)")
    root.mkdir(parents=True)
    port = _free_port()
    config = root / "heygemd.toml"
    config.write_text(
        f"""
[paths]
inbox = "inbox"
outbox = "outbox"
models = "models"
[intake]
observer = "inotify"
rescan_interval = 1.0
[engine]
name = "mouthwarp"
device = "cpu"
[queue]
broker = "redis://127.0.0.1:{port}/0"
heartbeat_interval = 2.0
""",
        encoding="utf-8",
    )
    for folder in ("inbox", "outbox", "models", "staging"):
        (root / folder).mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEYGEMD_")}
    env["HEYGEMD_LOGGING__FORMAT"] = "json"
    heygemd = [sys.executable, "-m", "heygemd", "--config", str(config)]
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(argv: list[str], log: Path) -> None:
        with open(log, "wb") as out:
            procs.append(
                subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=root,
                    env=env,
                    start_new_session=True,
                )
            )

    try:
        spawn(
            [
                redis_server,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(root),
            ],
            root / "redis.log",
        )
        spawn([*heygemd, "run"], root / "intake.log")
        logs = [root / f"worker-{i}.log" for i in range(workers)]
        for i, log in enumerate(logs):
            spawn([*heygemd, "worker", "--name", f"w{i}@bench"], log)
        _wait(
            lambda: (
                all(any(e.get("event") == "worker.ready" for e in _events(log)) for log in logs)
                and any(e.get("event") == "daemon.ready" for e in _events(root / "intake.log"))
            ),
            START_TIMEOUT_S,
            "the intake and the workers to be ready",
        )
        names = [f"job-{n:02d}" for n in range(jobs)]
        for name in names:
            folder = root / "staging" / name
            folder.mkdir()
            shutil.copyfile(audio, folder / "speech.wav")
            shutil.copyfile(video, folder / "presenter.mp4")
            (folder / ".ready").touch()
        started = time.perf_counter()
        for name in names:
            os.rename(root / "staging" / name, root / "inbox" / name)

        def all_finished() -> bool:
            for name in names:
                try:
                    status = json.loads((root / "outbox" / name / "status.json").read_bytes())
                except (FileNotFoundError, json.JSONDecodeError):
                    return False
                if status.get("state") not in FINISHED or not status.get("finished"):
                    return False
            return True

        _wait(all_finished, 60.0 * jobs, f"{jobs} jobs to finish")
        seconds = time.perf_counter() - started
        states = [json.loads((root / "outbox" / n / "status.json").read_bytes())["state"] for n in names]
        ran_on = sorted({json.loads((root / "outbox" / n / "status.json").read_bytes())["worker"] for n in names})
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return {
        "workers": workers,
        "jobs": jobs,
        "seconds": round(seconds, 2),
        "jobs_per_min": round(60.0 * jobs / seconds, 2),
        "states": sorted(set(states)),
        "ran_on": ran_on,
    }


def scale_out(args: argparse.Namespace, work: Path, video: Path, audio: Path) -> dict:
    """Rounds with 1 and with ``args.scale_out`` workers on the same batch; their throughput ratio."""
    n = args.scale_out
    jobs = args.jobs or 3 * n
    one = _round(1, jobs, video, audio, work / "farm-one")
    many = _round(n, jobs, video, audio, work / "farm-many")
    speedup = many["jobs_per_min"] / one["jobs_per_min"]
    return {
        "mode": "scale-out",
        "cpu_count": os.cpu_count(),
        "rounds": [one, many],
        "speedup": round(speedup, 2),
        "efficiency": round(speedup / n, 2),
        "target_efficiency": EFFICIENCY_TARGET,
    }


def format_scale_out(r: dict) -> str:
    one, many = r["rounds"]
    lines = [f"scale-out: {one['jobs']} jobs, mouthwarp on CPU ({r['cpu_count']} cores)"]
    for row in r["rounds"]:
        lines.append(
            f"  {row['workers']} worker(s): {row['seconds']:.1f} s, {row['jobs_per_min']:.1f} jobs/min "
            f"(states {', '.join(row['states'])}; ran on {', '.join(row['ran_on'])})"
        )
    lines.append(
        f"  speedup {r['speedup']:.2f}x with {many['workers']} workers = {r['efficiency']:.2f} per worker "
        f"(goal >= {r['target_efficiency']} per worker, on as many free cores plus ffmpeg's)"
    )
    return "\n".join(lines)
