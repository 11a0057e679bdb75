"""``python -m bench``: render speed, stage utilisation (the bottleneck), peak RSS and the ratio to a plain
ffmpeg transcode.

Default mode: one render and one plain ffmpeg decode+encode of the same input at the same settings
(``heygemd.pipeline.encode.plain_transcode``), each in a fresh child process, reported side by side.
``--memory-scaling 10,60``: renders of those output lengths (a short presenter video looped), each
in a fresh child; reports the peak RSS of each and the ratio of the longest to the shortest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import inputs  # stdlib-only at import time: the parent stays small
from bench.inputs import REPO_ROOT
from heygemd.engine_names import ENGINES  # a tuple of names: the parent still imports no engine

STAGES = ("decode", "detect", "prepare", "faces", "infer", "blend", "encode")
RENDER_STAGES = ("decode", "faces", "infer", "blend", "encode")
"""The stages that run concurrently while rendering (``pipeline/stages.py``); detect and prepare run before."""
MEMORY_RATIO_TARGET = 1.2
"""Product target: the peak RSS of a 60 s output within 1.2x of a 10 s one."""
WEIGHT_FOLDERS = {"musetalk": "MuseTalk 1.5 (~4 GB)", "latentsync": "LatentSync 1.6 (~5.5 GB)"}
"""The engines whose weights are a folder of ``models/`` (``--models``, ``--random-weights``)."""


class ChildFailed(RuntimeError):
    pass


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError("width and height must be even and at least 16")
    return w, h


def _seconds_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds like 10,60, got {text!r}") from None
    if len(values) < 2 or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("give at least two positive lengths, e.g. 10,60")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark a heygemd render against a plain ffmpeg decode+encode of the same input.",
    )
    eng = p.add_argument_group("engine")
    eng.add_argument("--engine", choices=ENGINES, default="mouthwarp")
    ck = eng.add_mutually_exclusive_group()
    ck.add_argument("--checkpoint", type=Path, help="Wav2Lip checkpoint (engine wav2lip).")
    ck.add_argument(
        "--random-checkpoint",
        action="store_true",
        help="Build a random Wav2Lip checkpoint (official layout) in the temp dir.",
    )
    ck.add_argument(
        "--random-weights",
        nargs="?",
        const="full",
        choices=("full", "tiny"),
        help="engines musetalk, latentsync: build random weights in the engine's official layout in the temp dir "
        "and load them through the engine's loader: full (the default; the real configs: MuseTalk 1.5 ~4 GB, "
        "LatentSync 1.6 ~5.5 GB) or tiny (the tests' scaled-down model: the engine's code path, audio features "
        "and batches at a small, constant weight size).",
    )
    ck.add_argument(
        "--models", type=Path, help="engines musetalk, latentsync: a models/ folder holding musetalk/ or latentsync/."
    )
    eng.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the settings').")
    eng.add_argument(
        "--latentsync-steps", type=int, help="engine latentsync: denoising steps (default: the settings', 20)."
    )
    eng.add_argument("--config", type=Path, help="heygemd TOML (default: the usual search).")

    inp = p.add_argument_group("input (given files, or generated with heygemd.demo)")
    inp.add_argument("--video", type=Path, help="Presenter video to use (default: generated).")
    inp.add_argument("--audio", type=Path, help="Speech to use (default: generated).")
    inp.add_argument(
        "--size", type=_size, help="Generated video size (default 640x360; 1280x720 with --memory-scaling)."
    )
    inp.add_argument("--fps", type=float, default=25.0, help="Generated video frame rate (default 25).")
    inp.add_argument("--video-seconds", type=float, default=5.0, help="Generated video length (default 5).")
    inp.add_argument(
        "--audio-seconds", type=float, default=5.0, help="Generated speech length = output length (default 5)."
    )

    run = p.add_argument_group("measurement")
    cache = run.add_mutually_exclusive_group()
    cache.add_argument(
        "--no-face-cache",
        action="store_true",
        help="Start every render with an empty face-track cache (the default: a fresh temp "
        "cache dir per render, so detection is measured).",
    )
    cache.add_argument(
        "--face-cache", type=Path, metavar="DIR", help="Use DIR as the face-track cache (a warm cache skips detection)."
    )
    run.add_argument("--repeat", type=int, default=1, help="Measure N times; report medians (default 1).")
    run.add_argument(
        "--memory-scaling",
        type=_seconds_list,
        metavar="S1,S2",
        help="Peak RSS of renders of these output lengths, e.g. 10,60.",
    )
    run.add_argument(
        "--strict", action="store_true", help=f"Exit 1 when --memory-scaling misses the {MEMORY_RATIO_TARGET}x target."
    )
    run.add_argument(
        "--scale-out",
        type=int,
        metavar="N",
        help="Farm throughput: N heygemd workers (Redis, intake, mouthwarp on CPU) vs one worker.",
    )
    run.add_argument("--jobs", type=int, help="Jobs per --scale-out round (default 3 x N).")
    run.add_argument(
        "--library",
        action="store_true",
        help="Claim to first frame of a presenter of the library against the same video uploaded with the job "
        "(a real `heygemd run`; --repeat rounds).",
    )
    run.add_argument(
        "--quality",
        action="store_true",
        help="Also run the quality check on each render's output (in the render's child, right after it, as the "
        "daemon's worker does) and report its wall and CPU time as a share of the render's.",
    )
    run.add_argument(
        "--latentsync-deepcache",
        action="store_true",
        help="engine latentsync: one window generated with and without DeepCache (engine.latentsync_deepcache) in "
        "one process, at --latentsync-steps: seconds, UNet passes and the frames' difference.",
    )
    run.add_argument("--keep", action="store_true", help="Keep the temp dir (inputs and outputs).")
    run.add_argument("--json", action="store_true", help="Print one JSON object instead of the text report.")
    return p


# --------------------------------------------------------------------------------------------------
# Children


def run_child(
    kind: str,
    video: Path,
    audio: Path,
    out: Path,
    args: argparse.Namespace,
    cache_dir: Path | None = None,
    checkpoint: Path | None = None,
    duration: float | None = None,
) -> dict:
    """Run one measurement in a fresh ``python -m bench.child`` and return its JSON."""
    argv = [kind, "--video", str(video), "--audio", str(audio), "--out", str(out)]
    if args.config:
        argv += ["--config", str(args.config.resolve())]
    if kind == "plain":
        argv += ["--duration", repr(duration)]
    if kind == "render":
        argv += ["--engine", args.engine]
        if checkpoint is not None:
            argv += ["--models" if args.engine in WEIGHT_FOLDERS else "--checkpoint", str(checkpoint)]
        if args.device:
            argv += ["--device", args.device]
        if args.latentsync_steps is not None:
            argv += ["--latentsync-steps", str(args.latentsync_steps)]
        if cache_dir is not None:
            argv += ["--cache-dir", str(cache_dir)]
        if args.quality:
            argv += ["--quality"]
    _progress(args, f"  {kind}: {out.name} ...")
    started = time.perf_counter()
    result = _child(argv)
    result["wall_s"] = time.perf_counter() - started
    result["output_frames"] = inputs.count_frames(out)
    return result


def _child(child_argv: list[str]) -> dict:
    """``python -m bench.child ARGV`` -> its JSON (the last stdout line); ChildFailed with stderr's tail."""
    global _spawn_rss_mib
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    _spawn_rss_mib = max(_spawn_rss_mib, _current_rss_mib())
    proc = subprocess.run([sys.executable, "-m", "bench.child", *child_argv], env=env, capture_output=True, text=True)
    kind = child_argv[0]
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise ChildFailed(f"{kind} child failed (exit {proc.returncode}):\n{tail}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise ChildFailed(f"{kind} child printed no JSON:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}") from None


