"""Smoke test of ``python -m bench``: a tiny generated input, JSON out, fields present and sane.

No timing assertions here: speed and memory targets live in the benchmark's own ratios.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("espeak-ng") is None, reason="needs ffmpeg and espeak-ng"
)


def run_bench(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> dict[str, Any]:
    """``python -m bench ARGS... --json`` from the repository, as a user runs it; its JSON result."""
    environment = {**os.environ, **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--json"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_bench_json_on_a_tiny_input():
    result = run_bench("--engine", "mouthwarp", "--size", "320x180", "--video-seconds", "1", "--audio-seconds", "1")

    assert result["mode"] == "single"
    assert result["engine"] == "mouthwarp"
    assert result["input"]["width"] == 320 and result["input"]["height"] == 180
    render, plain = result["render"], result["plain"]
    assert render["frames"] == 25 and render["output_frames"] == 25
    assert result["frames_match"] is True
    assert render["total_s"] > 0 and plain["total_s"] > 0
    assert render["seconds_per_output_second"] > 0 and render["frames_per_second"] > 0
    assert result["ratio_to_plain"] > 0
    assert result["ratio_to_plain"] == pytest.approx(render["total_s"] / plain["total_s"], rel=0.02)

    busy = render["stage_busy_pct"]
    assert set(busy) == {"decode", "detect", "prepare", "faces", "infer", "blend", "encode"}
    assert all(0 <= busy[s] <= 100 for s in busy)  # each stage is busy at most the whole time
    assert busy["detect"] > 0  # a fresh face cache: detection is measured
    assert render["bottleneck"] in ("decode", "faces", "infer", "blend", "encode")
    assert busy[render["bottleneck"]] == max(busy[s] for s in ("decode", "faces", "infer", "blend", "encode"))
    assert result["cached_faces"] is False

    # Peak RSS comes from the child's own getrusage and is well above the small parent's floor.
    assert render["peak_rss_mib"] > 50
    assert render["peak_rss_mib"] > result["parent_rss_at_spawn_mib"]
    assert plain["children_peak_rss_mib"] > 0
    assert result["parent_rss_at_spawn_mib"] < 100


def test_bench_library_measures_a_library_presenter_against_the_same_video_uploaded(tmp_path: Path) -> None:
    args = ("--library", "--size", "320x180", "--video-seconds", "1", "--audio-seconds", "1")
    result = run_bench(*args, env={"TMPDIR": str(tmp_path)}, timeout=420)
    assert (result["mode"], result["engine"], result["repeat"]) == ("library", "mouthwarp", 1)
    (round_,) = result["rounds"]
    uploaded, library = round_["uploaded"], round_["library"]
    assert (uploaded["face_track"], library["face_track"]) == ("computed", "cached")
    assert uploaded["detect_s"] > 0 and library["detect_s"] == 0  # prepared between jobs: no detection after the claim
    assert round_["engines"] == ["mouthwarp"] and round_["preparation_s"] > 0
    assert round_["preparation_timings"]["detect"] > 0
    assert result["library_claim_to_first_frame_s"] == library["claim_to_first_frame_s"] > 0
    assert result["saved_s"] == pytest.approx(
        uploaded["claim_to_first_frame_s"] - library["claim_to_first_frame_s"], abs=0.002
    )


def test_bench_musetalk_through_the_engine_loader(musetalk_folder: Path, tmp_path: Path) -> None:
    """``--engine musetalk --models DIR``: the same loader as ``--random-weights`` (full size), tiny files here."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "musetalk").symlink_to(musetalk_folder, target_is_directory=True)
    result = run_bench(
        "--engine",
        "musetalk",
        "--models",
        str(models),
        "--device",
        "cpu",
        "--size",
        "320x180",
        "--video-seconds",
        "1",
        "--audio-seconds",
        "1",
        env={"HEYGEMD_ENGINE__BATCH_SIZE": "8"},
        timeout=400,
    )
    assert result["engine"] == "musetalk"
    render = result["render"]
    assert render["frames"] == 25 and render["output_frames"] == 25
    assert render["stage_busy_pct"]["prepare"] > 0 and render["stage_busy_pct"]["infer"] > 0
    assert result["runs"]["render"][0]["identity"].startswith("sha256:")


