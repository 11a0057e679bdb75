"""The safety rules, each with a test: the token on every request (bearer for the API, login cookie for the
pages), cross-site requests refused, no token -> no non-loopback bind, a full disk answered cleanly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from heygemd.errors import ConfigError
from heygemd.settings import WebSettings
from heygemd.web.auth import COOKIE, check_bind, is_loopback
from tests.web.test_api import MP4, WAV, assert_problem
from tests.web.webserver import ORIGIN, TOKEN, clean_env, finished_job, heygemd_argv, write_config

WITH_TOKEN = f'token = "{TOKEN}"\n'
BEARER = {"Authorization": f"Bearer {TOKEN}"}
API_CALLS = [
    ("GET", "/api/health"),
    ("GET", "/api/jobs"),
    ("GET", "/api/jobs/lesson"),
    ("GET", "/api/jobs/lesson/files/anna.mp4"),
    ("GET", "/api/jobs/lesson/outputs.zip"),
    ("POST", "/api/jobs/lesson/retry"),
    ("POST", "/api/jobs/lesson/cancel"),
    ("DELETE", "/api/jobs/lesson"),
    ("POST", "/api/jobs"),
    ("GET", "/api/events"),
    ("GET", "/openapi.json"),
]


@pytest.mark.parametrize(("method", "path"), API_CALLS)
def test_every_api_request_needs_the_token(make_client, method: str, path: str) -> None:
    client, settings = make_client(WITH_TOKEN)
    finished_job(settings.paths.outbox, "lesson")
    response = client.request(method, path)
    assert_problem(response, 401, "UNAUTHORIZED")
    assert response.headers["www-authenticate"] == "Bearer"
    assert "no" in response.json()["message"] or "none" in response.json()["message"]
    wrong = client.request(method, path, headers={"Authorization": "Bearer not-the-token"})
    assert_problem(wrong, 401, "UNAUTHORIZED")
    assert "wrong" in wrong.json()["message"]
    assert_problem(client.request(method, path, headers={"Authorization": f"Basic {TOKEN}"}), 401, "UNAUTHORIZED")
    assert (settings.paths.outbox / "lesson" / "status.json").is_file()  # nothing happened


def test_the_right_bearer_token_opens_the_api(make_client) -> None:
    client, settings = make_client(WITH_TOKEN)
    finished_job(settings.paths.outbox, "lesson")
    assert client.get("/api/jobs/lesson", headers=BEARER).json()["job_id"] == "lesson"
    response = client.post("/api/jobs", headers=BEARER, files=[("audio", ("a.wav", WAV)), ("videos", ("b.mp4", MP4))])
    assert response.status_code == 201, response.text


def test_pages_send_to_the_login_form_which_sets_a_strict_httponly_cookie(make_client) -> None:
    client, settings = make_client(WITH_TOKEN)
    finished_job(settings.paths.outbox, "lesson")
    for page in ("/", "/jobs/lesson", "/new", "/docs"):
        response = client.get(page)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")
    assert client.get("/login").status_code == 200
    wrong = client.post("/login", data={"token": "nope", "next": "/jobs/lesson"}, headers={"Origin": ORIGIN})
    assert wrong.status_code == 401 and "not right" in wrong.text
    assert COOKIE not in wrong.cookies
    right = client.post("/login", data={"token": TOKEN, "next": "/jobs/lesson"}, headers={"Origin": ORIGIN})
    assert right.status_code == 303 and right.headers["location"] == "/jobs/lesson"
    cookie = right.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN not in cookie
    assert client.get("/jobs/lesson").status_code == 200  # the client keeps the cookie
    assert client.get("/api/jobs/lesson").status_code == 200  # the pages' scripts call the API with it
    evil = client.post("/login", data={"token": TOKEN, "next": "//evil.example/"}, headers={"Origin": ORIGIN})
    assert evil.headers["location"] == "/"  # never redirected off the site


def test_cross_site_requests_cannot_change_anything(make_client) -> None:
    client, settings = make_client(WITH_TOKEN)
    finished_job(settings.paths.outbox, "lesson")
    (settings.paths.inbox / "waiting").mkdir()  # a job a cross-site page would like to cancel
    client.post("/login", data={"token": TOKEN}, headers={"Origin": ORIGIN})
    files = [("audio", ("a.wav", WAV)), ("videos", ("b.mp4", MP4))]
    for headers in (
        {"Origin": "https://evil.example"},
        {"Referer": "https://evil.example/page"},
        {"Origin": "null"},
        {},
    ):
        assert_problem(client.delete("/api/jobs/lesson", headers=headers), 403, "CROSS_SITE")
        assert_problem(client.post("/api/jobs", headers=headers, files=files), 403, "CROSS_SITE")
        assert_problem(client.post("/api/jobs/waiting/cancel", headers=headers), 403, "CROSS_SITE")
    assert (settings.paths.outbox / "lesson").is_dir()
    assert [p.name for p in settings.paths.inbox.iterdir() if p.name != ".heygemd"] == ["waiting"]
    login_csrf = client.post("/login", data={"token": TOKEN}, headers={"Origin": "https://evil.example"})
    assert login_csrf.status_code == 403
    same = client.delete("/api/jobs/lesson", headers={"Origin": ORIGIN})
    assert same.status_code == 200, same.text


def test_without_a_token_loopback_is_open_but_still_same_origin_only(make_client) -> None:
    client, settings = make_client()
    finished_job(settings.paths.outbox, "lesson")
    assert client.get("/").status_code == 200
    assert_problem(client.delete("/api/jobs/lesson", headers={"Origin": "https://evil.example"}), 403, "CROSS_SITE")
    assert client.delete("/api/jobs/lesson").status_code == 200  # curl on the same machine sends no Origin


REBOUND_HOSTS = [
    "evil.example",
    "evil.example:7860",
    "localhost.evil.example",
    "127.0.0.1.evil.example:7860",
    "192.168.1.20:7860",
    "[::2]:7860",
    "0.0.0.0",
]
LOOPBACK_HOSTS = ["localhost", "LocalHost:7860", "127.0.0.1", "127.0.0.1:7860", "127.1.2.3:80", "[::1]", "[::1]:7860"]


@pytest.mark.parametrize("host", REBOUND_HOSTS)
def test_without_a_token_only_loopback_host_names_are_served(make_client, host: str) -> None:
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 reaches the server with
    ``Host: evil.example``; nothing is listed, served, uploaded or deleted for it, whatever its Origin says."""
    client, settings = make_client()
    finished_job(settings.paths.outbox, "lesson")
    (settings.paths.inbox / "waiting").mkdir()
    headers = {"Host": host, "Origin": f"http://{host}"}
    calls = [c for c in API_CALLS if c[1] != "/api/events"] + [("GET", "/"), ("GET", "/new"), ("POST", "/login")]
    files = [("audio", ("a.wav", WAV)), ("videos", ("b.mp4", MP4))]
    for method, path in calls:
        kwargs = {"files": files} if path == "/api/jobs" and method == "POST" else {}
        body = assert_problem(client.request(method, path, headers=headers, **kwargs), 421, "WRONG_HOST")
        assert host.split(":")[0].strip("[]") in body["message"] and "web.token" in body["hint"]
    assert (settings.paths.outbox / "lesson" / "status.json").is_file()
    assert [p.name for p in settings.paths.inbox.iterdir()] == ["waiting"]  # not even a staging folder


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_without_a_token_loopback_host_names_are_served(make_client, host: str) -> None:
    client, _ = make_client()
    assert client.get("/api/health", headers={"Host": host}).json()["status"] == "ok"


