"""People and roles: a viewer reads, an editor submits, cancels, retries and changes priorities, an admin also
deletes and pauses; every route has its role; API keys work until revoked; logins are throttled per address and
per account; sessions end when their account is removed; the submitter is recorded and shown. The real app over
real folders, the accounts file written as `heygemd users` writes it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from heygemd.accounts import Accounts
from heygemd.daemon.status import read_status
from heygemd.web.app import create_app
from heygemd.web.auth import COOKIE
from tests.daemon.daemon_process import Daemon, Media
from tests.web.test_api import MP4, WAV, assert_problem
from tests.web.test_e2e import web_url
from tests.web.test_security import Clock
from tests.web.webserver import ORIGIN, TOKEN, finished_job, settings_for

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
"""Tiny Argon2 costs: these tests are about who may do what, not about the hash's cost."""
WITH_TOKEN = f'token = "{TOKEN}"\n'
PASSWORDS = {"vera": "viewer-password", "ed": "editor-password", "ada": "admin-password"}
ROLES = {"vera": "viewer", "ed": "editor", "ada": "admin"}
FILES = [("audio", ("a.wav", WAV)), ("videos", ("b.mp4", MP4))]


def people(state: Path) -> Accounts:
    accounts = Accounts(state, hasher=FAST)
    for name, role in ROLES.items():
        accounts.add(name, role, PASSWORDS[name])
    return accounts


@pytest.fixture
def site(tmp_path: Path):
    """One server (the app) with a token and three accounts: ``as_(name)`` is a client logged in as that account,
    ``at(address)`` a client from that address, logged out; ``clock`` the server's wall clock."""
    clock = Clock()
    settings = settings_for(tmp_path, WITH_TOKEN)
    people(settings.paths.state_dir)
    app = create_app(settings, clock=clock)
    clients: list[TestClient] = []

    def at(address: str) -> TestClient:
        client = TestClient(app, base_url=ORIGIN, follow_redirects=False, client=(address, 50000))
        clients.append(client)
        return client

    def as_(name: str, address: str = "10.0.0.5") -> TestClient:
        client = at(address)
        response = login(client, name, PASSWORDS[name])
        assert response.status_code == 303, response.text
        return client

    yield as_, settings, clock, at
    for client in clients:
        client.close()


def login(client, user: str, password: str, origin: str = ORIGIN):
    return client.post("/login", data={"user": user, "token": password, "next": "/"}, headers={"Origin": origin})


SAME_SITE = {"Origin": ORIGIN}


def test_a_viewer_reads_but_cannot_submit_cancel_or_delete(site) -> None:
    as_, settings, _clock, _ = site
    finished_job(settings.paths.outbox, "lesson")
    vera = as_("vera")
    assert vera.get("/api/jobs/lesson").status_code == 200
    assert vera.get("/api/jobs/lesson/files/anna.jpg").status_code == 200
    assert vera.get("/").status_code == 200 and vera.get("/jobs/lesson").status_code == 200
    submit = vera.post("/api/jobs", files=FILES, headers=SAME_SITE)
    body = assert_problem(submit, 403, "FORBIDDEN_ROLE")
    assert "vera has the viewer role" in body["message"] and "needs the editor role" in body["message"], body
    assert_problem(vera.delete("/api/jobs/lesson", headers=SAME_SITE), 403, "FORBIDDEN_ROLE")
    assert "admin role" in vera.delete("/api/jobs/lesson", headers=SAME_SITE).json()["message"]
    assert_problem(vera.post("/api/jobs/lesson/retry", headers=SAME_SITE), 403, "FORBIDDEN_ROLE")
    assert_problem(vera.post("/api/pause", headers=SAME_SITE), 403, "FORBIDDEN_ROLE")
    assert vera.get("/new").status_code == 403
    page = vera.get("/jobs/lesson").text
    assert 'data-action="delete"' not in page and 'href="/new"' not in page and "vera (viewer)" in page
    assert (settings.paths.outbox / "lesson").is_dir()
    assert [p.name for p in settings.paths.inbox.iterdir() if p.name != ".heygemd"] == []


