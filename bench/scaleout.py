"""``python -m bench --scale-out N``: the farm's throughput with N workers against one worker.

Each round starts its own redis-server (127.0.0.1, a free port, no persistence), the intake (``heygemd run``
with ``[queue] broker``) and 1 or N ``heygemd worker`` processes (engine mouthwarp, CPU) on fresh folders;
once every worker is ready, the same batch of jobs is dropped into the inbox at once, and the time until every
job's status.json says finished is measured. Stdlib only here: the processes are real heygemd ones.

The queue's own overhead does not depend on free cores, so it is measured per job from the timestamps the
processes write: **dispatch** = from the moment the job could start (published by the intake, ``job.published``,
or its worker free again after its previous job, that job's status.json ``finished``; whichever is later) to
the worker taking it (``job.taken``); **finish** = from the end of the job's last video (its ``finished`` in
status.json) to status.json ``finished``. Both are also given as % of the job's render time (status.json
``started`` to the end of its last video). For the rest of a round's time: **setup** = ``job.taken`` to
status.json ``started`` (the worker reads the job and writes its first status), **intake** = from dropping the
batch into the inbox to each job's ``job.published`` (inotify, debounce, settle, claim: the intake, not the
queue).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.polling import seconds, wait_for

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


def dispatch_overhead(intake_log: Path, worker_logs: list[Path], statuses: dict[str, dict], dropped: float) -> dict:
    """Per-job dispatch, finish and setup seconds (see the module docstring), their median and max, the medians
    as % of the median render time, and the intake's latency (``dropped``: when the batch was dropped, epoch s)."""
    published = {e["job_id"]: seconds(e["timestamp"]) for e in _events(intake_log) if e.get("event") == "job.published"}
    dispatch: list[float] = []
    finish: list[float] = []
    render: list[float] = []
    setup: list[float] = []
    for log in worker_logs:
        events = _events(log)
        free_at = next((seconds(e["timestamp"]) for e in events if e.get("event") == "worker.ready"), 0.0)
        for taken in (e for e in events if e.get("event") == "job.taken"):
            status = statuses[taken["job_id"]]
            dispatch.append(seconds(taken["timestamp"]) - max(published[taken["job_id"]], free_at))
            last_video = max(seconds(v["finished"]) for v in status["videos"])
            finish.append(seconds(status["finished"]) - last_video)
            render.append(last_video - seconds(status["started"]))
            setup.append(seconds(status["started"]) - seconds(taken["timestamp"]))
            free_at = seconds(status["finished"])
    render_s = statistics.median(render)
    return {
        "render_s_median": round(render_s, 3),
        "dispatch_s_median": round(statistics.median(dispatch), 3),
        "dispatch_s_max": round(max(dispatch), 3),
        "finish_s_median": round(statistics.median(finish), 3),
        "finish_s_max": round(max(finish), 3),
        "dispatch_pct_of_render": round(100.0 * statistics.median(dispatch) / render_s, 2),
        "finish_pct_of_render": round(100.0 * statistics.median(finish) / render_s, 2),
        "setup_s_median": round(statistics.median(setup), 3),
        "intake_s_max": round(max(published.values()) - dropped, 3),
    }


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
        wait_for(
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
        dropped = time.time()
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

        wait_for(all_finished, 60.0 * jobs, f"{jobs} jobs to finish")
        elapsed = time.perf_counter() - started
        statuses = {n: json.loads((root / "outbox" / n / "status.json").read_bytes()) for n in names}
        states = [status["state"] for status in statuses.values()]
        ran_on = sorted({status["worker"] for status in statuses.values()})
        overhead = dispatch_overhead(root / "intake.log", logs, statuses, dropped)
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
        "seconds": round(elapsed, 2),
        "jobs_per_min": round(60.0 * jobs / elapsed, 2),
        "states": sorted(set(states)),
        "ran_on": ran_on,
        "overhead": overhead,
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
        o = row["overhead"]
        lines.append(
            f"    per job: render {o['render_s_median']:.2f} s; dispatch {o['dispatch_s_median']:.3f} s "
            f"(max {o['dispatch_s_max']:.3f}) = {o['dispatch_pct_of_render']:.1f} % of render; "
            f"finish {o['finish_s_median']:.3f} s (max {o['finish_s_max']:.3f}) = {o['finish_pct_of_render']:.1f} %; "
            f"setup {o['setup_s_median']:.3f} s; intake published the last job {o['intake_s_max']:.2f} s after the drop"
        )
    lines.append(
        f"  speedup {r['speedup']:.2f}x with {many['workers']} workers = {r['efficiency']:.2f} per worker "
        f"(goal >= {r['target_efficiency']} per worker, on as many free cores plus ffmpeg's)"
    )
    return "\n".join(lines)
