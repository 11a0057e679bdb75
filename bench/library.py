"""``python -m bench --library``: the time from a job's claim to its first rendered frame, for a presenter of the
library against the same video uploaded with the job.

Each round runs a real ``heygemd run`` on fresh folders (the engine of ``--engine``; MuseTalk with ``--models`` or
``--random-weights``) and, one after the other:

0. a warm-up job with another presenter video, so what a process does once (loading the engine, the landmark
   model, the audio maths) is not counted against the first measured job;
1. **uploaded**: a job folder holding the speech and the presenter video, the face-track and presenter caches empty
   (a presenter the daemon has never seen: its face is tracked, and MuseTalk's latents computed, before the first
   frame);
2. the caches are emptied again and the same video is copied into the library (with its ready marker): the
   daemon prepares it between jobs; its preparation time is presenters.json's ``seconds``;
3. **library**: a job folder holding only the speech and a job.toml naming the presenter: linked into the job at
   its claim, rendered from the prepared caches.

From each job's status.json: ``first_frame - claimed`` (the claim, the audio's decoding, the face track and the
engine's preparation when not cached, the first batch), ``started - claimed`` (what comes before the job's first
status: the presenters linked at the claim included) and the video's timings. Stdlib only here: the processes are
real heygemd ones.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path

from bench.polling import seconds, wait_for

START_TIMEOUT_S = 300.0
JOB_TIMEOUT_S = 600.0
PRESENTER = "presenter"


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_bytes())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _submit(root: Path, name: str, files: dict[str, Path | bytes]) -> None:
    folder = root / "staging" / name
    folder.mkdir(parents=True)
    for fname, content in files.items():
        if isinstance(content, Path):
            shutil.copyfile(content, folder / fname)
        else:
            (folder / fname).write_bytes(content)
    (folder / ".ready").touch()
    os.rename(folder, root / "inbox" / name)


def _finished(root: Path, name: str) -> dict:
    def done() -> dict | None:
        status = _json(root / "outbox" / name / "status.json")
        finished = status and status.get("finished") and status["state"] in ("done", "partial", "failed")
        return status if finished else None

    status = wait_for(done, JOB_TIMEOUT_S, f"job {name}")
    if status["state"] != "done":
        raise RuntimeError(f"job {name} ended {status['state']}: {json.dumps(status['videos'])[:2000]}")
    return status


def _measure(status: dict) -> dict:
    video = status["videos"][0]
    claimed = seconds(status["claimed"])
    return {
        "claim_to_first_frame_s": round(seconds(status["first_frame"]) - claimed, 3),
        "claim_to_started_s": round(seconds(status["started"]) - claimed, 3),
        "face_track": video.get("face_track"),
        "engine_prep": video.get("engine_prep"),
        "detect_s": round(video["timings"].get("detect", 0.0), 3),
        "prepare_s": round(video["timings"].get("prepare", 0.0), 3),
        "render_total_s": round(video["timings"]["total"], 3),
    }


def _round(args: argparse.Namespace, root: Path, video: Path, audio: Path, warm_up: Path, models: Path | None) -> dict:
    root.mkdir(parents=True)
    for folder in ("inbox", "outbox", "staging", "presenters", "models"):
        (root / folder).mkdir()
    models_dir = models if models is not None else root / "models"
    device = f'device = "{args.device}"\n' if args.device else 'device = "cpu"\n'
    config = root / "heygemd.toml"
    config.write_text(
        f"""
