"""The safety rules, each with a test: the token on every request (bearer for the API, login cookie for the
pages), cross-site requests refused, no token -> no non-loopback bind, a full disk answered cleanly."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from heygemd.errors import ConfigError
from heygemd.settings import WebSettings
from heygemd.web.auth import COOKIE, check_bind, is_loopback
from tests.processes import run_on_full_disk
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


@pytest.mark.parametrize("token", ["x", "fifteen-bytes!!", "é" * 7])
def test_a_short_token_is_refused_off_loopback(token: str) -> None:
    with pytest.raises(ConfigError, match="web.token") as caught:
        check_bind(WebSettings(host="0.0.0.0", token=SecretStr(token)))
    assert "at least 16 bytes" in caught.value.message and "openssl rand" in caught.value.hint
    for enough in ("0123456789abcdef", "é" * 8):  # 16 bytes
        check_bind(WebSettings(host="0.0.0.0", token=SecretStr(enough)))
    check_bind(WebSettings(host="127.0.0.1", token=SecretStr(token)))  # this machine only: the admin's choice


class Clock:
    """An injected wall clock: tests move it, nothing sleeps."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def login(client, token: str = TOKEN):
    return client.post("/login", data={"token": token, "next": "/"}, headers={"Origin": ORIGIN})


def test_token_guesses_are_throttled_per_client_address(make_client) -> None:
    clock = Clock()
    client, settings = make_client(WITH_TOKEN, address="10.0.0.66", clock=clock)
    other, _ = make_client(WITH_TOKEN, root=settings.paths.inbox.parent, address="10.0.0.7", clock=clock)
    wrong = {"Authorization": "Bearer not-the-token"}
    for _ in range(3):
        assert_problem(client.get("/api/health", headers=wrong), 401, "UNAUTHORIZED")
        clock.now += 10
    for _ in range(2):
        assert login(client, "not-the-token").status_code == 401  # the login form counts too
        clock.now += 10
    for attempt in (lambda: client.get("/api/health", headers=BEARER), lambda: client.get("/api/jobs", headers=wrong)):
        response = attempt()  # refused unchecked: even the right token, so guessing on learns nothing
        body = assert_problem(response, 429, "TOO_MANY_FAILURES")
        assert response.headers["retry-after"] == str(300 - 50) and "5 wrong tokens" in body["message"]
    page = login(client)
    assert page.status_code == 429 and page.headers["retry-after"] == "250" and "TOO_MANY_FAILURES" in page.text
    assert COOKIE not in page.cookies
    assert other.get("/api/health", headers=BEARER).status_code == 200  # another address is not held up
    clock.now += 249
    assert client.get("/api/health", headers=BEARER).status_code == 429
    clock.now += 1  # the first failure is 5 minutes old
    assert client.get("/api/health", headers=BEARER).status_code == 200
    assert_problem(client.get("/api/health", headers=wrong), 401, "UNAUTHORIZED")
    assert client.get("/api/health", headers=wrong).status_code == 429  # five within the last 5 minutes again


def test_a_session_survives_the_throttle_of_its_address(make_client) -> None:
    """Someone guessing from the same address (a shared NAT) does not log out the people already logged in."""
    clock = Clock()
    client, _ = make_client(WITH_TOKEN, clock=clock)
    assert login(client).status_code == 303
    for _ in range(6):
        client.get("/api/health", headers={"Authorization": "Bearer guess"})
    assert client.get("/api/health").status_code == 200
    assert client.get("/").status_code == 200


def session(value: str) -> dict[str, str]:
    """The header a browser (or whoever copied the cookie) sends with session ``value``."""
    return {"Cookie": f"{COOKIE}={value}"}


def test_a_session_is_dated_signed_and_expires(make_client) -> None:
    clock = Clock()
    client, _ = make_client(WITH_TOKEN + "session_hours = 2\n", clock=clock)
    first = login(client)
    assert first.status_code == 303
    assert "Max-Age=7200" in first.headers["set-cookie"]
    value = client.cookies[COOKIE]
    assert login(client).status_code == 303 and client.cookies[COOKIE] != value  # a new session each time
    client.cookies.clear()
    forged = value[:-1] + ("0" if value[-1] != "0" else "1")
    assert_problem(client.get("/api/health", headers=session(forged)), 401, "UNAUTHORIZED")
    clock.now += 2 * 3600 - 1
    assert client.get("/api/health", headers=session(value)).status_code == 200
    clock.now += 1
    expired = client.get("/api/health", headers=session(value))
    assert "log in again" in assert_problem(expired, 401, "UNAUTHORIZED")["message"]
    assert client.get("/", headers=session(value)).headers["location"].startswith("/login")