def test_an_editor_submits_and_cancels_but_only_an_admin_deletes(site) -> None:
    as_, settings, _clock, _ = site
    finished_job(settings.paths.outbox, "lesson")
    ed = as_("ed")
    response = ed.post("/api/jobs", files=FILES, data={"name": "waiting"}, headers=SAME_SITE)
    assert response.status_code == 201, response.text
    queued = ed.get("/api/jobs/waiting").json()
    assert queued["state"] == "queued" and queued["submitted_by"] == "web ed"
    cancel = ed.post("/api/jobs/waiting/cancel", headers=SAME_SITE)
    assert cancel.status_code == 202 and cancel.json()["state"] == "cancelled"
    status = read_status(settings.paths.outbox / "waiting" / "status.json")
    assert status.cancel is not None and status.cancel.by == "web ed from 10.0.0.5"
    assert status.submitted_by == "web ed", "the cancelled job still says who submitted it"
    body = assert_problem(ed.delete("/api/jobs/lesson", headers=SAME_SITE), 403, "FORBIDDEN_ROLE")
    assert "ed has the editor role; this needs the admin role" in body["message"]
    ada = as_("ada")
    assert ada.delete("/api/jobs/lesson", headers=SAME_SITE).status_code == 200
    assert not (settings.paths.outbox / "lesson").exists()
    assert 'data-action="delete"' in ada.get("/jobs/waiting").text