_spawn_rss_mib = 0.0
"""The largest RSS this process had when it started a child: the floor under every child's ru_maxrss
(Linux starts a child's peak at its parent's RSS at fork). The parent imports neither heygemd nor torch
to keep it small (~20 MiB)."""


def _current_rss_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _progress(args: argparse.Namespace, text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Summaries


def stage_utilisation(total: float, timings: dict[str, float]) -> dict[str, float]:
    """Percent of ``total`` each stage was busy. The render stages run at the same time, so these do not sum to
    100: a stage near 100 % of the render phase is the bottleneck, the others wait on their queues."""
    return {stage: round(100.0 * timings.get(stage, 0.0) / total, 2) for stage in STAGES}


def bottleneck(timings: dict[str, float]) -> str:
    """The busiest of the concurrent render stages: the one that sets the pace."""
    return max(RENDER_STAGES, key=lambda stage: timings.get(stage, 0.0))


def summarise_render(runs: list[dict]) -> dict:
    total = statistics.median(r["total_s"] for r in runs)
    timings = {s: statistics.median(r["timings"].get(s, 0.0) for r in runs) for s in STAGES}
    first = runs[0]
    out_s = first["output_seconds"]
    return {
        "total_s": round(total, 3),
        "seconds_per_output_second": round(total / out_s, 3),
        "frames_per_second": round(first["frames"] / total, 2),
        "load_s": round(statistics.median(r["load_s"] for r in runs), 3),
        "audio_s": round(statistics.median(r["audio_s"] for r in runs), 3),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "stage_busy_pct": stage_utilisation(total, timings),
        "bottleneck": bottleneck(timings),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "children_peak_rss_mib": max(r["children_peak_rss_mib"] for r in runs),
        "frames": first["frames"],
        "output_frames": first["output_frames"],
        **({"gpu_peak_mib": max(r["gpu_peak_mib"] for r in runs)} if "gpu_peak_mib" in first else {}),
        **(summarise_check(runs) if "check_s" in first else {}),
    }


def summarise_check(runs: list[dict]) -> dict:
    """The quality check's cost (``--quality``): medians of its wall and CPU seconds, and of their shares of the
    render's (CPU: user + system of the child and its ffmpeg processes, less sensitive to a shared machine's load)."""
    return {
        "check": {
            "wall_s": round(statistics.median(r["check_s"] for r in runs), 3),
            "cpu_s": round(statistics.median(r["check_cpu_s"] for r in runs), 3),
            "render_cpu_s": round(statistics.median(r["render_cpu_s"] for r in runs), 3),
            "share_of_render_wall": round(statistics.median(r["check_s"] / r["total_s"] for r in runs), 4),
            "share_of_render_cpu": round(statistics.median(r["check_cpu_s"] / r["render_cpu_s"] for r in runs), 4),
            "review": [r["check_review"] for r in runs],
        }
    }


def summarise_plain(runs: list[dict]) -> dict:
    total = statistics.median(r["total_s"] for r in runs)
    first = runs[0]
    return {
        "total_s": round(total, 3),
        "seconds_per_output_second": round(total / first["output_seconds"], 3),
        "frames_per_second": round(first["output_frames"] / total, 2),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "children_peak_rss_mib": max(r["children_peak_rss_mib"] for r in runs),
        "output_frames": first["output_frames"],
    }


# --------------------------------------------------------------------------------------------------
# Modes


def prepare_checkpoint(args: argparse.Namespace, work: Path) -> Path | None:
    """The Wav2Lip checkpoint, or for musetalk and latentsync the models/ folder holding their folder (None: the
    settings')."""
    if args.engine in WEIGHT_FOLDERS:
        if args.random_weights:
            full = args.random_weights == "full"
            what = f"full-size {WEIGHT_FOLDERS[args.engine]}" if full else f"tiny {args.engine}"
            _progress(args, f"  building {what} random weights ...")
            models = work / "models"
            _child([f"{args.engine}-weights", "--out", str(models / args.engine), "--size", args.random_weights])
            return models
        return args.models.resolve() if args.models else None
    if args.engine != "wav2lip":
        return None
    if args.random_checkpoint:
        _progress(args, "  building a random Wav2Lip checkpoint ...")
        path = work / "random-wav2lip.pth"
        _child(["checkpoint", "--out", str(path)])
        return path
    return args.checkpoint.resolve() if args.checkpoint else None


def cache_for(args: argparse.Namespace, work: Path, name: str) -> Path:
    if args.face_cache is not None and not args.no_face_cache:
        return args.face_cache.resolve()
    path = Path(tempfile.mkdtemp(prefix=f"cache-{name}-", dir=work))
    return path


def input_info(video: Path, audio: Path | None = None) -> dict:
    """Probe of ``video`` and (when given) the seconds of ``audio`` as a render decodes them."""
    return _child(["info", "--video", str(video), *(["--audio", str(audio)] if audio else [])])


def make_presenter(args: argparse.Namespace, work: Path, size: tuple[int, int]) -> Path:
    _progress(args, f"  generating a {size[0]}x{size[1]} {args.video_seconds:g} s presenter ...")
    out = work / "presenter.mp4"
    _child(
        [
            "presenter",
            "--out",
            str(out),
            "--seconds",
            repr(args.video_seconds),
            "--size",
            f"{size[0]}x{size[1]}",
            "--fps",
            repr(args.fps),
        ]
    )
    return out


def make_speech(args: argparse.Namespace, work: Path, seconds: float) -> Path:
    _progress(args, f"  generating {seconds:g} s of speech ...")
    out = work / f"speech-{seconds:g}s.wav"
    _child(["speech", "--out", str(out), "--seconds", repr(seconds), "--work", str(work)])
    return out


def single(args: argparse.Namespace, work: Path) -> dict:
    size = args.size or (640, 360)
    generated = []
    video = args.video.resolve() if args.video else None
    audio = args.audio.resolve() if args.audio else None
    if video is None:
        video = make_presenter(args, work, size)
        generated.append("video")
    if audio is None:
        audio = make_speech(args, work, args.audio_seconds)
        generated.append("audio")
    checkpoint = prepare_checkpoint(args, work)
    info = input_info(video, audio)
    duration = info.pop("audio_seconds")

    renders, plains = [], []
    for n in range(args.repeat):
        plains.append(run_child("plain", video, audio, work / f"plain-{n}.mp4", args, duration=duration))
        renders.append(
            run_child(
                "render",
                video,
                audio,
                work / f"render-{n}.mp4",
                args,
                cache_dir=cache_for(args, work, str(n)),
                checkpoint=checkpoint,
            )
        )
    render, plain = summarise_render(renders), summarise_plain(plains)
    first = renders[0]
    return {
        "mode": "single",
        "engine": first["engine"],
        "parameters": first["parameters"],
        "device": first["device"],
        "detector": first["detector"],
        "cached_faces": first["cached_faces"],
        "cached_runs": sum(bool(r["cached_faces"]) for r in renders),
        "input": {
            "video": str(video),
            "audio": str(audio),
            "generated": generated,
            **info,
            "audio_seconds": round(duration, 3),
        },
        "encoder": {
            "crf": first["crf"],
            "preset": first["preset"],
            "video_encoder": first["video_encoder"],
            "video_decoder": first["video_decoder"],
        },
        "output_seconds": round(first["output_seconds"], 3),
        "repeat": args.repeat,
        "render": render,
        "plain": plain,
        "ratio_to_plain": round(render["total_s"] / plain["total_s"], 2),
        "frames_match": render["output_frames"] == plain["output_frames"],
        "parent_rss_at_spawn_mib": round(_spawn_rss_mib, 1),
        "runs": {"render": renders, "plain": plains},
    }


def memory_scaling(args: argparse.Namespace, work: Path) -> dict:
    size = args.size or (1280, 720)
    lengths = args.memory_scaling
    video = args.video.resolve() if args.video else make_presenter(args, work, size)
    checkpoint = prepare_checkpoint(args, work)
    rows = []
    for seconds in lengths:
        audio = make_speech(args, work, seconds)
        runs = [
            run_child(
                "render",
                video,
                audio,
                work / f"render-{seconds:g}s-{n}.mp4",
                args,
                cache_dir=cache_for(args, work, f"{seconds:g}s-{n}"),
                checkpoint=checkpoint,
            )
            for n in range(args.repeat)
        ]
        rows.append(
            {
                "output_seconds_requested": seconds,
                **summarise_render(runs),
                "output_seconds": round(runs[0]["output_seconds"], 3),
            }
        )
        rows[-1]["runs"] = runs
    smallest = min(rows, key=lambda r: r["output_seconds"])
    largest = max(rows, key=lambda r: r["output_seconds"])
    ratio = largest["peak_rss_mib"] / smallest["peak_rss_mib"]
    first = rows[0]["runs"][0]
    return {
        "mode": "memory-scaling",
        "engine": first["engine"],
        "parameters": first["parameters"],
        "device": first["device"],
        "detector": first["detector"],
        "input": {"video": str(video), **input_info(video)},
        "parent_rss_at_spawn_mib": round(_spawn_rss_mib, 1),
        "lengths": rows,
        "rss_ratio": round(ratio, 3),
        "target": MEMORY_RATIO_TARGET,
        "passed": ratio <= MEMORY_RATIO_TARGET,
    }


# --------------------------------------------------------------------------------------------------
# Text report


def _fmt_single(r: dict) -> str:
    i, rd, pl = r["input"], r["render"], r["plain"]
    shares = "  ".join(f"{k} {v:.1f}%" for k, v in rd["stage_busy_pct"].items())
    secs = "  ".join(f"{k} {v:.2f}" for k, v in rd["timings"].items())
    cached = f" (cached track in {r['cached_runs']} of {r['repeat']} runs)" if r["cached_runs"] else ""
    lines = [
        f"engine {r['engine']}{_parameters(r)} on {r['device']}, detector {r['detector']}{cached}; "
        f"{r['encoder']['video_encoder']} crf {r['encoder']['crf']} preset {r['encoder']['preset']}, "
        f"decoder {r['encoder']['video_decoder']}",
        f"input  {i['width']}x{i['height']} @ {i['fps']:g} fps, video {i['video_seconds']:g} s "
        f"({i['video_frames']} frames), audio {i['audio_seconds']:g} s"
        f"{' [generated: ' + ', '.join(i['generated']) + ']' if i['generated'] else ''}",
        f"output {r['output_seconds']:g} s, {rd['output_frames']} frames"
        f"{'' if r['frames_match'] else ' (plain ffmpeg wrote ' + str(pl['output_frames']) + ')'}"
        f"{'' if r['repeat'] == 1 else '; medians of ' + str(r['repeat']) + ' runs'}",
        "",
        f"{'':14}{'total s':>9}{'s per out s':>13}{'frames/s':>10}{'peak RSS MiB':>14}",
        f"{'render':14}{rd['total_s']:9.2f}{rd['seconds_per_output_second']:13.3f}{rd['frames_per_second']:10.1f}"
        f"{rd['peak_rss_mib']:14.0f}  (the render process; its ffmpeg children not included)",
        f"{'plain ffmpeg':14}{pl['total_s']:9.2f}{pl['seconds_per_output_second']:13.3f}"
        f"{pl['frames_per_second']:10.1f}{_ffmpeg_rss(pl):>14}  (the ffmpeg process)",
        "",
        f"render / plain ffmpeg: {r['ratio_to_plain']:.2f}x",
        f"real time:   {1.0 / rd['seconds_per_output_second']:.1f}x (output seconds per render second)",
        f"stage busy:  {shares}  (of total; render stages run concurrently)",
        f"bottleneck:  {rd['bottleneck']}",
        f"stage s:     {secs}",
        f"not in total: engine load {rd['load_s']:.2f} s, audio features {rd['audio_s']:.2f} s",
    ]
    if "gpu_peak_mib" in rd:
        lines.append(f"GPU peak allocated: {rd['gpu_peak_mib']:.0f} MiB")
    if "check" in rd:
        c = rd["check"]
        lines.append(
            f"quality check: {c['wall_s']:.2f} s = {c['share_of_render_wall']:.1%} of the render's wall time; "
            f"CPU {c['cpu_s']:.2f} s = {c['share_of_render_cpu']:.1%} of the render's {c['render_cpu_s']:.2f} s"
            f" (review: {c['review']})"
        )
    return "\n".join(lines)


def _parameters(r: dict) -> str:
    """`` (steps 2, guidance 1.5, ...)``: what shaped the engine's pictures besides its weights, if anything."""
    shown = ", ".join(f"{name} {value}" for name, value in r["parameters"].items())
    return f" ({shown})" if shown else ""


def _ffmpeg_rss(plain: dict) -> str:
    """ffmpeg's peak; only an upper bound ("<=") when it stayed below the Python process that started it."""
    kids, own = plain["children_peak_rss_mib"], plain["peak_rss_mib"]
    return f"{kids:.0f}" if kids > own + 1 else f"<={kids:.0f}"


def _fmt_scaling(r: dict) -> str:
    i = r["input"]
    lines = [
        f"memory scaling: engine {r['engine']}{_parameters(r)} on {r['device']}, detector {r['detector']}; presenter "
        f"{i['width']}x{i['height']} @ {i['fps']:g} fps, {i['video_seconds']:g} s, looped",
        "",
        f"{'output s':>9}{'frames':>8}{'total s':>9}{'s per out s':>13}{'peak RSS MiB':>14}",
    ]
    for row in r["lengths"]:
        lines.append(
            f"{row['output_seconds']:9g}{row['output_frames']:8d}{row['total_s']:9.1f}"
            f"{row['seconds_per_output_second']:13.3f}{row['peak_rss_mib']:14.0f}"
        )
    verdict = "PASS" if r["passed"] else "FAIL"
    lines += ["", f"peak RSS longest / shortest: {r['rss_ratio']:.3f}x (target <= {r['target']}x): {verdict}"]
    return "\n".join(lines)


def _scale_out(args: argparse.Namespace, work: Path) -> dict:
    from bench.scaleout import scale_out

    if args.scale_out < 1:
        raise SystemExit("bench: --scale-out must be >= 1")
    args.size = args.size or (320, 180)
    video = args.video.resolve() if args.video else make_presenter(args, work, args.size)
    audio = args.audio.resolve() if args.audio else make_speech(args, work, args.audio_seconds)
    return scale_out(args, work, video, audio)


def _library(args: argparse.Namespace, work: Path) -> dict:
    from bench.library import library_bench

    args.size = args.size or (640, 360)
    video = args.video.resolve() if args.video else make_presenter(args, work, args.size)
    audio = args.audio.resolve() if args.audio else make_speech(args, work, args.audio_seconds)
    warm_up = work / "warm-up.mp4"  # another presenter (another length: other content), for the daemon's first job
    size = f"{args.size[0]}x{args.size[1]}"
    _child(["presenter", "--out", str(warm_up), "--seconds", repr(args.video_seconds + 0.4), "--size", size])
    return library_bench(args, work, video, audio, warm_up, prepare_checkpoint(args, work))


def _latentsync_deepcache(args: argparse.Namespace, work: Path) -> dict:
    options = {
        "--models": prepare_checkpoint(args, work),
        "--config": args.config.resolve() if args.config else None,
        "--device": args.device,
        "--latentsync-steps": args.latentsync_steps,
    }
    argv = ["latentsync-deepcache"]
    for option, value in options.items():
        if value is not None:
            argv += [option, str(value)]
    _progress(args, "  latentsync: one window without, then with DeepCache ...")
    return {"mode": "latentsync-deepcache", "engine": "latentsync", **_child(argv)}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeat < 1:
        raise SystemExit("bench: --repeat must be >= 1")
    if args.latentsync_deepcache and args.engine != "latentsync":
        raise SystemExit("bench: --latentsync-deepcache needs --engine latentsync")
    if args.engine == "wav2lip" and not (args.checkpoint or args.random_checkpoint):
        _progress(args, "bench: wav2lip without --checkpoint: using the settings' (models/wav2lip_gan.pth)")
    for given in (args.video, args.audio, args.checkpoint):
        if given is not None and not given.is_file():
            raise SystemExit(f"bench: no such file: {given}")
    work = Path(tempfile.mkdtemp(prefix="heygemd-bench-"))
    started = time.perf_counter()
    try:
        if args.latentsync_deepcache:
            result = _latentsync_deepcache(args, work)
        elif args.scale_out:
            result = _scale_out(args, work)
        elif args.library:
            result = _library(args, work)
        else:
            result = memory_scaling(args, work) if args.memory_scaling else single(args, work)
    except ChildFailed as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            _progress(args, f"  kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    result["bench_wall_s"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        if args.latentsync_deepcache:
            from bench.latentsync_deepcache import format_compare

            print(format_compare(result))
        elif args.scale_out:
            from bench.scaleout import format_scale_out

            print(format_scale_out(result))
        elif args.library:
            from bench.library import format_library

            print(format_library(result))
        else:
            print(_fmt_scaling(result) if args.memory_scaling else _fmt_single(result))
        print(f"(bench wall time {result['bench_wall_s']:.0f} s)")
    if args.memory_scaling and args.strict and not result["passed"]:
        return 1
    return 0