[paths]
inbox = "inbox"
outbox = "outbox"
models = "{models_dir}"
presenters = "presenters"
[intake]
observer = "inotify"
rescan_interval = 1.0
settle_seconds = 600
[engine]
name = "{args.engine}"
{device}""",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEYGEMD_")}
    env["HEYGEMD_LOGGING__FORMAT"] = "json"
    env["HF_HUB_OFFLINE"] = "1"
    log = root / "daemon.log"
    cache = root / "inbox" / ".heygemd" / "cache"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "heygemd", "--config", str(config), "run"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
            env=env,
            start_new_session=True,
        )
    try:
        wait_for(lambda: b'"daemon.ready"' in log.read_bytes(), START_TIMEOUT_S, "the daemon to be ready")
        _submit(root, "warm-up", {"speech.wav": audio, f"other{warm_up.suffix}": warm_up})
        _finished(root, "warm-up")
        shutil.rmtree(cache, ignore_errors=True)
        _submit(root, "uploaded", {"speech.wav": audio, f"{PRESENTER}{video.suffix}": video})
        uploaded = _measure(_finished(root, "uploaded"))

        shutil.rmtree(cache, ignore_errors=True)  # the library's preparation starts from nothing too
        shutil.copyfile(video, root / "presenters" / f"{PRESENTER}{video.suffix}")
        (root / "presenters" / f"{PRESENTER}{video.suffix}.ready").touch()

        def prepared() -> dict | None:
            document = _json(root / "inbox" / ".heygemd" / "presenters.json") or {"presenters": []}
            entry = next((p for p in document["presenters"] if p["name"] == PRESENTER), None)
            return entry if entry and entry["state"] != "preparing" else None

        entry = wait_for(prepared, JOB_TIMEOUT_S, "the presenter prepared")
        if entry["state"] != "ready":
            raise RuntimeError(f"the presenter failed its preparation: {entry['error']}")
        _submit(root, "library", {"speech.wav": audio, "job.toml": f'presenters = ["{PRESENTER}"]\n'.encode()})
        library = _measure(_finished(root, "library"))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return {
        "uploaded": uploaded,
        "library": library,
        "preparation_s": entry["seconds"],
        "preparation_timings": entry.get("timings", {}),
        "engines": entry["engines"],
        "cache_files": entry["cache_files"],
    }


def library_bench(
    args: argparse.Namespace, work: Path, video: Path, audio: Path, warm_up: Path, models: Path | None
) -> dict:
    """``args.repeat`` rounds; medians of the claim-to-first-frame times of both jobs and their ratio."""
    rounds = []
    for n in range(args.repeat):
        print(f"  round {n + 1} of {args.repeat} ...", file=sys.stderr, flush=True)
        rounds.append(_round(args, work / f"library-{n}", video, audio, warm_up, models))

    def median(job: str, key: str) -> float:
        return round(statistics.median(r[job][key] for r in rounds), 3)

    uploaded, library = median("uploaded", "claim_to_first_frame_s"), median("library", "claim_to_first_frame_s")
    return {
        "mode": "library",
        "engine": args.engine,
        "repeat": args.repeat,
        "uploaded_claim_to_first_frame_s": uploaded,
        "library_claim_to_first_frame_s": library,
        "saved_s": round(uploaded - library, 3),
        "ratio": round(library / uploaded, 3) if uploaded else None,
        "uploaded_claim_to_started_s": median("uploaded", "claim_to_started_s"),
        "library_claim_to_started_s": median("library", "claim_to_started_s"),
        "preparation_s": round(statistics.median(r["preparation_s"] for r in rounds), 3),
        "rounds": rounds,
    }


def format_library(r: dict) -> str:
    first = r["rounds"][0]
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in first["preparation_timings"].items() if k != "total" and v > 0)
    lines = [
        f"presenter library: engine {r['engine']}, {r['repeat']} round(s), medians",
        f"  claim -> first frame: uploaded {r['uploaded_claim_to_first_frame_s']:.2f} s, "
        f"library {r['library_claim_to_first_frame_s']:.2f} s ({r['ratio']:.2f}x, {r['saved_s']:.2f} s saved)",
        f"  claim -> job started: uploaded {r['uploaded_claim_to_started_s']:.3f} s, "
        f"library {r['library_claim_to_started_s']:.3f} s (the presenter linked at the claim)",
        f"  the presenter's preparation, once, between jobs: {r['preparation_s']:.2f} s "
        f"(engines {', '.join(first['engines'])}; {len(first['cache_files'])} engine preparation(s) cached)",
        f"    first round's stages: {stages}",
    ]
    for job in ("uploaded", "library"):
        m = first[job]
        lines.append(
            f"  {job:>8}: face track {m['face_track']}, engine preparation {m['engine_prep'] or '-'}, "
            f"detect {m['detect_s']:.2f} s, prepare {m['prepare_s']:.2f} s, render {m['render_total_s']:.2f} s"
        )
    return "\n".join(lines)