ADMIN_ONLY = {("DELETE", "/api/jobs/{job_id}"), ("POST", "/api/pause"), ("POST", "/api/resume")}
PAGES = [
    ("GET", "/"),
    ("GET", "/jobs/lesson"),
    ("GET", "/new"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
    ("GET", "/metrics"),
    ("POST", "/logout"),
]


def test_every_route_has_its_role(site) -> None:
    """Every API operation (from the OpenAPI description, so a new one is checked too) and every page: nothing
    without a login; a viewer reads and changes nothing; an editor changes all but what only an admin may."""
    as_, settings, clock, at = site
    finished_job(settings.paths.outbox, "lesson")
    anonymous = at("10.0.3.1")
    vera, ed = as_("vera"), as_("ed")
    spec = ed.get("/openapi.json").json()
    operations = [(m.upper(), path) for path, item in spec["paths"].items() for m in item if m != "parameters"]
    assert len(operations) >= 14 and ("PUT", "/api/jobs/{job_id}/priority") in operations
    for method, template in operations + PAGES:
        if template == "/api/events":  # a stream that does not end: its role is checked below
            continue
        path = template.replace("{job_id}", "lesson").replace("{name}", "anna.jpg")
        refused = anonymous.request(method, path, headers=SAME_SITE)
        assert refused.status_code in (401, 303), (method, template, refused.status_code)
        changes = (method not in ("GET", "HEAD") and template != "/logout") or template == "/new"  # the form
        answer = vera.request(method, path, headers=SAME_SITE)
        if changes:
            assert answer.status_code == 403 and "FORBIDDEN_ROLE" in answer.text, (method, template)
        else:
            assert answer.status_code not in (401, 403), (method, template, answer.status_code)
        if (method, template) in ADMIN_ONLY:
            assert ed.request(method, path, headers=SAME_SITE).json()["code"] == "FORBIDDEN_ROLE", (method, template)
        clock.now += 1
    assert anonymous.get("/api/events").status_code == 401


def test_api_keys_open_the_api_until_revoked(site) -> None:
    _as, settings, _clock, at = site
    cli = Accounts(settings.paths.state_dir, hasher=FAST)  # `heygemd users key ed nightly`
    _key, secret = cli.add_key("ed", "nightly")
    client = at("10.0.0.8")
    bearer = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/jobs", headers=bearer).status_code == 200
    response = client.post("/api/jobs", headers=bearer, files=FILES, data={"name": "scripted"})
    assert response.status_code == 201, response.text
    assert client.get("/api/jobs/scripted", headers=bearer).json()["submitted_by"] == "web ed"
    assert Accounts(settings.paths.state_dir).get("ed").keys[0].last_used is not None  # type: ignore[union-attr]
    cli.revoke_key("ed", "nightly")
    revoked = assert_problem(client.get("/api/jobs", headers=bearer), 401, "UNAUTHORIZED")
    assert "API key" in revoked["message"] and "heygemd users key" in revoked["hint"], revoked
    none = assert_problem(client.get("/api/jobs"), 401, "UNAUTHORIZED")  # a token and accounts: either will do
    assert "web.token" in none["hint"] and "heygemd users key" in none["hint"], none
    viewer_key = cli.add_key("vera", "dashboard")[1]
    assert_problem(
        client.post("/api/jobs", headers={"Authorization": f"Bearer {viewer_key}"}, files=FILES), 403, "FORBIDDEN_ROLE"
    )
    assert client.get("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200  # web.token


def test_the_sixth_failed_login_in_five_minutes_gets_429_per_address_and_per_account(site) -> None:
    _as, _settings, clock, at = site
    guesser = at("10.0.0.66")
    for n in range(5):
        assert login(guesser, "ed" if n % 2 else "nobody", f"guess-{n}").status_code == 401
        clock.now += 10
    sixth = login(guesser, "ada", PASSWORDS["ada"])  # even the right password is not looked at
    assert sixth.status_code == 429 and sixth.headers["retry-after"] == "250" and COOKIE not in sixth.cookies
    api = guesser.get("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert_problem(api, 429, "TOO_MANY_FAILURES")

    # one account guessed at from five addresses: the sixth try for it is refused from anywhere
    for n in range(5):
        assert login(at(f"10.0.1.{n}"), "vera", f"wrong-{n}").status_code == 401
    fresh = at("10.0.2.1")
    refused = login(fresh, "vera", PASSWORDS["vera"])
    assert refused.status_code == 429 and "account vera" in refused.text
    assert login(fresh, "ed", PASSWORDS["ed"]).status_code == 303  # that address may still log in as another
    clock.now += 301
    assert login(fresh, "vera", PASSWORDS["vera"]).status_code == 303


def test_failed_logins_are_logged(site) -> None:
    import structlog.testing

    _as, _settings, _clock, at = site
    client = at("10.0.0.9")
    with structlog.testing.capture_logs() as logs:
        login(client, "ed", "guessed-password")
        client.get("/api/jobs", headers={"Authorization": "Bearer hgd_abc_def"})
    failed = [e for e in logs if e["event"] == "web.login_failed"]
    assert [(e["client"], e["account"]) for e in failed] == [("10.0.0.9", "ed"), ("10.0.0.9", "")]
    assert [e["why"] for e in failed] == ["wrong name or password", "wrong bearer token"]
    assert "guessed-password" not in str(logs), "a tried secret is never logged"


def test_sessions_expire_and_end_when_their_account_is_removed(site) -> None:
    as_, settings, clock, _ = site
    ed = as_("ed")
    ada = as_("ada")
    assert ed.get("/api/jobs").status_code == 200
    Accounts(settings.paths.state_dir).remove("ed")  # `heygemd users remove ed`, the server running
    assert_problem(ed.get("/api/jobs"), 401, "UNAUTHORIZED")
    assert ed.get("/").status_code == 303, "the pages send to the login form"
    Accounts(settings.paths.state_dir, hasher=FAST).add("ed", "editor", PASSWORDS["ed"])
    assert_problem(ed.get("/api/jobs"), 401, "UNAUTHORIZED")  # a new account of the same name is not the old one
    Accounts(settings.paths.state_dir).set_role("ada", "viewer")
    assert_problem(ada.post("/api/pause", headers=SAME_SITE), 403, "FORBIDDEN_ROLE")  # the role counts at once
    clock.now += 12 * 3600
    assert_problem(ada.get("/api/jobs"), 401, "UNAUTHORIZED")


def test_accounts_without_a_token_still_require_a_login(make_client) -> None:
    client, settings = make_client()
    assert client.get("/api/jobs").status_code == 200  # no token, no account: open to this machine
    people(settings.paths.state_dir)
    refused = assert_problem(client.get("/api/jobs"), 401, "UNAUTHORIZED")
    form = client.get("/login").text  # no access token to log in with: the form asks for the account's password
    assert "access token" not in form.casefold() and 'name="user"' in form and ">Password <input" in form, form
    # what this server takes: a login or an account's API key (it has no web.token to send)
    assert "heygemd users key" in refused["hint"] and "log in" in refused["hint"], refused
    assert "token" not in refused["message"] + refused["hint"], refused
    assert login(client, "vera", PASSWORDS["vera"]).status_code == 303
    assert client.get("/api/jobs").status_code == 200


def test_an_editor_changes_the_priority_of_a_waiting_job_only(site) -> None:
    as_, settings, _clock, _ = site
    finished_job(settings.paths.outbox, "done-job")
    ed = as_("ed")
    assert (
        ed.post("/api/jobs", files=FILES, data={"name": "later", "priority": "low"}, headers=SAME_SITE).status_code
        == 201
    )
    assert ed.get("/api/jobs/later").json()["priority"] == 2
    changed = ed.put("/api/jobs/later/priority", json={"priority": "high"}, headers=SAME_SITE)
    assert changed.status_code == 200 and changed.json()["priority"] == 8, changed.text
    assert ed.get("/api/jobs/later").json()["priority"] == 8
    assert 'id="priority"' in ed.get("/jobs/later").text
    assert_problem(ed.put("/api/jobs/later/priority", json={"priority": 12}, headers=SAME_SITE), 400, "BAD_REQUEST")
    done = ed.put("/api/jobs/done-job/priority", json={"priority": 9}, headers=SAME_SITE)
    assert "cancel" not in assert_problem(done, 409, "ALREADY_DONE")["hint"], "a priority change is no cancel"
    assert_problem(ed.put("/api/jobs/nothing/priority", json={"priority": 9}, headers=SAME_SITE), 404, "NOT_FOUND")
    vera = as_("vera")
    assert_problem(vera.put("/api/jobs/later/priority", json={"priority": 9}, headers=SAME_SITE), 403, "FORBIDDEN_ROLE")
    assert 'id="priority"' not in vera.get("/jobs/later").text


def test_an_admin_pauses_and_resumes_and_health_says_so(site) -> None:
    as_, settings, _clock, _ = site
    ada = as_("ada")
    ed = as_("ed")
    assert_problem(ed.post("/api/pause", headers=SAME_SITE), 403, "FORBIDDEN_ROLE")
    paused = ada.post("/api/pause", headers=SAME_SITE).json()
    assert paused["paused"] and paused["paused_by"] == "web ada from 10.0.0.5" and not paused["taking_jobs"]
    health = ed.get("/api/health").json()
    assert (health["paused"], health["taking_jobs"], health["waits_for"]) == (
        True,
        False,
        "paused by web ada from 10.0.0.5",
    )
    assert ed.post("/api/jobs", files=FILES, data={"name": "held"}, headers=SAME_SITE).status_code == 201
    assert ed.get("/api/jobs/held").json()["waiting"] == "paused by web ada from 10.0.0.5"
    page = ada.get("/").text
    assert "Not taking jobs: paused by web ada" in page and 'data-intake="resume"' in page
    assert "data-intake" not in ed.get("/").text, "only an admin gets the button"
    assert (settings.paths.state_dir / "paused.json").is_file()
    assert not ada.post("/api/resume", headers=SAME_SITE).json()["paused"]
    assert ed.get("/api/health").json()["taking_jobs"]


@pytest.mark.slow
def test_the_submitter_is_in_status_json_the_log_and_the_page(
    daemon_factory: Callable[..., Daemon], media: Media
) -> None:
    daemon = daemon_factory()
    with open(daemon.config, "a", encoding="utf-8") as cfg:
        cfg.write("\n[web]\nenabled = true\nport = 0\n")
    accounts = people(daemon.state)
    _key, secret = accounts.add_key("ed", "uploader")
    daemon.start({"HEYGEMD_WEB__TOKEN": TOKEN})
    url = web_url(daemon)
    daemon.wait_ready()
    with httpx.Client(base_url=url, timeout=30) as client:
        with open(media.speech, "rb") as a, open(media.face_a, "rb") as v:
            response = client.post(
                "/api/jobs",
                headers={"Authorization": f"Bearer {secret}"},
                data={"name": "by-ed"},
                files=[("audio", ("lesson.wav", a)), ("videos", ("anna.mp4", v))],
            )
        assert response.status_code == 201, response.text
        status = daemon.wait_finished("by-ed")
        assert status["state"] == "done" and status["submitted_by"] == "web ed", status
        started = [e for e in daemon.events() if e.get("event") == "job.started" and e.get("job_id") == "by-ed"]
        assert started and started[0]["submitted_by"] == "web ed"  # SUBMITTED_BY= in journald
        assert login(client, "vera", PASSWORDS["vera"], origin=url).status_code == 303
        page = client.get("/").text
        assert "Submitted by" in page and "web ed" in page


def test_an_accounts_file_others_may_write_shuts_the_server_rather_than_opening_it(make_client) -> None:
    client, settings = make_client()
    people(settings.paths.state_dir)
    os.chmod(settings.paths.state_dir / "users.json", 0o666)
    refused = client.get("/api/jobs")
    assert refused.status_code == 500 and refused.json()["code"] == "BAD_CONFIG", refused.text
    assert "make himself admin" in refused.json()["message"]
    assert client.get("/").status_code == 500


def test_an_idempotency_key_answers_only_the_account_that_used_it(site) -> None:
    as_, settings, _clock, at = site
    add_ada = Accounts(settings.paths.state_dir, hasher=FAST)
    key = {"Idempotency-Key": "nightly-0042"}
    ed = as_("ed")
    first = ed.post("/api/jobs", files=FILES, data={"name": "nightly"}, headers={**SAME_SITE, **key})
    assert first.status_code == 201, first.text
    again = ed.post("/api/jobs", files=FILES, data={"name": "nightly"}, headers={**SAME_SITE, **key})
    assert again.status_code == 200 and again.json()["job_id"] == first.json()["job_id"]
    ada_key = add_ada.add_key("ada", "script")[1]
    other = at("10.0.0.9").post(
        "/api/jobs", files=FILES, data={"name": "nightly"}, headers={"Authorization": f"Bearer {ada_key}", **key}
    )
    assert_problem(other, 409, "IDEMPOTENCY_MISMATCH")
    jobs = sorted(p.name for p in settings.paths.inbox.iterdir() if p.name != ".heygemd")
    assert jobs == ["nightly"], "one job, answered only to the account that submitted it"


def test_editors_manage_the_presenter_library_and_viewers_only_look(site) -> None:
    as_, settings, _clock, _ = site
    library = settings.paths.presenters_dir
    library.mkdir(parents=True, exist_ok=True)
    (library / "anna.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really")
    vera, ed = as_("vera"), as_("ed")
    page = vera.get("/presenters")
    assert page.status_code == 200 and "anna" in page.text
    assert 'id="add-presenter"' not in page.text and 'data-action="delete-presenter"' not in page.text
    assert 'href="/new"' not in page.text, "no way to a form a viewer may not use"
    body = assert_problem(vera.delete("/api/presenters/anna", headers=SAME_SITE), 403, "FORBIDDEN_ROLE")
    assert "needs the editor role" in body["message"]
    assert_problem(vera.post("/api/presenters", files=FILES, headers=SAME_SITE), 403, "FORBIDDEN_ROLE")
    assert (library / "anna.mp4").is_file()
    page = ed.get("/presenters").text
    assert (
        'id="add-presenter"' in page
        and 'data-action="delete-presenter"' in page
        and 'class="button primary" href="/new"' in page
    )
    assert ed.delete("/api/presenters/anna", headers=SAME_SITE).status_code == 200
    assert not (library / "anna.mp4").exists()
