"""``python -m bench --engine latentsync --random-weights [full|tiny] --latentsync-deepcache``: one window of
LatentSync generated with and without DeepCache (``engine.latentsync_deepcache``), side by side in one process.

The child (``python -m bench.child latentsync-deepcache``) loads the model once through ``load_model``, makes one
window of seeded random aligned faces (``num_frames`` of them, at the model's resolution) and audio tokens, encodes
the faces once (``encode_faces``, the presenter's preparation, timed apart: the daemon caches it per presenter) and
then runs ``generate_from_latents`` twice on the same inputs at the settings' steps, guidance and seed: first the
whole computation, then with ``deepcache``. Each run reports its wall time, its UNet calls (counted by hooks on the
model's UNet: a full pass, or a reusing one that computes only the shallow branch) and the seconds spent in them; the
rest of a run is the DDIM arithmetic and the VAE decoding of the window. The frames of the two runs are compared
(mean absolute difference in 0-255 levels, PSNR, largest difference), over the whole face and over the redrawn area
alone (where ``mask.png`` is not white; outside it both runs paste the input back, so they agree there).

On random weights the difference says nothing about what DeepCache costs in picture quality with the real weights:
that has to be judged on the real model's output.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:  # torch loads in the child only: the parent imports this module to print the report
    from heygemd.engines.latentsync import LatentSyncModel
    from heygemd.settings import Settings

RUNS = ("full", "deepcache")


class PassCounter:
    """Counts and times the calls of ``model.unet`` (forward hooks): full passes and reusing ones
    (``reuse``, the UNet's fifth argument, true)."""

    def __init__(self, model: LatentSyncModel):
        self.full = self.reuse = 0
        self.seconds = 0.0
        self._started = 0.0
        self._handles = [
            model.unet.register_forward_pre_hook(self._before),
            model.unet.register_forward_hook(self._after),
        ]

    def _before(self, module: Any, args: tuple[Any, ...]) -> None:
        reuse = len(args) > 4 and bool(args[4])
        if reuse:
            self.reuse += 1
        else:
            self.full += 1
        self._started = time.perf_counter()

    def _after(self, module: Any, args: tuple[Any, ...], output: Any) -> None:
        self.seconds += time.perf_counter() - self._started

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def window_inputs(model: LatentSyncModel, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One window of uint8 BGR faces (F, R, R, 3), float32 audio tokens (F, 50, 384) and the render's noise."""
    from heygemd.engines.latentsync import initial_noise
    from heygemd.engines.latentsync_audio import TOKENS, WIDTH

    rng = np.random.default_rng(seed)
    side = model.resolution
    crops = rng.integers(0, 256, (model.num_frames, side, side, 3), dtype=np.uint8)
    audio = rng.standard_normal((model.num_frames, TOKENS, WIDTH)).astype(np.float32)
    return crops, audio, initial_noise(seed, side)


def difference(a: np.ndarray, b: np.ndarray) -> dict[str, float | None]:
    """Mean absolute difference (0-255 levels), PSNR in dB (None: identical) and the largest difference."""
    delta = a.astype(np.float64) - b.astype(np.float64)
    mse = float(np.mean(delta**2))
    return {
        "mean_abs": round(float(np.mean(np.abs(delta))), 3),
        "psnr_db": round(10 * np.log10(255.0**2 / mse), 2) if mse > 0 else None,
        "max_abs": float(np.max(np.abs(delta))),
    }


def compare(settings: Settings) -> dict[str, Any]:
    """Both runs of one window on the model of ``settings`` (``paths.models``/latentsync, ``engine.device``,
    ``fp16``, the LatentSync steps, guidance and seed); see the module's text."""
    from heygemd.engines import latentsync_layout
    from heygemd.engines.latentsync import load_model

    engine = settings.engine
    steps, guidance, seed = engine.latentsync_steps, engine.latentsync_guidance, engine.latentsync_seed
    started = time.perf_counter()
    model = load_model(latentsync_layout.latentsync_folder(settings.paths.models), engine.device, engine.fp16)
    load_s = time.perf_counter() - started
    crops, audio, noise = window_inputs(model, seed)
    started = time.perf_counter()
    latents = model.encode_faces(crops)
    encode_s = time.perf_counter() - started

    runs: dict[str, dict[str, Any]] = {}
    frames: dict[str, np.ndarray] = {}
    for name in RUNS:
        counter = PassCounter(model)
        started = time.perf_counter()
        frames[name] = model.generate_from_latents(
            crops, latents, audio, noise, steps, guidance, deepcache=name == "deepcache"
        )
        seconds = time.perf_counter() - started
        counter.close()
        runs[name] = {
            "seconds": round(seconds, 2),
            "unet_full_passes": counter.full,
            "unet_reuse_passes": counter.reuse,
            "unet_s": round(counter.seconds, 2),
            "other_s": round(seconds - counter.seconds, 2),
        }
    full, cached = runs["full"], runs["deepcache"]
    redrawn = _redrawn(model)
    return {
        "kind": "latentsync-deepcache",
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "identity": model.identity(),
        "frames": model.num_frames,
        "resolution": model.resolution,
        "steps": steps,
        "guidance": guidance,
        "seed": seed,
        "load_s": round(load_s, 1),
        "encode_s": round(encode_s, 2),
        "runs": runs,
        "speedup": round(full["seconds"] / cached["seconds"], 3),
        "unet_speedup": round(full["unet_s"] / cached["unet_s"], 3),
        "difference": difference(frames["full"], frames["deepcache"]),
        "difference_redrawn": difference(frames["full"][:, redrawn], frames["deepcache"][:, redrawn]),
        "redrawn_share": round(float(redrawn.mean()), 3),
    }


def _redrawn(model: LatentSyncModel) -> np.ndarray:
    """bool (R, R): the pixels LatentSync redraws (``mask.png`` not white at the face's size, as the model
    resizes it)."""
    side = model.resolution
    mask = cv2.resize(model.mask_image, (side, side), interpolation=cv2.INTER_LANCZOS4)
    return np.asarray(mask.min(axis=2) < 255)


def format_compare(r: dict[str, Any]) -> str:
    full, cached = r["runs"]["full"], r["runs"]["deepcache"]
    whole, redrawn = r["difference"], r["difference_redrawn"]

    def psnr(d: dict[str, Any]) -> str:
        return "identical" if d["psnr_db"] is None else f"PSNR {d['psnr_db']:.2f} dB"

    lines = [
        f"LatentSync DeepCache: one {r['frames']}-frame window at {r['resolution']} px, {r['steps']} steps, "
        f"guidance {r['guidance']}, seed {r['seed']}, on {r['device']} ({r['dtype']}), weights {r['identity']}",
        f"load {r['load_s']:.0f} s; faces encoded once (not in the runs) {r['encode_s']:.1f} s",
        "",
        "             seconds  UNet full  UNet reuse  UNet s  other s (DDIM, VAE decode)",
    ]
    for name, run in (("full", full), ("deepcache", cached)):
        lines.append(
            f"{name:<11} {run['seconds']:9.1f} {run['unet_full_passes']:10d} {run['unet_reuse_passes']:11d} "
            f"{run['unet_s']:7.1f}  {run['other_s']:7.1f}"
        )
    lines += [
        "",
        f"full / deepcache: {r['speedup']:.2f}x (the UNet alone {r['unet_speedup']:.2f}x)",
        f"difference, whole faces:  mean {whole['mean_abs']:.2f} levels, {psnr(whole)}, max {whole['max_abs']:.0f}",
        f"difference, redrawn area ({r['redrawn_share']:.0%} of the face): mean {redrawn['mean_abs']:.2f} levels, "
        f"{psnr(redrawn)}, max {redrawn['max_abs']:.0f}",
        "(random weights: the difference says nothing of DeepCache's quality cost with the real weights)",
    ]
    return "\n".join(lines)
