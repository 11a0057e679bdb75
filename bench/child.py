"""One measurement in a fresh process: ``python -m bench.child {render,plain} ...``.

``latentsync-deepcache``: one LatentSync window with and without DeepCache (``bench.latentsync_deepcache``).

(Also ``info``, ``speech``, ``presenter``, ``checkpoint``: input preparation, run here rather than in
the parent so the parent never imports heygemd or torch. That matters: on Linux a child's ru_maxrss
starts at the RSS its parent had when it forked, so a big parent would inflate every measurement.)

Prints one JSON object as the last line of stdout: the stage timings, the frame count and this
process's own peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``) plus the largest reaped child's
(the ffmpeg processes, ``RUSAGE_CHILDREN``). Nothing else of the parent's state leaks in.

``render``: settings -> LipSyncSession -> warm_up (timed as ``load_s``) -> audio features (``audio_s``)
-> render; ``total_s`` is ``RenderResult.timings["total"]`` (probe to the last encoded frame).
``plain``: probe + ``plain_transcode`` of the same input at the same encoder settings and length,
timed the same way (perf_counter around the whole call).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from heygemd.engine_names import CHOICES


def _rss() -> dict[str, float]:
    """Peak RSS in MiB of this process and of its largest reaped child (ffmpeg).

    Linux caveat: a child's ru_maxrss starts at the RSS its forking parent had at fork/exec time, so
    ``children_peak_rss_mib`` is an upper bound of ffmpeg's own peak, exact only when ffmpeg outgrows
    this process (true for the small ``plain`` child, not for ``render``).
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {"peak_rss_mib": round(own, 1), "children_peak_rss_mib": round(kids, 1)}


