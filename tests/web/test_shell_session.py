"""The curl session of docs/web-api.md, run as it is printed, against a real server: it stops at the first error
with the server's answer, and, with the real daemon rendering, ends with the outputs downloaded."""

from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon.daemon_process import Daemon, Media
from tests.web.test_e2e import start_with_web
from tests.web.webserver import TOKEN, clean_env, write_config

WEB_API_DOC = Path(__file__).resolve().parents[2] / "docs" / "web-api.md"
requires_curl_and_jq = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("jq") and shutil.which("bash")), reason="needs bash, curl and jq"
)


def documented_session() -> str:
    """The bash block of docs/web-api.md that talks to the API."""
    blocks = re.findall(r"```bash\n(.*?)```", WEB_API_DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    return next(b for b in blocks if "$HEYGEMD/api/jobs" in b)


def run_session(folder: Path, url: str, token: str) -> subprocess.CompletedProcess[str]:
    env = clean_env({"HEYGEMD": url, "HEYGEMD_WEB__TOKEN": token})
    return subprocess.run(
        ["bash", "-c", documented_session()], cwd=folder, env=env, capture_output=True, text=True, timeout=120
    )


@requires_curl_and_jq
def test_the_documented_session_stops_at_once_with_the_servers_answer(tmp_path: Path, web_process) -> None:
    server = web_process(write_config(tmp_path, "port = 0\n"), env={"HEYGEMD_WEB__TOKEN": TOKEN}).wait_ready()
    work = tmp_path / "work"
    work.mkdir()
    for name in ("lesson.wav", "anna.mp4", "bob.mp4"):
        (work / name).write_bytes(b"not really media")

    wrong = run_session(work, server.url, "not-the-token")
    assert wrong.returncode != 0 and "submitted" not in wrong.stdout, wrong
    assert '"code":"UNAUTHORIZED"' in wrong.stderr and "Bearer" in wrong.stderr, wrong.stderr

    (work / "bob.mp4").unlink()
    missing = run_session(work, server.url, TOKEN)
    assert missing.returncode != 0 and "submitted" not in missing.stdout, missing
    assert "curl: (26)" in missing.stderr, missing.stderr  # curl's own error: it cannot read the file
    assert [p.name for p in (tmp_path / "inbox").iterdir() if p.name != ".heygemd"] == []


@pytest.mark.slow
@requires_curl_and_jq
def test_the_documented_session_renders_and_downloads(
    daemon_factory: Callable[..., Daemon], media: Media, tmp_path: Path
) -> None:
    daemon, url = start_with_web(daemon_factory)
    work = tmp_path / "work"
    work.mkdir()
    for name, source in (("lesson.wav", media.speech), ("anna.mp4", media.face_a), ("bob.mp4", media.face_b)):
        shutil.copyfile(source, work / name)
    done = run_session(work, url, TOKEN)
    assert done.returncode == 0, done
    assert done.stdout.startswith("submitted lesson-01\n") and done.stdout.rstrip().endswith("lesson-01: done")
    outbox = daemon.outbox / "lesson-01"
    assert (work / "anna-lipsync.mp4").read_bytes() == (outbox / "anna.mp4").read_bytes()
    assert sorted(zipfile.ZipFile(work / "lesson-01.zip").namelist()) == sorted(p.name for p in outbox.iterdir())
