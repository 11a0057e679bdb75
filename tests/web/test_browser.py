"""The real pages in a real headless browser (Debian's chromium through its chromedriver, nothing downloaded):
log in, upload a job through the page, watch the progress bar move while the real daemon renders, and play
the result; the form's own checks; the pages on a 420 px wide phone. The pages are saved as screenshots (into
the folder $WEB_TEST_SCREENSHOTS names, when set: heygemd/web/static/ holds the ones docs/web-api.md shows)."""

from __future__ import annotations

import os
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


def screenshot(driver: object, folder: Path, name: str, *, whole_page: bool = False) -> Path:
    """Save what the browser shows as ``name`` (and into $WEB_TEST_SCREENSHOTS, when set); ``whole_page``: the
    window made as tall as the page for it, as wide as it was."""
    shot = folder / name
    size = driver.get_window_size()  # type: ignore[attr-defined]
    if whole_page:
        page, view = driver.execute_script(  # type: ignore[attr-defined]
            "return [document.documentElement.scrollHeight, window.innerHeight];"
        )
        driver.set_window_size(size["width"], size["height"] - view + min(page + 40, 2400))  # type: ignore[attr-defined]
    driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
    driver.set_window_size(size["width"], size["height"])  # type: ignore[attr-defined]
    assert shot.stat().st_size > 10_000
    if os.environ.get("WEB_TEST_SCREENSHOTS"):  # 256 colours: a third of the bytes in the repository
        from PIL import Image

        with Image.open(shot) as image:
            image.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(
                Path(os.environ["WEB_TEST_SCREENSHOTS"]) / name, optimize=True
            )
    return shot


def log_in(driver: object, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/login")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "token").send_keys(TOKEN)  # type: ignore[attr-defined]
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()  # type: ignore[attr-defined]
    wait_until(lambda: driver.find_elements(By.ID, "machine"), 30, "the header of a logged-in page")  # type: ignore[attr-defined]


def overflow(driver: object) -> int:
    """How many pixels the page is wider than the window (0: nothing to scroll sideways)."""
    return int(
        driver.execute_script(  # type: ignore[attr-defined]
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;"
        )
    )


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
        "left out: notes.txt (not an audio, a video or a photo)",
    ]
    driver.get(url + "/new")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "audio").send_keys(str(media.long_speech))  # type: ignore[attr-defined]
    driver.find_element(By.ID, "videos").send_keys(str(media.face_a))  # type: ignore[attr-defined]
    driver.find_element(By.ID, "name").send_keys("browser lesson")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "submit").click()  # type: ignore[attr-defined]
    wait_until(lambda: "/jobs/browser%20lesson" in driver.current_url, 60, "the job page after the upload")  # type: ignore[attr-defined]

    seen: list[int] = []

    video_seen: list[tuple[str, str]] = []  # the video's bar value and the words under it, as shown together

    def finished() -> bool:
        value = _summary_progress(driver)
        if value is not None and (not seen or seen[-1] != value):
            seen.append(value)
        shown = driver.execute_script(  # type: ignore[attr-defined]
            """const card = document.querySelector('article.video');
               return card && [card.querySelector('.bar').getAttribute('aria-valuenow'),
                               card.querySelector('[data-field="progress-text"]').textContent];"""
        )
        if shown and (not video_seen or video_seen[-1] != tuple(shown)):
            video_seen.append(tuple(shown))
        return bool(driver.find_elements(By.CSS_SELECTOR, "article.video video"))  # type: ignore[attr-defined]

    wait_until(
        finished,
        120,
        "the finished video's player on the job page",
        diagnostics=lambda: f"progress seen {seen}\n{daemon.diagnostics()}",
    )
    assert any(0 < v < 100 for v in seen), f"the progress bar never showed a value between 0 and 100: {seen}"
    assert seen == sorted(seen), seen
    percents = [(bar, words.split("%")[0]) for bar, words in video_seen if "%" in words]
    assert percents and all(bar == number for bar, number in percents), video_seen  # one number, said twice

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
    screenshot(driver, tmp_path, "screenshot.png")

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


