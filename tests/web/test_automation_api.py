"""POST /api/jobs for workflow tools, with the real app over real folders and real servers on 127.0.0.1: inputs by
URL (JSON, a form, or next to uploads), a callback_url refused at submission when the server would not call it,
every URL failure refused with its code and nothing left in the inbox, and the Idempotency-Key (also across a
restart of a real `heygemd web`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi.testclient import TestClient

from heygemd.settings import Settings, load_settings
from heygemd.web.app import create_app
from tests.httpserver import Answer, Receiver, Seen, receiver
from tests.web.webserver import ORIGIN, TOKEN, WebProcess, write_config

WAV = b"RIFF" + os.urandom(3000)
MP4 = b"\x00\x00\x00\x18ftypmp42" + os.urandom(5000)
SECRET = "callback-secret-0123456789"


def serve(seen: Seen) -> Answer:
    path = seen.path.partition("?")[0]
    if path == "/speech.wav":
        return Answer(200, WAV, {"Content-Type": "audio/wav"})
    if path in ("/anna.mp4", "/bob.mp4"):
        return Answer(200, MP4, {"Content-Type": "video/mp4"})
    if path == "/away.mp4":  # a redirect to a host fetch_hosts does not list
        return Answer(302, headers={"Location": "http://media.example/anna.mp4"})
    return Answer(404, b"not here")


@pytest.fixture
def media() -> Iterator[Receiver]:
    with receiver(serve) as server:
        yield server


@pytest.fixture
def client_for(tmp_path: Path) -> Iterator[Callable[..., tuple[TestClient, Settings]]]:
    """``client_for(web=..., notify=...)``: the real app over tmp_path's folders, with those [web] and [notify]
    sections (URL inputs from 127.0.0.1 unless ``web`` says otherwise)."""
    clients: list[TestClient] = []

    def make(web: str = 'fetch_hosts = ["127.0.0.1"]', notify: str = "") -> tuple[TestClient, Settings]:
        settings = load_settings(write_config(tmp_path, web, extra=f"[notify]\n{notify}\n" if notify else ""))
        client = TestClient(create_app(settings), base_url=ORIGIN)
        clients.append(client)
        return client, settings

    yield make
    for client in clients:
        client.close()


def allowed_callbacks(*hosts: str) -> str:
    return f'signing_secret = "{SECRET}"\ncallback_hosts = {list(hosts)!r}'.replace("'", '"')


def upload(client: TestClient, headers: dict[str, str] | None = None, **fields: Any) -> httpx.Response:
    files = [("audio", ("lesson.wav", WAV)), ("videos", ("anna.mp4", MP4))]
    return client.post("/api/jobs", files=files, data=fields, headers=headers or {})


def problem(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["hint"]
    return str(body["message"])


def nothing_queued(settings: Settings) -> None:
    assert [p.name for p in settings.paths.inbox.iterdir()] == [".heygemd"], "nothing in the inbox"
    uploads = settings.paths.state_dir / "uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == [], "no staging folder left"


def job_files(settings: Settings, job_id: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (settings.paths.inbox / job_id).iterdir()}


# ---------------------------------------------------------------------------------------------- callback_url


def test_a_callback_url_the_server_would_not_call_is_refused_at_submission(client_for, media: Receiver) -> None:
    client, settings = client_for()  # no signing secret: callbacks are off
    assert "notify.signing_secret is not set" in problem(
        upload(client, callback_url=media.url("/hook")), 400, "CALLBACK_NOT_ALLOWED"
    )
    nothing_queued(settings)

    client, settings = client_for(notify=allowed_callbacks("127.0.0.1", "169.254.0.0/16"))
    message = problem(
        upload(client, callback_url="https://hooks.example.org/x?token=s3cret"), 400, "CALLBACK_NOT_ALLOWED"
    )
    assert "hooks.example.org" in message and "notify.callback_hosts" in message and "s3cret" not in message
    job = {"audio_url": media.url("/speech.wav"), "video_urls": [media.url("/anna.mp4")]}
    metadata = client.post("/api/jobs", json={**job, "callback_url": "http://169.254.169.254/latest/meta-data"})
    assert "cloud metadata" in problem(metadata, 400, "CALLBACK_NOT_ALLOWED")
    assert media.seen == [], "refused before anything was downloaded"
    nothing_queued(settings)

    response = upload(client, name="lesson", callback_url=media.url("/hook"))
    assert response.status_code == 201, response.text
    assert job_files(settings, "lesson")["job.toml"] == f'callback_url = "{media.url("/hook")}"\n'.encode()


# ---------------------------------------------------------------------------------------------- inputs by URL


def test_a_job_given_by_urls_as_json_lands_in_the_inbox_like_an_upload(client_for, media: Receiver) -> None:
    client, settings = client_for(notify=allowed_callbacks("127.0.0.1"))
    body = {
        "name": "lesson-01",
        "audio_url": media.url("/speech.wav"),
        "video_urls": [media.url("/anna.mp4"), media.url("/bob.mp4?sig=1")],
        "engine": "mouthwarp",
        "crf": 20,
        "callback_url": media.url("/hook"),
    }
    response = client.post("/api/jobs", json=body)
    assert response.status_code == 201, response.text
    assert response.json() == {"job_id": "lesson-01", "status_url": "/api/jobs/lesson-01"}
    files = job_files(settings, "lesson-01")
    assert sorted(files) == [".ready", "anna.mp4", "bob.mp4", "job.toml", "speech.wav"]
    assert files["speech.wav"] == WAV and files["anna.mp4"] == MP4
    assert files["job.toml"].decode() == f'engine = "mouthwarp"\ncrf = 20\ncallback_url = "{media.url("/hook")}"\n'
    status = client.get("/api/jobs/lesson-01").json()
    assert status["state"] == "queued" and status["audio"]["file"] == "speech.wav"


def test_a_form_and_url_fields_next_to_uploads_are_taken_too(client_for, media: Receiver) -> None:
    client, settings = client_for()
    form = [("audio_url", media.url("/speech.wav")), ("video_urls", media.url("/anna.mp4")), ("name", "by-form")]
    form.append(("video_urls", media.url("/bob.mp4")))
    response = client.post(
        "/api/jobs", content=urlencode(form).encode(), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 201, response.text
    assert sorted(job_files(settings, "by-form")) == [".ready", "anna.mp4", "bob.mp4", "speech.wav"]

    mixed = client.post(
        "/api/jobs",
        files=[("audio", ("lesson.wav", WAV)), ("videos", ("anna.mp4", b"uploaded" + MP4))],
        data={"name": "mixed", "video_urls": [media.url("/anna.mp4")]},
    )
    assert mixed.status_code == 201, mixed.text
    files = job_files(settings, "mixed")
    assert sorted(files) == [".ready", "anna-2.mp4", "anna.mp4", "lesson.wav"], "a fetched name never replaces a file"
    assert files["anna.mp4"] == b"uploaded" + MP4 and files["anna-2.mp4"] == MP4


@pytest.mark.parametrize(
    ("video", "web", "status", "code", "words"),
    [
        ("http://media.example/anna.mp4", "", 400, "FETCH_NOT_ALLOWED", ["media.example", "web.fetch_hosts"]),
        ("/away.mp4", "", 400, "FETCH_NOT_ALLOWED", ["media.example"]),
        ("/anna.mp4", "max_file_mb = 0.004", 413, "UPLOAD_TOO_LARGE", ["video_urls[0]", "web.max_file_mb"]),
        ("/gone.mp4", "", 502, "FETCH_FAILED", ["video_urls[0]", "127.0.0.1", "404"]),
    ],
)
def test_a_url_that_cannot_be_used_fails_the_submission_and_queues_nothing(
    client_for, media: Receiver, video: str, web: str, status: int, code: str, words: list[str]
) -> None:
    client, settings = client_for(web=f'fetch_hosts = ["127.0.0.1"]\n{web}')
    url = video if video.startswith("http") else media.url(video)
    body = {"audio_url": media.url("/speech.wav"), "video_urls": [url]}
    message = problem(client.post("/api/jobs", json=body), status, code)
    assert all(word in message for word in words), message
    nothing_queued(settings)
    if code == "FETCH_NOT_ALLOWED" and video.startswith("http"):
        assert media.seen == [], "every host is checked before anything is downloaded"


def test_bodies_that_are_no_job_are_refused(client_for, media: Receiver) -> None:
    client, settings = client_for()
    cases = [
        (b"{not json", "not valid JSON"),
        (b'["a"]', "not a JSON object"),
        (b'{"audio_url": "x", "video_urls": ["y"], "script": "hi"}', "unknown field 'script'"),
        (b'{"video_urls": ["http://127.0.0.1/a.mp4"]}', "exactly one 'audio'"),
        (b'{"audio_url": "http://127.0.0.1/a.wav"}', "at least one presenter"),
        (b'{"audio_url": "ftp://127.0.0.1/a.wav", "video_urls": "http://127.0.0.1/a.mp4"}', "audio_url is not an http"),
        (b'{"audio_url": "http://127.0.0.1/a.wav", "video_urls": ["http://127.0.0.1/a.mp4"], "crf": 99}', "crf"),
    ]
    for body, words in cases:
        response = client.post("/api/jobs", content=body, headers={"Content-Type": "application/json"})
        assert words in problem(response, 400, "BAD_UPLOAD"), body
    huge = b'{"name": "' + b"x" * (300 * 1024) + b'"}'
    problem(
        client.post("/api/jobs", content=huge, headers={"Content-Type": "application/json"}), 413, "UPLOAD_TOO_LARGE"
    )
    nothing_queued(settings)


# ---------------------------------------------------------------------------------------------- Idempotency-Key


def test_the_same_key_answers_the_first_job_and_another_request_is_a_mismatch(client_for, media: Receiver) -> None:
    client, settings = client_for()
    key = {"Idempotency-Key": "run-0042"}
    first = upload(client, key, name="lesson")
    again = upload(client, key, name="lesson")
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json() == first.json() == {"job_id": "lesson", "status_url": "/api/jobs/lesson"}
    problem(upload(client, key, name="lesson", crf="18"), 409, "IDEMPOTENCY_MISMATCH")
    assert sorted(p.name for p in settings.paths.inbox.iterdir()) == [".heygemd", "lesson"], "one job"

    by_url = {"audio_url": media.url("/speech.wav"), "video_urls": [media.url("/anna.mp4")]}
    url_key = {"Idempotency-Key": "run-0043"}
    assert client.post("/api/jobs", json=by_url, headers=url_key).status_code == 201
    fetched = len(media.seen)
    assert client.post("/api/jobs", json=by_url, headers=url_key).json()["job_id"] == "speech"
    assert len(media.seen) == fetched, "a replay downloads nothing"

    empty = {"Idempotency-Key": " "}  # a tool that leaves the header empty sends no key
    assert [upload(client, empty).json()["job_id"] for _ in range(2)] == ["lesson-2", "lesson-3"]
    problem(upload(client, {"Idempotency-Key": "k" * 300}), 400, "BAD_IDEMPOTENCY_KEY")


def test_a_failed_request_gives_its_key_back(client_for, media: Receiver) -> None:
    client, settings = client_for()
    key = {"Idempotency-Key": "run-0044"}
    broken = {"audio_url": media.url("/speech.wav"), "video_urls": [media.url("/gone.mp4")]}
    problem(client.post("/api/jobs", json=broken, headers=key), 502, "FETCH_FAILED")
    nothing_queued(settings)
    fixed = {**broken, "video_urls": [media.url("/anna.mp4")]}
    assert client.post("/api/jobs", json=fixed, headers=key).status_code == 201


def test_a_key_holds_across_a_restart_of_the_server(tmp_path: Path, web_process) -> None:
    config = write_config(tmp_path, f'token = "{TOKEN}"\nport = 0')
    headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "3f6c2a9e-restart"}

    def post(server: WebProcess, crf: str) -> httpx.Response:
        files = [("audio", ("lesson.wav", WAV)), ("videos", ("anna.mp4", MP4))]
        return httpx.post(f"{server.url}/api/jobs", files=files, data={"crf": crf}, headers=headers, timeout=30)

    first = web_process(config).wait_ready()
    created = post(first, "20")
    assert created.status_code == 201, created.text
    first.stop()
    second = web_process(config).wait_ready()
    replayed = post(second, "20")
    assert (replayed.status_code, replayed.json()) == (200, created.json())
    assert post(second, "21").json()["code"] == "IDEMPOTENCY_MISMATCH"
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == [".heygemd", "lesson"]
