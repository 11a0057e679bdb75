"""End to end: the real ``heygemd run`` checks every video it renders, records it in status.json, and
``heygemd status`` shows how many to review."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest

from heygemd.daemon.status import SCHEMA_PATH
from tests.daemon.daemon_process import Media

pytestmark = pytest.mark.slow


def test_the_daemon_checks_each_output_and_status_counts_those_to_review(
    daemon_factory, media: Media, heygemd_bin: Path
) -> None:
    d = daemon_factory("quality", settle_seconds=600.0).start().wait_ready()
    d.submit("lesson", {"voice.wav": media.long_speech, "a.mp4": media.face_a, "b.mp4": media.face_b})
    status = d.wait_finished("lesson")
    jsonschema.validate(status, json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))
    assert status["state"] == "done", status
    for video in status["videos"]:
        assert video["state"] == "done" and video["quality_error"] is None, video
        quality = video["quality"]
        # the mouthwarp render follows its speech, its mouth a little ahead of the sound
        assert quality["sync"] > 0.5 and 0 <= quality["av_offset_ms"] <= 120, quality
        assert quality["face_coverage"] == 1.0 and quality["frozen"] == 0.0, quality
    assert status["videos_to_review"] == sum(v["quality"]["review"] for v in status["videos"])
    assert d.has_event("video.checked", job_id="lesson")

    table = subprocess.run(
        [str(heygemd_bin), "--config", str(d.config), "status"], capture_output=True, text=True, check=True
    ).stdout
    header, row = table.splitlines()[0], next(line for line in table.splitlines() if line.startswith("lesson"))
    assert "REVIEW" in header
    count = status["videos_to_review"]
    assert row[header.index("REVIEW") :].split()[0] == (str(count) if count else "-")
    detail = subprocess.run(
        [str(heygemd_bin), "--config", str(d.config), "status", "lesson"], capture_output=True, text=True, check=True
    ).stdout
    assert "CHECK" in detail
    a_row = next(line for line in detail.splitlines() if line.startswith("a.mp4 "))
    assert (" review " if status["videos"][0]["quality"]["review"] else " ok ") in a_row and "ms" in a_row
