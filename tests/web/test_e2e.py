"""Through the API to the real daemon and back: `heygemd run` with the web enabled serves the API from its own
process while the worker renders; a submitted job is rendered, followed live over SSE, downloaded as a ZIP equal
to the outbox, its failed video retried as a new job, and deleted."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.daemon.daemon_process import Daemon, Media
from tests.web.webserver import TOKEN

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def web_url(daemon: Daemon) -> str:
    def ready() -> str | None:
        return next((e["url"] for e in daemon.events() if e.get("event") == "web.ready"), None)

    return daemon.wait_for(ready, 90, "web.ready in the daemon's log").rstrip("/")


def start_with_web(daemon_factory: Callable[..., Daemon]) -> tuple[Daemon, str]:
    """A daemon with its web server on (any free port, the test token), ready; and the server's URL."""
    daemon = daemon_factory()
    with open(daemon.config, "a", encoding="utf-8") as cfg:
        cfg.write("\n[web]\nenabled = true\nport = 0\n")
    daemon.start({"HEYGEMD_WEB__TOKEN": TOKEN})
    url = web_url(daemon)
    daemon.wait_ready()
    return daemon, url


def sse_events(client: httpx.Client, path: str, until: Callable[[dict], bool]) -> list[dict]:
    """Read 'job' events from the stream until one satisfies ``until``; returns every job event read."""
    seen: list[dict] = []
    with client.stream("GET", path, headers=AUTH, timeout=httpx.Timeout(10, read=120)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "job":
                seen.append(json.loads(line.removeprefix("data: ")))
                if until(seen[-1]):
                    return seen
    raise AssertionError(f"the event stream ended; seen {seen}")


def test_submit_render_follow_download_retry_delete(
    daemon_factory: Callable[..., Daemon], media: Media, faceless: Path
) -> None:
    daemon, url = start_with_web(daemon_factory)
    with httpx.Client(base_url=url, timeout=30) as client:
        with open(media.long_speech, "rb") as a, open(media.face_a, "rb") as v1, open(faceless, "rb") as v2:
            response = client.post(
                "/api/jobs",
                headers=AUTH,
                data={"name": "lesson-01", "loop_mode": "loop"},
                files=[("audio", ("lesson.wav", a)), ("videos", ("anna.mp4", v1)), ("videos", ("pattern.mp4", v2))],
            )
        assert response.status_code == 201, response.text
        job = response.json()["job_id"]
        assert job == "lesson-01"

        while_busy: list[dict] = []

        def finished(status: dict) -> bool:
            if status["state"] == "processing" and not while_busy:  # the API answers while the worker renders
                while_busy.append(client.get("/api/health", headers=AUTH).json())
            return status["state"] in ("done", "partial", "failed")

        seen = sse_events(client, f"/api/events?job={job}", finished)
        assert while_busy and while_busy[0]["status"] == "ok" and while_busy[0]["current"] in (job, None)
        assert while_busy[0]["workers"] == 1, "the web server in `heygemd run` sees its own renderer's heartbeat"
        states = [s["state"] for s in seen]
        assert "processing" in states and states[-1] == "partial", states
        progress = [s["progress"] for s in seen]
        assert progress == sorted(progress) and progress[-1] == 1.0

        status = daemon.wait_finished(job)
        assert client.get(f"/api/jobs/{job}", headers=AUTH).json() == status
        by_input = {v["input"]: v for v in status["videos"]}
        assert by_input["anna.mp4"]["state"] == "done" and by_input["pattern.mp4"]["error"]["code"] == "NO_FACE"

        outbox = daemon.outbox / job
        with client.stream("GET", f"/api/jobs/{job}/outputs.zip", headers=AUTH) as response:
            assert response.status_code == 200
            data = response.read()
        archive = zipfile.ZipFile(io.BytesIO(data))
        on_disk = sorted(p.name for p in outbox.iterdir())
        assert sorted(archive.namelist()) == on_disk and "anna.mp4" in on_disk and "anna.jpg" in on_disk
        for name in on_disk:
            assert archive.read(name) == (outbox / name).read_bytes(), name
        video = client.get(f"/api/jobs/{job}/files/anna.mp4", headers=AUTH)
        assert video.content == (outbox / "anna.mp4").read_bytes()

        retry = client.post(f"/api/jobs/{job}/retry", headers=AUTH)
        assert retry.status_code == 201, retry.text
        again = retry.json()["job_id"]
        assert again == "lesson-01-retry"
        retried = daemon.wait_finished(again)
        assert [v["input"] for v in retried["videos"]] == ["pattern.mp4"]
        assert retried["audio"]["file"] == "lesson.wav" and retried["state"] == "failed"
        assert client.get("/api/health", headers=AUTH).json()["status"] == "ok"

        assert client.delete(f"/api/jobs/{job}", headers=AUTH).status_code == 200
        assert not outbox.exists()
        assert not list(daemon.state.glob(f"archive/*/{job}"))
        assert [j["job_id"] for j in client.get("/api/jobs", headers=AUTH).json()["jobs"]] == [again]
    assert daemon.running


def test_a_video_as_the_audio_renders_with_its_sound_track(
    daemon_factory: Callable[..., Daemon], media: Media, tmp_path: Path
) -> None:
    from tests.pipeline.media import ffmpeg

    talk = tmp_path / "talk.mp4"  # a presenter video with the speech as its sound track
    ffmpeg("-i", str(media.face_a), "-i", str(media.speech), "-c:v", "copy", "-c:a", "aac", "-shortest", str(talk))
    daemon, url = start_with_web(daemon_factory)
    with httpx.Client(base_url=url, timeout=30) as client:
        with open(talk, "rb") as a, open(media.face_a, "rb") as v:
            response = client.post(
                "/api/jobs", headers=AUTH, files=[("audio", ("talk.mp4", a)), ("videos", ("anna.mp4", v))]
            )
        assert response.status_code == 201, response.text
        job = response.json()["job_id"]
        status = daemon.wait_finished(job)
        assert status["state"] == "done", status
        assert status["audio"]["file"] == "talk.mp4" and status["audio"]["duration_s"] > 0.5
        assert [v["input"] for v in status["videos"]] == ["anna.mp4"] and not status["ignored"]
        head = client.head(f"/api/jobs/{job}/files/anna.mp4", headers=AUTH, params={"download": "true"})
        output = daemon.outbox / job / "anna.mp4"
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(output.stat().st_size)
        assert head.headers["content-disposition"].startswith('attachment; filename="talk - anna.mp4"')
