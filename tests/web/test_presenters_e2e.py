"""The presenter library through the API and the pages, with the real daemon (`heygemd run` serving the web):
a presenter added over HTTP is prepared and becomes ready; a job naming it renders; removing it while that job
runs answers PRESENTER_BUSY, and once the job is done it goes. In a real browser: a presenter dropped onto the
Presenters page is seen preparing, then ready with its poster; a job made of one audio and a ticked presenter is
followed to its player."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.daemon.daemon_process import Daemon, Media, wait_until
from tests.web.test_browser import browser, log_in, requires_chromium, screenshot  # noqa: F401  (the fixture)
from tests.web.test_e2e import AUTH, start_with_web

pytestmark = pytest.mark.slow


def test_add_a_presenter_render_it_and_remove_it_once_no_job_needs_it(
    daemon_factory: Callable[..., Daemon], media: Media
) -> None:
    daemon, url = start_with_web(daemon_factory)
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        with open(media.face_large, "rb") as video:
            response = client.post("/api/presenters", files={"video": ("anna.mp4", video)}, data={"notes": "studio"})
        assert response.status_code == 201, response.text

        def ready() -> dict | None:
            anna = client.get("/api/presenters/anna").json()
            return anna if anna["state"] != "preparing" else None

        anna = daemon.wait_for(ready, 120, "anna prepared")
        assert anna["state"] == "ready" and anna["notes"] == "studio" and (anna["width"], anna["height"]) == (960, 540)
        assert client.get(anna["poster_url"]).content[:2] == b"\xff\xd8"

        with open(media.long_speech, "rb") as audio:
            response = client.post(
                "/api/jobs", files={"audio": ("lesson.wav", audio)}, data={"presenters": "anna", "name": "lesson"}
            )
        assert response.status_code == 201, response.text
        daemon.wait_for(lambda: daemon.claimed("lesson"), 60, "the job claimed")
        busy = client.delete("/api/presenters/anna")
        assert busy.status_code == 409 and busy.json()["code"] == "PRESENTER_BUSY", busy.text
        assert "lesson" in busy.json()["message"]

        status = daemon.wait_finished("lesson", timeout=180)
        assert status["state"] == "done", status
        assert status["videos"][0]["presenter"] == "anna" and status["videos"][0]["face_track"] == "cached"
        assert client.delete("/api/presenters/anna").json() == {"deleted": "anna"}
        assert client.get("/api/presenters").json() == {"presenters": []}


@requires_chromium
def test_add_a_presenter_on_the_page_then_tick_it_for_a_job(
    browser: object,  # noqa: F811  (test_browser's fixture)
    daemon_factory: Callable[..., Daemon],
    media: Media,
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    daemon, url = start_with_web(daemon_factory)
    log_in(driver, url)
    driver.get(url + "/presenters")  # type: ignore[attr-defined]
    assert "The library is empty" in driver.find_element(By.TAG_NAME, "main").text  # type: ignore[attr-defined]
    driver.find_element(By.ID, "presenter-file").send_keys(str(media.face_large))  # type: ignore[attr-defined]
    driver.find_element(By.ID, "presenter-name").send_keys("anna")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "presenter-submit").click()  # type: ignore[attr-defined]

    states: list[str] = []

    def card_state() -> str | None:
        state = driver.execute_script(  # type: ignore[attr-defined]
            "const c = document.querySelector('article[data-presenter=\"anna\"]'); return c ? c.dataset.state : null;"
        )
        if state and (not states or states[-1] != state):
            states.append(state)
        return state

    wait_until(lambda: card_state() == "ready", 120, "anna ready on the page", diagnostics=daemon.diagnostics)
    assert states[0] == "preparing" and states[-1] == "ready", states
    poster_width = wait_until(
        lambda: driver.execute_script(  # type: ignore[attr-defined]
            "const i = document.querySelector('article[data-presenter=\"anna\"] img'); return i && i.naturalWidth;"
        ),
        30,
        "the poster shown",
    )
    assert poster_width > 100
    text = driver.find_element(By.CSS_SELECTOR, 'article[data-presenter="anna"]').text  # type: ignore[attr-defined]
    assert "960×540" in text and "mouthwarp" in text
    screenshot(driver, tmp_path, "screenshot-presenters.png")

    driver.get(url + "/new")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "audio").send_keys(str(media.speech))  # type: ignore[attr-defined]
    driver.find_element(By.ID, "name").send_keys("ticked")  # type: ignore[attr-defined]
    driver.find_element(By.CSS_SELECTOR, 'input[name="presenters"][value="anna"]').click()  # type: ignore[attr-defined]
    driver.find_element(By.ID, "submit").click()  # type: ignore[attr-defined]
    wait_until(lambda: "/jobs/ticked" in driver.current_url, 60, "the job page after the upload")  # type: ignore[attr-defined]
    wait_until(
        lambda: driver.find_elements(By.CSS_SELECTOR, "article.video video"),  # type: ignore[attr-defined]
        180,
        "the rendered presenter's player",
        diagnostics=daemon.diagnostics,
    )
    status = daemon.status("ticked")
    assert status is not None and status["state"] == "done"
    assert [(v["input"], v["presenter"]) for v in status["videos"]] == [("anna.mp4", "anna")]
