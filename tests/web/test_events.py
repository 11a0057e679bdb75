"""Live updates: the real `heygemd web` process streams a status.json change as a `job` event, a vanished job
as `removed`, and what the machine does as `machine` (Server-Sent Events, as the pages receive them)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx

from heygemd.daemon.status import VideoStatus, read_status, write_status
from tests.web.webserver import finished_job, write_config


def events(lines: Iterator[str]) -> Iterator[tuple[str, dict]]:
    name = None
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: ") and name is not None:
            yield name, json.loads(line.removeprefix("data: "))
            name = None


def test_status_changes_reach_the_event_stream(tmp_path: Path, web_process) -> None:
    config = write_config(tmp_path, "port = 0\n")
    outbox = tmp_path / "outbox"
    server = web_process(config).wait_ready()
    with httpx.Client(base_url=server.url, timeout=httpx.Timeout(10, read=60)) as client:
        with client.stream("GET", "/api/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = events(response.iter_lines())
            name, machine = next(stream)
            assert name == "machine" and machine["engine"] == "mouthwarp" and machine["busy"] is False

            status = finished_job(
                outbox,
                "lesson",
                state="processing",
                videos=[VideoStatus(input="anna.mp4", state="processing", progress=0.2)],
            )
            name, doc = next(stream)
            assert (name, doc["job_id"], doc["state"], doc["videos"][0]["progress"]) == (
                "job",
                "lesson",
                "processing",
                0.2,
            )

            path = outbox / "lesson" / "status.json"
            write_status(
                path,
                status.model_copy(update={"videos": [VideoStatus(input="anna.mp4", state="processing", progress=0.6)]}),
            )
            name, doc = next(stream)
            assert (name, doc["videos"][0]["progress"]) == ("job", 0.6)

            done = read_status(path).model_copy(
                update={
                    "state": "done",
                    "progress": 1.0,
                    "videos": [VideoStatus(input="anna.mp4", state="done", progress=1.0, output="anna.mp4")],
                }
            )
            write_status(path, done)
            name, doc = next(stream)
            assert (name, doc["state"]) == ("job", "done")

            shutil.rmtree(outbox / "lesson")
            assert next(stream) == ("removed", {"job_id": "lesson"})


def test_one_job_stream_sends_only_that_job(tmp_path: Path, web_process) -> None:
    config = write_config(tmp_path, "port = 0\n")
    outbox = tmp_path / "outbox"
    finished_job(outbox, "mine", state="processing", videos=[VideoStatus(input="a.mp4", state="processing")])
    server = web_process(config).wait_ready()
    with httpx.Client(base_url=server.url, timeout=httpx.Timeout(10, read=60)) as client:
        with client.stream("GET", "/api/events", params={"job": "mine"}) as response:
            stream = (e for e in events(response.iter_lines()) if e[0] != "machine")
            assert next(stream)[1]["job_id"] == "mine"  # its current state at once
            finished_job(outbox, "other", state="processing")
            status = read_status(outbox / "mine" / "status.json")
            write_status(outbox / "mine" / "status.json", status.model_copy(update={"progress": 0.7}))
            name, doc = next(stream)
            assert (name, doc["job_id"], doc["progress"]) == ("job", "mine", 0.7)


def test_a_job_missing_from_one_look_only_is_not_removed(tmp_path: Path) -> None:
    """A claim renames the job from the inbox into the claim folder; one listing can fall in between."""
    from heygemd.web.catalog import Catalog
    from heygemd.web.events import ChangeFeed
    from tests.web.webserver import settings_for

    settings = settings_for(tmp_path)
    finished_job(settings.paths.outbox, "lesson")
    feed = ChangeFeed(Catalog(settings), "lesson")
    assert [e.split("\n")[0] for e in feed.poll()] == ["event: job", "event: machine"]
    hidden = tmp_path / "hidden"
    (settings.paths.outbox / "lesson").rename(hidden)
    assert feed.poll() == []  # gone for one look: maybe a rename in flight
    hidden.rename(settings.paths.outbox / "lesson")
    assert feed.poll() == []  # back, unchanged: nothing to say
    shutil.rmtree(settings.paths.outbox / "lesson")
    assert feed.poll() == []
    assert feed.poll() == ['event: removed\ndata: {"job_id":"lesson"}\n\n']