def test_with_a_token_any_host_name_is_served_to_the_token(make_client) -> None:
    """Behind a reverse proxy the Host is the site's name: the token, not the name, decides."""
    client, _ = make_client(WITH_TOKEN)
    headers = {"Host": "heygemd.example.com"}
    assert_problem(client.get("/api/health", headers=headers), 401, "UNAUTHORIZED")
    assert client.get("/api/health", headers=headers | BEARER).json()["status"] == "ok"


def test_an_origin_with_another_scheme_is_another_site(make_client) -> None:
    client, settings = make_client()
    finished_job(settings.paths.outbox, "lesson")
    for origin in ("https://localhost", "ws://localhost", "localhost"):
        assert_problem(client.delete("/api/jobs/lesson", headers={"Origin": origin}), 403, "CROSS_SITE")
        assert_problem(
            client.delete("/api/jobs/lesson", headers={"Referer": f"{origin}/jobs/lesson"}), 403, "CROSS_SITE"
        )
    assert (settings.paths.outbox / "lesson").is_dir()
    assert client.delete("/api/jobs/lesson", headers={"Origin": ORIGIN}).status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts_need_no_token(host: str) -> None:
    assert is_loopback(host)
    check_bind(WebSettings(host=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org", ""])
def test_other_hosts_refuse_to_start_without_a_token(host: str) -> None:
    with pytest.raises(ConfigError, match="refusing to start"):
        check_bind(WebSettings(host=host))
    check_bind(WebSettings(host=host, token=SecretStr("x" * 20)))


def test_heygemd_web_refuses_a_non_loopback_bind_without_token(tmp_path: Path) -> None:
    config = write_config(tmp_path, 'host = "0.0.0.0"\nport = 0\n')
    for command in ("web", "run"):
        env = clean_env({"HEYGEMD_WEB__ENABLED": "true"})
        result = subprocess.run(
            [*heygemd_argv(), "--config", str(config), command],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode != 0, result.stdout + result.stderr
        for expected in ("BAD_CONFIG", "refusing to start", "HEYGEMD_WEB__TOKEN"):
            assert expected in result.stderr, result.stderr


def test_a_non_loopback_server_refuses_requests_without_the_token(tmp_path: Path, web_process) -> None:
    config = write_config(tmp_path, 'host = "0.0.0.0"\nport = 0\n')
    server = web_process(config, env={"HEYGEMD_WEB__TOKEN": TOKEN}).wait_ready()
    url = server.url.replace("0.0.0.0", "127.0.0.1")
    assert httpx.get(f"{url}/api/health").status_code == 401
    assert httpx.get(f"{url}/", follow_redirects=False).status_code == 303
    assert httpx.get(f"{url}/api/health", headers=BEARER).json()["status"] == "ok"


DISK_FULL_SCRIPT = """
import sys
from pathlib import Path
from fastapi.testclient import TestClient
from heygemd.web.app import create_app
from tests.web.webserver import settings_for, tree

root = Path(sys.argv[1])
client = TestClient(create_app(settings_for(root)), base_url="http://localhost")
files = [("audio", ("a.wav", b"RIFF" * 100)), ("videos", ("b.mp4", b"v" * 3_000_000))]
response = client.post("/api/jobs", files=files)
print(response.status_code, response.text)
print("LEFT", [p for p in tree(root / "inbox") if p != ".heygemd" and p != ".heygemd/uploads"])
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare is not installed")
def test_a_full_disk_is_a_clear_error_and_leaves_no_half_job(tmp_path: Path) -> None:
    """A real full filesystem: a 1 MiB tmpfs mounted on the inbox in a private mount namespace."""
    (tmp_path / "inbox").mkdir()
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here (unshare -rm: {probe.stderr.decode().strip()})")
    repo = Path(__file__).resolve().parents[2]
    shell = f'mount -t tmpfs -o size=1m tmpfs "$1/inbox" && exec "{sys.executable}" -c "$2" "$1"'
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", shell, "sh", str(tmp_path), DISK_FULL_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo,
        env=clean_env({"PYTHONPATH": str(repo)}),
    )
    assert result.returncode == 0, result.stderr
    status_line, left_line = result.stdout.strip().splitlines()[-2:]
    assert status_line.startswith("507 "), result.stdout
    assert '"code":"DISK_FULL"' in status_line and "b.mp4" in status_line and "Free space" in status_line
    assert left_line == "LEFT []"


def test_an_upload_cut_off_midway_leaves_nothing(tmp_path: Path, web_process) -> None:
    """The client goes away halfway through its body: the staging folder goes, nothing reaches the inbox."""
    import socket
    from urllib.parse import urlsplit

    from tests.daemon.daemon_process import wait_until

    config = write_config(tmp_path, "port = 0\n")
    server = web_process(config).wait_ready()
    uploads = tmp_path / "inbox" / ".heygemd" / "uploads"
    address = urlsplit(server.url)
    part = b'--b\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n\r\n'
    head = part % (b"audio", b"lesson.wav") + WAV + b"\r\n" + part % (b"videos", b"anna.mp4") + b"v" * 50_000
    with socket.create_connection((address.hostname, address.port)) as sock:
        sock.sendall(
            b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 1000000\r\n\r\n" + head
        )
        wait_until(
            lambda: any(p.is_file() and p.stat().st_size > 0 for p in uploads.glob("*/anna.mp4")),
            30,
            "the upload to be written into its staging folder",
        )
    wait_until(lambda: uploads.is_dir() and not any(uploads.iterdir()), 30, "the staging folder to be removed")
    assert [p.name for p in (tmp_path / "inbox").iterdir()] == [".heygemd"]
    assert httpx.get(f"{server.url}/api/jobs").json()["total"] == 0