@requires_chromium
def test_on_a_phone_failures_read_as_failures_and_the_form_checks_before_it_uploads(
    browser: object, daemon_factory: Callable[..., Daemon], media: Media, faceless: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    daemon, url = start_with_web(daemon_factory)
    daemon.submit("lesson-01", {"voice.wav": media.speech, "anna.mp4": media.face_a, "pattern.mp4": faceless})
    daemon.submit("pattern only", {"voice.wav": media.speech, "pattern.mp4": faceless})
    assert daemon.wait_finished("lesson-01")["state"] == "partial"
    assert daemon.wait_finished("pattern only")["state"] == "failed"

    driver.get(url + "/")  # type: ignore[attr-defined]
    assert "/login" in driver.current_url  # type: ignore[attr-defined]
    assert driver.find_element(By.CSS_SELECTOR, "header.top").text.strip() == "heygemd"  # type: ignore[attr-defined]
    log_in(driver, url)
    driver.set_window_size(420, 900)  # type: ignore[attr-defined]
    assert driver.execute_script("return window.innerWidth") <= 420  # type: ignore[attr-defined]

    # the list: each failure in its colour, with its code and reason; nothing wider than the phone
    driver.get(url + "/")  # type: ignore[attr-defined]

    def bar_colour(row: str) -> str:
        return str(
            driver.execute_script(  # type: ignore[attr-defined]
                "return getComputedStyle(document.querySelector(arguments[0])).backgroundColor", row + " .bar span"
            )
        )

    failed = driver.find_element(By.CSS_SELECTOR, 'tr[data-job="pattern only"]')  # type: ignore[attr-defined]
    assert "NO_FACE" in failed.text and "a face was found in 0% of the frames" in failed.text
    assert bar_colour('tr[data-job="pattern only"]') == "rgb(197, 48, 48)"  # --bad, not the blue of progress
    assert bar_colour('tr[data-job="lesson-01"]') == "rgb(183, 121, 31)"  # --warn for a partial job
    assert overflow(driver) == 0
    screenshot(driver, tmp_path, "screenshot-jobs-420.png")

    driver.get(url + "/jobs/lesson-01")  # type: ignore[attr-defined]
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "article.video video"), 30, "the player")  # type: ignore[attr-defined]
    text = driver.find_element(By.TAG_NAME, "main").text  # type: ignore[attr-defined]
    assert "Download all (ZIP)" in text and "NO_FACE" in text
    assert overflow(driver) == 0
    screenshot(driver, tmp_path, "screenshot-job-420.png", whole_page=True)

    # the form: what the server would refuse is said in the page, in its words, and nothing is uploaded
    driver.get(url + "/new")  # type: ignore[attr-defined]
    error = driver.find_element(By.ID, "upload-error")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "submit").click()  # type: ignore[attr-defined]
    assert error.text.startswith("Choose the audio: the speech the presenters will say.")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a sound")
    driver.find_element(By.ID, "audio").send_keys(str(notes))  # type: ignore[attr-defined]
    driver.find_element(By.ID, "videos").send_keys(str(media.face_a))  # type: ignore[attr-defined]
    driver.find_element(By.ID, "submit").click()  # type: ignore[attr-defined]
    assert error.text.startswith("“notes.txt” is not an audio file or a video.") and ".mp3" in error.text
    driver.find_element(By.ID, "audio").send_keys(str(media.speech))  # type: ignore[attr-defined]
    driver.find_element(By.ID, "crf").send_keys("80")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "submit").click()  # type: ignore[attr-defined]
    assert error.text.startswith("Quality (CRF) must be a whole number from 0 to 51, not 80.")
    assert "multipart" not in error.text and "BAD_UPLOAD" not in error.text
    assert not driver.find_element(By.ID, "submit").get_attribute("disabled")  # type: ignore[attr-defined]
    assert overflow(driver) == 0
    screenshot(driver, tmp_path, "screenshot-new-420.png", whole_page=True)
    assert sorted(p.name for p in daemon.inbox.iterdir() if p.name != ".heygemd") == []
    assert not daemon.has_event("web.upload_refused") and not daemon.has_event("web.job_submitted")
