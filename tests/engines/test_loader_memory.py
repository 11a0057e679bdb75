"""Loading LatentSync and MuseTalk holds the weights about once: each UNet is built without storage and takes the
tensors read from its file as its own, instead of a model's copy beside the checkpoint's tensors (twice the
weights at the peak, 10.2 GB for LatentSync 1.6's UNet before).

Measured in a fresh process (VmHWM, its own peak: a child's ru_maxrss starts at its parent's RSS, pytest's here),
with a UNet widened until its weights dominate what the imports and the checks allocate."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bench import latentsync_weights, musetalk_weights

RATIO = 1.1
"""Peak growth while loading, per byte of the loaded weights (two copies at once measured 2.1)."""
OVERHEAD = 48 * 2**20
"""Fixed allowance: the checks' temporaries (one tensor's mask at a time), the small models' transient copies."""

LOAD = """
import json
import sys
from pathlib import Path

from heygemd.engines import latentsync, musetalk


def status(field):
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1]) * 1024


engine, folder = sys.argv[1], Path(sys.argv[2])
before = status("VmRSS:")
model = (latentsync if engine == "latentsync" else musetalk).load_model(folder, device="cpu")
peak = status("VmHWM:")
modules = (model.encoder, model.vae, model.unet)
tensors = [t for module in modules for t in (*module.parameters(), *module.buffers())]
print(json.dumps({
    "weights": sum(t.nbytes for t in tensors),
    "growth": peak - before,
    "unloaded": sum(1 for t in tensors if t.is_meta or t.device.type != "cpu"),
}))
"""


def _wide_latentsync(folder: Path) -> Path:
    configs = latentsync_weights.TINY
    wide = dataclasses.replace(configs, unet={**configs.unet, "block_out_channels": [192, 384]})
    return latentsync_weights.build_folder(folder, wide)


def _wide_musetalk(folder: Path) -> Path:
    configs = musetalk_weights.TINY
    wide = dataclasses.replace(
        configs, unet={**configs.unet, "block_out_channels": [256, 512], "attention_head_dim": 8}
    )
    return musetalk_weights.build_folder(folder, wide)


@pytest.mark.parametrize(("engine", "build"), [("latentsync", _wide_latentsync), ("musetalk", _wide_musetalk)])
def test_loading_holds_the_weights_once(tmp_path: Path, engine: str, build: Callable[[Path], Path]) -> None:
    folder = build(tmp_path / engine)
    result = subprocess.run(
        [sys.executable, "-c", LOAD, engine, str(folder)], capture_output=True, text=True, check=True
    )
    measured = json.loads(result.stdout)
    assert measured["weights"] > 150e6  # the UNet's share dominates the imports' and the checks' allocations
    assert measured["unloaded"] == 0  # every parameter and buffer got its tensor (none left on the meta device)
    assert measured["growth"] <= RATIO * measured["weights"] + OVERHEAD, measured
