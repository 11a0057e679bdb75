"""GET /metrics on the real app: the API's token rule plus [web] metrics_token (which opens /metrics and nothing
else), the exposition in either format, and an exposition that `promtool check metrics` accepts."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from pydantic import SecretStr, ValidationError

from heygemd.daemon.status import ErrorStatus, VideoStatus, utc_now
from heygemd.settings import WebSettings
from tests.web.test_api import assert_problem
from tests.web.test_security import BEARER, WITH_TOKEN, Clock, login
from tests.web.webserver import ORIGIN, finished_job

SCRAPE_TOKEN = "scrape-token-0123456789"
WITH_SCRAPE_TOKEN = WITH_TOKEN + f'metrics_token = "{SCRAPE_TOKEN}"\n'
SCRAPER = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian's prometheus package; deploy/setup.sh)"
)


def some_jobs(outbox) -> None:  # type: ignore[no-untyped-def]
    now = utc_now()
    finished_job(outbox, "lesson-01")
    finished_job(
        outbox,
        "lesson-02",
        state="partial",
        videos=[
            VideoStatus(input="anna.mp4", state="done", finished=now, timings={"total": 3.2}, cached={"faces": True}),
            VideoStatus(
                input="bob.mp4", state="failed", finished=now, error=ErrorStatus(code="NO_FACE", message="bob.mp4")
            ),
        ],
    )


def test_metrics_take_the_api_token_a_session_or_the_metrics_token(make_client) -> None:
    client, settings = make_client(WITH_SCRAPE_TOKEN)
    some_jobs(settings.paths.outbox)
    missing = client.get("/metrics")
    assert_problem(missing, 401, "UNAUTHORIZED")
    assert_problem(client.get("/metrics", headers={"Authorization": "Bearer not-a-token"}), 401, "UNAUTHORIZED")
    for headers in (BEARER, SCRAPER):
        answer = client.get("/metrics", headers=headers)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert 'heygemd_videos_rendered_total{engine="mouthwarp"} 1.0' in answer.text.splitlines()
        assert 'heygemd_videos_failed_total{code="NO_FACE",engine="mouthwarp"} 1.0' in answer.text.splitlines()
    assert login(client).status_code == 303  # the pages' session cookie, as the dashboard's own browser has it
    assert client.get("/metrics").status_code == 200


def test_the_metrics_token_opens_nothing_else_and_counts_as_a_wrong_guess_there(make_client) -> None:
    clock = Clock()
    client, settings = make_client(WITH_SCRAPE_TOKEN, clock=clock)
    finished_job(settings.paths.outbox, "lesson-01")
    for method, path in (("GET", "/api/jobs"), ("GET", "/api/jobs/lesson-01"), ("DELETE", "/api/jobs/lesson-01")):
        assert_problem(client.request(method, path, headers=SCRAPER), 401, "UNAUTHORIZED")
    assert (settings.paths.outbox / "lesson-01" / "status.json").is_file()
    assert login(client, SCRAPE_TOKEN).status_code == 401, "no session for the scraper's token"
    page = client.get("/", headers=SCRAPER)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")  # the pages: log in first
    assert_problem(client.get("/metrics", headers=SCRAPER), 429, "TOO_MANY_FAILURES")  # 5 wrong guesses from here
    clock.now += 300
    assert client.get("/metrics", headers=SCRAPER).status_code == 200


def test_without_a_token_metrics_are_open_to_loopback_names_only(make_client) -> None:
    client, _ = make_client()
    assert client.get("/metrics").status_code == 200
    assert_problem(client.get("/metrics", headers={"Host": "metrics.example.com"}), 421, "WRONG_HOST")


def test_a_short_metrics_token_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 16 bytes"):
        WebSettings(token=SecretStr("test-token-0123456789"), metrics_token=SecretStr("short"))


def test_openmetrics_when_the_scraper_asks_for_it(make_client) -> None:
    client, settings = make_client(WITH_SCRAPE_TOKEN)
    some_jobs(settings.paths.outbox)
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    answer = client.get("/metrics", headers={**SCRAPER, "Accept": accept})
    assert answer.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    lines = answer.text.splitlines()
    assert lines[-1] == "# EOF" and lines.count("# EOF") == 1, "one exposition, not one per registry"
    assert "# TYPE heygemd_videos_rendered counter" in lines
    assert 'heygemd_videos_rendered_total{engine="mouthwarp"} 1.0' in lines


@needs_promtool
def test_the_exposition_passes_promtool(make_client) -> None:
    client, settings = make_client()
    some_jobs(settings.paths.outbox)
    text = client.get("/metrics", headers={"Origin": ORIGIN}).text
    assert "heygemd_render_seconds_bucket" in text and "heygemd_jobs{" in text
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and checked.stdout.strip() == "" and checked.stderr.strip() == "", checked
