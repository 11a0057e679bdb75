"""The real pages in a real headless browser (Debian's chromium through its chromedriver, nothing downloaded):
log in, upload a job through the page, watch the progress bar move while the real daemon renders, and play
the result. The last page is saved as a screenshot (to $WEB_TEST_SCREENSHOT when set, e.g. for the README)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon.daemon_process import Daemon, Media, wait_until
from tests.web.test_e2e import start_with_web
from tests.web.webserver import TOKEN

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
requires_chromium = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="Debian chromium + chromium-driver are not installed (deploy/setup.sh installs them)",
)


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium-manager must never fetch a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-gpu",
        "--no-first-run",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _summary_progress(driver: object) -> int | None:
    """The job page's overall progress bar value (0..100), or None while the page is between loads."""
    value = driver.execute_script(  # type: ignore[attr-defined]
        "const b = document.querySelector('.summary .bar'); return b ? b.getAttribute('aria-valuenow') : null;"
    )
    return int(value) if value is not None else None


@requires_chromium
def test_upload_through_the_page_watch_progress_and_play_the_result(
    browser: object, daemon_factory: Callable[..., Daemon], media: Media, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    daemon, url = start_with_web(daemon_factory)

    driver.get(url + "/")  # type: ignore[attr-defined]
    assert "/login" in driver.current_url  # type: ignore[attr-defined]
    driver.find_element(By.ID, "token").send_keys(TOKEN)  # type: ignore[attr-defined]
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()  # type: ignore[attr-defined]
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "a.button.primary"), 30, "the jobs page")  # type: ignore[attr-defined]
    assert "mouthwarp" in driver.find_element(By.ID, "machine").text  # type: ignore[attr-defined]

    driver.get(url + "/new")  # type: ignore[attr-defined]
    chosen = driver.execute_script(  # type: ignore[attr-defined]
        """const dt = new DataTransfer();
           for (const name of ['voice.wav', 'anna.mp4', 'photo.jpg', 'notes.txt']) dt.items.add(new File(['x'], name));
           document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
           return document.getElementById('chosen').innerText;"""
    )
    assert chosen.splitlines() == [
        "audio: voice.wav (0.0 MiB)",
        "presenter: anna.mp4 (0.0 MiB)",
        "presenter: photo.jpg (0.0 MiB)",
    ]
    driver.get(url + "/new")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "audio").send_keys(str(media.long_speech))  # type: ignore[attr-defined]
    driver.find_element(By.ID, "videos").send_keys(str(media.face_a))  # type: ignore[attr-defined]
    driver.find_element(By.ID, "name").send_keys("browser lesson")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "submit").click()  # type: ignore[attr-defined]
    wait_until(lambda: "/jobs/browser%20lesson" in driver.current_url, 60, "the job page after the upload")  # type: ignore[attr-defined]

    seen: list[int] = []

    def finished() -> bool:
        value = _summary_progress(driver)
        if value is not None and (not seen or seen[-1] != value):
            seen.append(value)
        return bool(driver.find_elements(By.CSS_SELECTOR, "article.video video"))  # type: ignore[attr-defined]

    wait_until(
        finished,
        120,
        "the finished video's player on the job page",
        diagnostics=lambda: f"progress seen {seen}\n{daemon.diagnostics()}",
    )
    assert any(0 < v < 100 for v in seen), f"the progress bar never showed a value between 0 and 100: {seen}"
    assert seen == sorted(seen), seen

    playing = driver.execute_async_script(  # type: ignore[attr-defined]
        """const done = arguments[arguments.length - 1];
           const v = document.querySelector('article.video video');
           v.muted = true;
           v.play().then(() => setTimeout(() => done([v.readyState, v.currentTime, v.error && v.error.code]), 700),
                         e => done([v.readyState, -1, String(e)]));"""
    )
    ready_state, current_time, error = playing
    assert error is None and ready_state >= 2 and current_time > 0, playing
    driver.execute_script("document.querySelector('article.video video').pause()")  # type: ignore[attr-defined]

    text = driver.find_element(By.TAG_NAME, "main").text  # type: ignore[attr-defined]
    assert "Download all (ZIP)" in text and "job.started" in driver.find_element(By.ID, "log").text  # type: ignore[attr-defined]
    shot = tmp_path / "job-page.png"
    driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
    assert shot.stat().st_size > 10_000
    if os.environ.get("WEB_TEST_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["WEB_TEST_SCREENSHOT"])

    driver.get(url + "/")  # type: ignore[attr-defined]
    row = driver.find_element(By.CSS_SELECTOR, 'tr[data-job="browser lesson"]')  # type: ignore[attr-defined]
    assert "done" in row.text and row.find_element(By.CSS_SELECTOR, ".bar").get_attribute("aria-valuenow") == "100"


@requires_chromium
def test_cancel_buttons_in_the_list_and_on_the_job_page(
    browser: object, daemon_factory: Callable[..., Daemon], media: Media
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    driver = browser
    daemon, url = start_with_web(daemon_factory)
    daemon.submit("waiting", {"voice.wav": media.speech, "anna.mp4": media.face_a}, marker=False)  # never settles
    presenters = {
        "anna.mp4": media.face_a,
        "bob.mp4": media.face_b,
        "carol.mp4": media.face_a,
        "dave.mp4": media.face_b,
    }
    daemon.submit("long", {"voice.wav": media.long_speech, **presenters})  # four videos: time to click

    def accept_confirm() -> None:
        WebDriverWait(driver, 10).until(expected_conditions.alert_is_present())
        driver.switch_to.alert.accept()  # type: ignore[attr-defined]

    driver.get(url + "/login")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "token").send_keys(TOKEN)  # type: ignore[attr-defined]
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()  # type: ignore[attr-defined]
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, 'tr[data-job="waiting"]'), 30, "the jobs page")  # type: ignore[attr-defined]

    # the list: the waiting job's Cancel button cancels it at once
    driver.find_element(By.CSS_SELECTOR, 'tr[data-job="waiting"] [data-action="cancel"]').click()  # type: ignore[attr-defined]
    accept_confirm()

    def waiting_row_state() -> str | None:
        rows = driver.find_elements(By.CSS_SELECTOR, 'tr[data-job="waiting"] .badge')  # type: ignore[attr-defined]
        try:
            return rows[0].text if rows else None
        except StaleElementReferenceException:  # the row was replaced by the reload between find and read
            return None

    wait_until(lambda: waiting_row_state() == "cancelled", 30, "the waiting job's row to say cancelled")
    assert not driver.find_elements(By.CSS_SELECTOR, 'tr[data-job="waiting"] [data-action="cancel"]')  # type: ignore[attr-defined]

    # the job page: a rendering job stops, the page follows it to cancelled and offers the retry
    def second_video_rendering() -> bool:
        status = daemon.status("long")
        return bool(status and [v["state"] for v in status["videos"]][:2] == ["done", "processing"])

    daemon.wait_for(second_video_rendering, 90, "bob.mp4 to be rendering")
    driver.get(url + "/jobs/long")  # type: ignore[attr-defined]
    driver.find_element(By.CSS_SELECTOR, '[data-action="cancel"]').click()  # type: ignore[attr-defined]
    accept_confirm()

    def page_state() -> str | None:
        found = driver.execute_script(  # type: ignore[attr-defined]
            "const b = document.querySelector('.summary .badge'); return b ? b.textContent : null;"
        )
        return str(found) if found is not None else None

    wait_until(lambda: page_state() == "cancelled", 30, "the job page to say cancelled")
    wait_until(
        lambda: driver.find_elements(By.CSS_SELECTOR, '[data-action="retry"]'),  # type: ignore[attr-defined]
        30,
        "the retry button of the cancelled job",
    )
    text = driver.find_element(By.TAG_NAME, "main").text  # type: ignore[attr-defined]
    assert "Retry cancelled videos" in text and "Cancelled" in text
    assert not driver.find_elements(By.CSS_SELECTOR, '[data-action="cancel"]')  # type: ignore[attr-defined]
    status = daemon.status("long")
    assert status is not None
    states = [v["state"] for v in status["videos"]]
    assert states[0] == "done" and states[-1] == "cancelled" and set(states) == {"done", "cancelled"}, states
    players = driver.find_elements(By.CSS_SELECTOR, "article.video video")  # type: ignore[attr-defined]
    assert len(players) == states.count("done"), "the videos done stay playable"
