"""``python -m bench.gpu_engines``: the engines alone on a CUDA device, without ffmpeg or face detection.

For each engine (random weights in the official layouts: Wav2Lip's checkpoint, MuseTalk 1.5 at full size) it
feeds batches of face crops the size a 720p and a 1080p presenter gives, the batch length the render uses
(``heygemd.pipeline.run.batch_frames``), and reports faces per second, the batch size chosen at load from the
free GPU memory, and the peak GPU memory. The end-to-end figures (decode, blend, NVENC) come from
``python -m bench --device cuda``; this one needs only torch, diffusers and transformers, so it also runs on a GPU
machine without ffmpeg (bench/device/check.sh).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.inputs import REPO_ROOT

FACE_SIDE = {"720p": 260, "1080p": 390}
"""Side of a face crop in pixels for a head-and-shoulders presenter at that resolution."""


def _crops(count: int, side: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(count)]


def _timed(engine: Any, batches: list[Any]) -> float:
    engine.generate(batches[0])  # warm-up: kernels chosen, buffers sized
    torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in batches:
        engine.generate(batch)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def wav2lip(work: Path, faces: int, device: str) -> list[dict[str, Any]]:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from heygemd.engines.wav2lip import Wav2LipEngine
    from heygemd.pipeline.engine_contract import FaceBatch
    from heygemd.pipeline.run import batch_frames
    from tests.engines.checkpoints import make_random_checkpoint

    checkpoint = make_random_checkpoint(work / "wav2lip.pth")
    rows = []
    for label, side in FACE_SIDE.items():
        engine = Wav2LipEngine(checkpoint, device=device, batch_size=64, fp16=True)
        width, height = (1280, 720) if label == "720p" else (1920, 1080)
        per_batch = batch_frames(engine, 64, width * height * 3)  # the render's batch
        crops = _crops(per_batch, side, seed=1)
        mels = np.random.default_rng(2).uniform(-4, 1, (per_batch, 80, 16)).astype(np.float32)
        batches = [FaceBatch(crops=crops, landmarks=[], mels=mels)] * max(1, faces // per_batch)
        torch.cuda.reset_peak_memory_stats()
        seconds = _timed(engine, batches)
        rows.append(
            {
                "engine": "wav2lip",
                "input": label,
                "faces_per_call": per_batch,
                "batch_size": engine.batch_size,
                "faces_per_s": round(len(batches) * per_batch / seconds, 1),
                "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20),
            }
        )
        engine.close()
    return rows


def musetalk(work: Path, faces: int, device: str) -> list[dict[str, Any]]:
    from bench.musetalk_weights import FULL, build_folder
    from heygemd.engines.musetalk import MuseTalkEngine
    from heygemd.pipeline.engine_contract import FaceBatch

    folder = build_folder(work / "musetalk", FULL)
    engine = MuseTalkEngine(folder, device=device, batch_size=16, fp16=True)
    rows = []
    for label, side in FACE_SIDE.items():
        per_batch = 12
        crops = _crops(per_batch, side, seed=3)
        torch.cuda.synchronize()
        start = time.perf_counter()
        prepared = engine.prepare_presenter(crops)
        torch.cuda.synchronize()
        prep_s = time.perf_counter() - start
        prompts = np.random.default_rng(4).standard_normal((per_batch, 50, 384)).astype(np.float32)
        batch = FaceBatch(
            crops=crops,
            landmarks=[np.zeros((68, 2), np.float32)] * per_batch,
            mels=np.zeros((per_batch, 80, 16), np.float32),
            prompts=prompts,
            prepared=prepared,
        )
        torch.cuda.reset_peak_memory_stats()
        seconds = _timed(engine, [batch] * max(1, faces // per_batch))
        rows.append(
            {
                "engine": "musetalk",
                "input": label,
                "faces_per_call": per_batch,
                "batch_size": engine.batch_size,
                "faces_per_s": round(max(1, faces // per_batch) * per_batch / seconds, 1),
                "prepare_faces_per_s": round(per_batch / prep_s, 1),
                "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20),
            }
        )
    engine.close()
    return rows


MEASURED: dict[str, Callable[[Path, int, str], list[dict[str, Any]]]] = {"wav2lip": wav2lip, "musetalk": musetalk}
"""The torch engines this benchmark measures, by name."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_engines", description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=[*MEASURED, "all"], default="all")
    parser.add_argument("--faces", type=int, default=600, help="faces per measurement (default 600)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark measures the engines on a GPU", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="heygemd-gpu-bench-") as tmp:
        for name, measure in MEASURED.items():
            if args.engine in (name, "all"):
                rows += measure(Path(tmp), args.faces, args.device)
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}")
    for row in rows:
        print("  ".join(f"{k} {v}" for k, v in row.items()))
    if args.json:
        args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