def _settings(args: argparse.Namespace):
    from heygemd.settings import load_settings

    settings = load_settings(Path(args.config) if args.config else None)
    engine_updates: dict[str, object] = {}
    if getattr(args, "engine", None):
        engine_updates["name"] = args.engine
    if getattr(args, "checkpoint", None):
        engine_updates["checkpoint"] = Path(args.checkpoint).resolve()
    if getattr(args, "device", None):
        engine_updates["device"] = args.device
    if getattr(args, "latentsync_steps", None) is not None:
        engine_updates["latentsync_steps"] = args.latentsync_steps
    updates: dict[str, object] = {"engine": settings.engine.model_copy(update=engine_updates)}
    path_updates: dict[str, object] = {}
    if getattr(args, "cache_dir", None):
        path_updates["cache"] = Path(args.cache_dir).resolve()
    if getattr(args, "models", None):
        path_updates["models"] = Path(args.models).resolve()
    if path_updates:
        updates["paths"] = settings.paths.model_copy(update=path_updates)
    return settings.model_copy(update=updates)


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its reaped children (the ffmpeg processes) so far."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_render(args: argparse.Namespace) -> dict[str, object]:
    from heygemd.lipsync import LipSyncSession

    settings = _settings(args)
    session = LipSyncSession(settings)
    started = time.perf_counter()
    session.warm_up()
    load_s = time.perf_counter() - started
    parameters = session.configure()
    started = time.perf_counter()
    audio = session.audio(Path(args.audio))
    audio_s = time.perf_counter() - started
    cpu_before = _cpu_s()
    result = session.render(Path(args.video), audio, Path(args.out))
    render_cpu_s = _cpu_s() - cpu_before
    engine = session.engine
    device = str(getattr(engine, "device", "cpu"))
    out: dict[str, object] = {
        "kind": "render",
        "engine": session.engine_name,
        "device": device,
        "detector": result.detector,
        "cached_faces": result.cached_faces,
        "frames": result.frames,
        "fps": result.fps,
        "output_seconds": result.frames / result.fps,
        "audio_seconds": audio.duration,
        "load_s": load_s,
        "audio_s": audio_s,
        "total_s": result.timings["total"],
        "timings": {k: v for k, v in result.timings.items() if k != "total"},
        "batch_size": settings.engine.batch_size,
        "identity": session.engine.identity,
        "parameters": parameters,
        "crf": settings.video.crf,
        "preset": settings.video.preset,
        "video_encoder": result.encoder,
        "video_decoder": result.decoder,
    }
    if args.quality:
        out.update(_check(settings, audio, result), render_cpu_s=render_cpu_s)
    torch = sys.modules.get("torch")
    if torch is not None and device.startswith("cuda"):
        out["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def _check(settings, audio, result) -> dict[str, object]:
    """The quality check of the render's output, timed as the daemon's worker runs it (after the render, with the
    job's speech and the render's face track). The landmark model is read before the clock starts: a warm daemon
    holds it from its first check on."""
    from heygemd.quality.check import Rendering, check_render
    from heygemd.quality.observe import shape_predictor

    shape_predictor()._model()
    cpu_before, started = _cpu_s(), time.perf_counter()
    report = check_render(result.output, audio, Rendering.of(result), settings.quality)
    return {
        "check_s": time.perf_counter() - started,
        "check_cpu_s": _cpu_s() - cpu_before,
        "check_review": report.review,
        "check_reasons": report.codes(),
    }


def run_plain(args: argparse.Namespace) -> dict[str, object]:
    from heygemd.pipeline.encode import plain_transcode
    from heygemd.pipeline.probe import probe_video

    settings = _settings(args)
    # The output length is the audio's, as the parent measured it with load_audio_features (the
    # render's own decode); not decoded here, so this process stays small (see _rss).
    duration = float(args.duration)
    started = time.perf_counter()
    info = probe_video(Path(args.video), still_fps=settings.video.still_fps)
    frames = max(1, round(duration * info.fps))
    plain_transcode(
        info,
        Path(args.out),
        Path(args.audio),
        duration,
        crf=settings.video.crf,
        preset=settings.video.preset,
        audio_bitrate=settings.video.audio_bitrate,
    )
    total_s = time.perf_counter() - started
    return {
        "kind": "plain",
        "frames": frames,
        "fps": info.fps,
        "output_seconds": frames / info.fps,
        "total_s": total_s,
        "crf": settings.video.crf,
        "preset": settings.video.preset,
    }


def run_info(args: argparse.Namespace) -> dict[str, object]:
    """What the parent needs to know of the inputs (probed here, so the parent never imports heygemd)."""
    from heygemd.pipeline.audio import load_audio_features
    from heygemd.pipeline.probe import probe_video

    info = probe_video(Path(args.video))
    out: dict[str, object] = {
        "width": info.width,
        "height": info.height,
        "fps": info.fps,
        "video_seconds": round(info.duration, 3),
        "video_frames": info.frame_count,
    }
    if args.audio:
        # The output length: the audio's duration as a render decodes it.
        out["audio_seconds"] = load_audio_features(Path(args.audio)).duration
    return out


def run_prepare(args: argparse.Namespace) -> dict[str, object]:
    from bench import inputs

    out = Path(args.out)
    if args.kind == "speech":
        inputs.speech(out, args.seconds, Path(args.work))
    elif args.kind == "presenter":
        width, height = (int(v) for v in args.size.split("x"))
        inputs.presenter(out, args.seconds, (width, height), args.fps)
    elif args.kind == "musetalk-weights":
        from bench.musetalk_weights import FULL, TINY, build_folder

        build_folder(out, TINY if args.size == "tiny" else FULL)
    elif args.kind == "latentsync-weights":
        from bench import latentsync_weights

        configs = latentsync_weights.TINY if args.size == "tiny" else latentsync_weights.FULL
        latentsync_weights.build_folder(out, configs)
    else:
        inputs.random_checkpoint(out)
    return {"kind": args.kind, "path": str(out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.child", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("info", help="probe the inputs")
    p.add_argument("--video", required=True)
    p.add_argument("--audio")
    p = sub.add_parser("speech", help="make speech of an exact length")
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--work", required=True)
    p = sub.add_parser("presenter", help="make a presenter video")
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--size", required=True)
    p.add_argument("--fps", type=float, default=25.0)
    p = sub.add_parser("checkpoint", help="make a random Wav2Lip checkpoint")
    p.add_argument("--out", required=True)
    for engine, what in (("musetalk", "MuseTalk 1.5"), ("latentsync", "LatentSync 1.6")):
        p = sub.add_parser(f"{engine}-weights", help=f"make random {what} weights (official layout)")
        p.add_argument("--out", required=True)
        p.add_argument("--size", choices=("full", "tiny"), default="full")
    p = sub.add_parser("latentsync-deepcache", help="one LatentSync window with and without DeepCache")
    p.add_argument("--models")
    p.add_argument("--config")
    p.add_argument("--device")
    p.add_argument("--latentsync-steps", type=int)
    for name in ("render", "plain"):
        p = sub.add_parser(name)
        p.add_argument("--video", required=True)
        p.add_argument("--audio", required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--config")
        if name == "plain":
            p.add_argument("--duration", type=float, required=True, help="Output length in seconds.")
        if name == "render":
            p.add_argument("--engine", choices=CHOICES)
            p.add_argument("--checkpoint")
            p.add_argument("--models")
            p.add_argument("--device")
            p.add_argument("--cache-dir")
            p.add_argument("--quality", action="store_true", help="time the quality check after the render")
            p.add_argument("--latentsync-steps", type=int)
    args = parser.parse_args(argv)
    if args.kind in ("render", "plain"):
        result = run_render(args) if args.kind == "render" else run_plain(args)
        result.update(_rss())
    elif args.kind == "info":
        result = run_info(args)
    elif args.kind == "latentsync-deepcache":
        from bench.latentsync_deepcache import compare

        result = compare(_settings(args))
        result.update(_rss())
    else:
        result = run_prepare(args)
    sys.stdout.flush()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
