"""Smoke test of ``python -m bench --scale-out``: real farm rounds (Redis, intake, workers), JSON fields sane.
No timing assertions: the throughput ratio is the benchmark's own figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def test_bench_scale_out_json() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--scale-out",
            "1",
            "--jobs",
            "1",
            "--audio-seconds",
            "1",
            "--video-seconds",
            "1",
            "--json",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["mode"] == "scale-out"
    assert [r["workers"] for r in result["rounds"]] == [1, 1]
    for row in result["rounds"]:
        assert row["jobs"] == 1 and row["states"] == ["done"] and row["ran_on"] == ["w0@bench"]
        assert row["jobs_per_min"] > 0
        overhead = row["overhead"]
        assert overhead["render_s_median"] > 0
        assert 0 <= overhead["dispatch_s_median"] <= overhead["dispatch_s_max"]
        assert 0 <= overhead["finish_s_median"] <= overhead["finish_s_max"]
        assert overhead["dispatch_pct_of_render"] >= 0 and overhead["finish_pct_of_render"] >= 0
    assert result["speedup"] > 0 and result["target_efficiency"] == 0.9