def test_logging_out_ends_the_session_for_good(make_client) -> None:
    client, _ = make_client(WITH_TOKEN)
    assert login(client).status_code == 303
    value = client.cookies[COOKIE]
    out = client.post("/logout", headers={"Origin": ORIGIN})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert COOKIE not in client.cookies
    replayed = client.get("/api/health", headers=session(value))  # a copy of the cookie kept somewhere
    assert_problem(replayed, 401, "UNAUTHORIZED")
    assert client.get("/jobs/x", headers=session(value)).status_code == 303


def test_heygemd_web_refuses_a_non_loopback_bind_without_a_long_token(tmp_path: Path) -> None:
    config = write_config(tmp_path, 'host = "0.0.0.0"\nport = 0\n')
    for command, token in (("web", {}), ("run", {}), ("web", {"HEYGEMD_WEB__TOKEN": "hunter2"})):
        env = clean_env({"HEYGEMD_WEB__ENABLED": "true", **token})
        result = subprocess.run(
            [*heygemd_argv(), "--config", str(config), command],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode != 0, result.stdout + result.stderr
        for expected in ("BAD_CONFIG", "refusing to start", "web.token", "HEYGEMD_WEB__TOKEN"):
            assert expected in result.stderr, result.stderr
        assert ("only 7 bytes long" in result.stderr) == bool(token), result.stderr


def test_a_non_loopback_server_refuses_requests_without_the_token(tmp_path: Path, web_process) -> None:
    config = write_config(tmp_path, 'host = "0.0.0.0"\nport = 0\n')
    server = web_process(config, env={"HEYGEMD_WEB__TOKEN": TOKEN}).wait_ready()
    url = server.url.replace("0.0.0.0", "127.0.0.1")
    assert httpx.get(f"{url}/api/health").status_code == 401
    assert httpx.get(f"{url}/", follow_redirects=False).status_code == 303
    assert httpx.get(f"{url}/api/health", headers=BEARER).json()["status"] == "ok"


def test_behind_a_proxy_on_loopback_guesses_count_per_forwarded_address(tmp_path: Path, web_process) -> None:
    """The real server (uvicorn) takes the client's address from X-Forwarded-For when the proxy is on loopback,
    so one guesser behind nginx does not lock everybody else out; and a token-less one refuses a foreign Host."""
    server = web_process(write_config(tmp_path, "port = 0\n"), env={"HEYGEMD_WEB__TOKEN": TOKEN}).wait_ready()
    guesser = {"X-Forwarded-For": "203.0.113.9", "Authorization": "Bearer guess"}
    for _ in range(5):
        assert httpx.get(f"{server.url}/api/health", headers=guesser).status_code == 401
    refused = httpx.get(f"{server.url}/api/health", headers=guesser | BEARER)
    assert refused.status_code == 429 and refused.json()["code"] == "TOO_MANY_FAILURES"
    assert 0 < int(refused.headers["retry-after"]) <= 300
    someone = {"X-Forwarded-For": "198.51.100.4"} | BEARER
    assert httpx.get(f"{server.url}/api/health", headers=someone).json()["status"] == "ok"


def test_a_real_token_less_server_answers_a_rebound_name_421(tmp_path: Path, web_process) -> None:
    server = web_process(write_config(tmp_path, "port = 0\n")).wait_ready()
    rebound = httpx.get(f"{server.url}/api/jobs", headers={"Host": "evil.example"})
    assert rebound.status_code == 421 and rebound.json()["code"] == "WRONG_HOST"
    assert httpx.get(f"{server.url}/api/jobs").json()["total"] == 0


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
    result = run_on_full_disk(tmp_path, "inbox", DISK_FULL_SCRIPT)
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