def test_random_weights_full_by_default_tiny_on_request(tmp_path: Path) -> None:
    """``--random-weights`` alone keeps meaning the full-size model; ``--random-weights tiny`` builds the tests' one."""
    from bench import child
    from bench.cli import build_parser
    from bench.musetalk_weights import TINY

    parser = build_parser()
    assert parser.parse_args(["--engine", "musetalk", "--random-weights"]).random_weights == "full"
    assert parser.parse_args(["--random-weights", "--device", "cpu"]).random_weights == "full"
    assert parser.parse_args(["--random-weights", "tiny"]).random_weights == "tiny"
    assert parser.parse_args([]).random_weights is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--random-weights", "huge"])

    out = tmp_path / "musetalk"
    assert child.main(["musetalk-weights", "--out", str(out), "--size", "tiny"]) == 0
    unet = json.loads((out / "musetalkV15" / "musetalk.json").read_text())
    assert unet["block_out_channels"] == TINY.unet["block_out_channels"]
    assert (out / "musetalkV15" / "unet.pth").stat().st_size < 20e6  # the full one is 3.4 GB


def test_latentsync_random_weights_are_built_by_the_child_in_the_official_layout(tmp_path: Path) -> None:
    """``--engine latentsync --random-weights tiny``: the child writes the folder the engine's loader reads."""
    from bench import child
    from bench.cli import build_parser
    from heygemd.engines.latentsync import load_model

    args = build_parser().parse_args(["--engine", "latentsync", "--random-weights", "tiny", "--latentsync-steps", "2"])
    assert (args.engine, args.random_weights, args.latentsync_steps) == ("latentsync", "tiny", 2)
    out = tmp_path / "latentsync"
    assert child.main(["latentsync-weights", "--out", str(out), "--size", "tiny"]) == 0
    model = load_model(out)
    assert model.resolution == 64 and model.num_frames == 16
    assert (out / "latentsync_unet.pt").stat().st_size < 20e6  # the full one is about 5 GB


def test_latentsync_deepcache_compares_one_window_with_and_without_reuse() -> None:
    """``--latentsync-deepcache``: the same window generated twice in one child; DeepCache runs the whole UNet on
    steps 0 and 3 of 4 only, and changes only the redrawn area's pixels."""
    result = run_bench(
        "--engine", "latentsync", "--random-weights", "tiny", "--latentsync-deepcache", "--latentsync-steps", "4",
        "--device", "cpu",
    )  # fmt: skip

    assert (result["mode"], result["engine"], result["device"]) == ("latentsync-deepcache", "latentsync", "cpu")
    assert (result["frames"], result["resolution"], result["steps"], result["guidance"]) == (16, 64, 4, 1.5)
    full, cached = result["runs"]["full"], result["runs"]["deepcache"]
    assert (full["unet_full_passes"], full["unet_reuse_passes"]) == (4, 0)
    assert (cached["unet_full_passes"], cached["unet_reuse_passes"]) == (2, 2)
    for run in (full, cached):
        assert run["seconds"] > 0 and 0 < run["unet_s"] <= run["seconds"]
    assert result["speedup"] == pytest.approx(full["seconds"] / cached["seconds"], rel=0.05)
    assert result["encode_s"] > 0 and result["peak_rss_mib"] > 0

    whole, redrawn = result["difference"], result["difference_redrawn"]
    assert redrawn["mean_abs"] > 0 and redrawn["psnr_db"] is not None  # reused features: other pixels
    assert 0 < result["redrawn_share"] < 1
    # Outside the redrawn area both runs paste the input face back: all of the difference is inside it.
    assert whole["mean_abs"] == pytest.approx(redrawn["mean_abs"] * result["redrawn_share"], rel=0.02)
    assert whole["max_abs"] == redrawn["max_abs"]


def test_latentsync_deepcache_needs_the_latentsync_engine() -> None:
    from bench.cli import main

    with pytest.raises(SystemExit, match="needs --engine latentsync"):
        main(["--engine", "mouthwarp", "--latentsync-deepcache"])
