"""The server-rendered pages: what each shows, from real status files (the browser test drives them live)."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from heygemd.daemon.status import ErrorStatus, VideoStatus, write_status
from heygemd.settings import load_settings
from heygemd.web.app import create_app
from tests.web.test_api import upload
from tests.web.webserver import ORIGIN, finished_job, renderer_here, write_config


def test_jobs_page_lists_jobs_with_state_progress_counts_and_pages(make_client) -> None:
    client, settings = make_client("page_size = 2\n")
    for n in range(3):
        finished_job(settings.paths.outbox, f"job-{n}", claimed_minutes_ago=30 - n)
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    assert 'data-job="job-2"' in html and 'data-job="job-1"' in html and 'data-job="job-0"' not in html
    assert 'aria-valuenow="100"' in html and "1 / 0 / 1" in html and "mouthwarp" in html
    assert "Page 1 of 2" in html and 'href="/?page=2"' in html
    assert "Idle" in html and "0 waiting in the inbox" in html
    assert 'data-job="job-0"' in client.get("/?page=2").text
    assert "cdn" not in html.casefold() and "https://" not in html  # everything from the package


def test_job_page_shows_videos_players_errors_and_the_log(make_client) -> None:
    client, settings = make_client()
    videos = [
        VideoStatus(
            input="anna.mp4",
            state="done",
            progress=1.0,
            output="anna.mp4",
            poster="anna.jpg",
            face_ratio=0.96,
            frames_done=50,
            frames_total=50,
            timings={"total": 3.5},
        ),
        VideoStatus(
            input="bob.mov",
            state="failed",
            progress=0.2,
            error=ErrorStatus(
                code="NO_FACE",
                message="lesson/bob.mov: a face was found in 0% of the frames",
                hint="Use a video where the presenter's face is visible.",
            ),
        ),
    ]
    finished_job(settings.paths.outbox, "lesson", state="partial", videos=videos)
    html = client.get("/jobs/lesson").text
    assert '<video controls preload="metadata" src="/api/jobs/lesson/files/anna.mp4"' in html
    assert 'poster="/api/jobs/lesson/files/anna.jpg"' in html
    assert "96%" in html and '<dd data-field="frames">50</dd>' in html and "total 3.5 s" in html
    assert "NO_FACE" in html and "a face was found in 0%" in html and "presenter&#39;s face is visible" in html
    assert "/api/jobs/lesson/outputs.zip" in html and 'data-action="retry"' in html and 'data-action="delete"' in html
    assert "job.started" in html  # the job log


def test_queued_job_page_and_new_job_form(make_client) -> None:
    client, _ = make_client()
    upload(client, name="waiting")
    html = client.get("/jobs/waiting").text
    assert "queued" in html and "anna.mp4" in html and 'data-action="delete"' not in html
    form = client.get("/new").text
    assert 'name="audio"' in form and 'name="videos"' in form and "multiple" in form
    assert 'name="engine"' in form and 'name="loop_mode"' in form and 'name="crf"' in form
    assert '<option value="mouthwarp">mouthwarp</option>' in form and "<option>auto</option>" in form
    assert (
        '<option value="musetalk" disabled title="engine &#39;musetalk&#39; is not installed: models/musetalk/' in form
    )
    assert "musetalk (not installed)</option>" in form and "wav2lip (not installed)</option>" in form
    assert "engine &#39;wav2lip&#39; is not installed: models/ lacks wav2lip_gan.pth or wav2lip.pth</li>" in form
    assert 'name="gpu_class"' not in form  # one host: no GPU classes to choose from


def test_a_farms_new_job_form_asks_for_a_gpu_class_and_the_api_writes_it(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, extra='[queue]\nbroker = "redis://127.0.0.1:1/0"\n'))
    with TestClient(create_app(settings), base_url=ORIGIN, follow_redirects=False) as client:
        assert 'name="gpu_class"' in client.get("/new").text
        assert upload(client, name="big", gpu_class="h100").status_code == 201
    assert (settings.paths.inbox / "big" / "job.toml").read_text() == 'gpu_class = "h100"\n'


def test_unknown_job_page_is_an_error_page_with_a_hint(make_client) -> None:
    client, _ = make_client()
    page = client.get("/jobs/nope")
    assert page.status_code == 404 and "NOT_FOUND" in page.text and "GET /api/jobs lists them" in page.text


def test_static_files_come_from_the_package(make_client) -> None:
    client, _ = make_client()
    assert "EventSource" in client.get("/static/app.js").text
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")


def test_cancel_buttons_on_waiting_and_running_jobs_retry_and_delete_on_cancelled_ones(make_client) -> None:
    client, settings = make_client()
    upload(client, name="waiting")
    finished_job(settings.paths.outbox, "running", state="processing")
    listing = client.get("/").text
    assert 'data-url="/api/jobs/waiting/cancel"' in listing and 'data-url="/api/jobs/running/cancel"' in listing
    page = client.get("/jobs/waiting").text
    assert 'data-action="cancel" data-url="/api/jobs/waiting/cancel"' in page and 'data-action="retry"' not in page

    assert client.post("/api/jobs/waiting/cancel").json()["state"] == "cancelled"
    page = client.get("/jobs/waiting").text
    assert '<span class="badge cancelled">cancelled</span>' in page
    assert 'data-action="cancel"' not in page
    assert "Retry cancelled videos" in page and 'data-action="delete"' in page
    assert "by web local from testclient" in page
    assert 'data-url="/api/jobs/waiting/cancel"' not in client.get("/").text


def test_a_rendering_jobs_page_says_cancelling_once_asked(make_client) -> None:
    from heygemd.daemon import claims, readiness

    client, settings = make_client()
    upload(client, name="running")
    claims.claim(readiness.Candidate("running", settings.paths.inbox / "running"), settings.paths.state_dir)
    finished_job(settings.paths.outbox, "running", state="processing")
    assert client.post("/api/jobs/running/cancel").json()["state"] == "cancelling"
    page = client.get("/jobs/running").text
    assert (
        "Cancelling..." in page
        and "disabled" in page
        and "Cancel requested" in page
        and "by web local from testclient" in page
    )
    assert 'data-url="/api/jobs/running/cancel"' not in client.get("/").text.split("<tbody>")[1]


def _row(html: str, job_id: str) -> str:
    """The job list's row of ``job_id``."""
    return html.split(f'data-job="{job_id}"', 1)[1].split("</tr>", 1)[0]


def test_failed_and_partial_jobs_are_drawn_in_their_colour_with_the_first_errors_code_and_reason(make_client) -> None:
    client, settings = make_client()
    no_face = ErrorStatus(
        code="NO_FACE", message="lesson/bob.mov: a face was found in 0% of the frames", hint="Use a video where ..."
    )
    finished_job(
        settings.paths.outbox,
        "half",
        state="partial",
        videos=[
            VideoStatus(input="anna.mp4", state="done", progress=1.0, output="anna.mp4"),
            VideoStatus(input="bob.mov", state="failed", progress=1.0, error=no_face),
        ],
    )
    status = finished_job(settings.paths.outbox, "broken", state="failed", videos=[VideoStatus(input="anna.mp4")])
    bad_job = ErrorStatus(code="BAD_JOB", message="broken/job.toml: field 'crf': 99 is too high", hint="Use 0..51.")
    write_status(settings.paths.outbox / "broken" / "status.json", status.model_copy(update={"error": bad_job}))
    flagged = finished_job(settings.paths.outbox, "fine")
    write_status(settings.paths.outbox / "fine" / "status.json", flagged.model_copy(update={"videos_to_review": 1}))
    html = client.get("/").text

    half, broken, fine = _row(html, "half"), _row(html, "broken"), _row(html, "fine")
    assert 'class="bar partial"' in half and "NO_FACE" in half and "a face was found in 0% of the frames" in half
    assert 'class="bar failed"' in broken and "BAD_JOB" in broken and "field &#39;crf&#39;: 99 is too high" in broken
    assert 'class="bar done"' in fine and "why" not in fine  # no reason line for a job without errors
    assert ">1 to review</span>" in fine and "to review" not in half  # the quality check's count
    page = client.get("/jobs/broken").text
    assert '<div class="bar failed"' in page.split('class="summary"', 1)[1]
    css = client.get("/static/style.css").text
    for state, colour in (("done", "--ok"), ("partial", "--warn"), ("failed", "--bad")):
        assert f".bar.{state} span {{ background: var({colour}); }}" in css


def test_before_login_the_pages_show_nothing_of_the_machine(make_client) -> None:
    from tests.web.webserver import TOKEN

    client, settings = make_client(f'token = "{TOKEN}"\n')
    machine = (
        "Engine",
        "mouthwarp",
        "Idle",
        "waiting in the inbox",
        "Log out",
        'id="machine"',
        "/new",
        "/docs",
        "Nothing is rendering",
    )
    shown = client.get("/login").text
    assert not [word for word in machine if word in shown], shown
    assert ">Access token <input" in shown and 'name="user"' not in shown, "no accounts: the token is the only way in"
    wrong = client.post("/login", data={"token": "wrong"}, headers={"Origin": ORIGIN})
    assert wrong.status_code == 401 and not [word for word in machine if word in wrong.text]
    assert client.post("/login", data={"token": TOKEN}, headers={"Origin": ORIGIN}).status_code == 303
    after = client.get("/").text
    assert all(word in after for word in machine), after


def test_the_new_job_form_checks_types_counts_sizes_and_crf_with_the_servers_own_lists(make_client) -> None:
    from heygemd.names import AUDIO_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES

    client, _ = make_client("max_files = 7\nmax_file_mb = 3\nmax_total_mb = 5\n")
    form = client.get("/new").text
    audio = " ".join(sorted(AUDIO_SUFFIXES | VIDEO_SUFFIXES))
    presenters = " ".join(sorted(VIDEO_SUFFIXES | IMAGE_SUFFIXES))
    assert f'data-audio-suffixes="{audio}"' in form and f'data-presenter-suffixes="{presenters}"' in form
    assert f'accept="{",".join(sorted(AUDIO_SUFFIXES | VIDEO_SUFFIXES))}"' in form
    assert f'accept="{",".join(sorted(VIDEO_SUFFIXES | IMAGE_SUFFIXES))}"' in form
    assert 'data-max-files="7"' in form and f'data-max-file-bytes="{3 * 1024 * 1024}"' in form
    assert f'data-max-total-bytes="{5 * 1024 * 1024}"' in form
    assert 'name="crf" id="crf" min="0" max="51" step="1"' in form
    script = client.get("/static/app.js").text
    assert '"wav"' not in script and '".wav"' not in script  # the lists are the server's, never written twice
    assert "multipart" not in script


def test_download_all_is_offered_for_a_finished_job_only(make_client) -> None:
    client, settings = make_client()
    videos = [
        VideoStatus(input="anna.mp4", state="done", progress=1.0, output="anna.mp4"),
        VideoStatus(input="bob.mov", state="processing", progress=0.4),
    ]
    finished_job(settings.paths.outbox, "running", state="processing", videos=videos)
    finished_job(settings.paths.outbox, "done")
    assert "outputs.zip" not in client.get("/jobs/running").text
    assert "/api/jobs/done/outputs.zip" in client.get("/jobs/done").text


def test_a_videos_bar_and_its_counter_say_the_same_number(make_client) -> None:
    client, settings = make_client()
    videos = [
        VideoStatus(input="anna.mp4", state="processing", progress=0.12, frames_done=40),  # finding the face
        VideoStatus(input="bob.mov", state="processing", progress=0.65, frames_done=50, frames_total=100),
        VideoStatus(input="carl.mp4", state="pending"),
    ]
    finished_job(settings.paths.outbox, "running", state="processing", videos=videos)
    html = client.get("/jobs/running").text
    cards = {v.input: html.split(f'data-video="{v.input}"', 1)[1].split("</article>", 1)[0] for v in videos}
    for name, value, text in (
        ("anna.mp4", 12, "12% · finding the face"),
        ("bob.mov", 65, "65% · lip-syncing"),
        ("carl.mp4", 0, "waiting"),
    ):
        assert f'aria-valuenow="{value}"' in cards[name] and f'data-field="progress-text">{text}<' in cards[name]
        assert " / " not in cards[name]  # no frame counter that could disagree with the bar


def test_the_favicon_is_served_without_a_login(make_client) -> None:
    from tests.web.webserver import TOKEN

    client, _ = make_client(f'token = "{TOKEN}"\n')
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.content.startswith(b"<svg") and b"</svg>" in icon.content
    assert '<link rel="icon" href="/favicon.ico" type="image/svg+xml">' in client.get("/login").text


def test_the_header_says_when_nothing_renders_and_how_to_start_it(make_client) -> None:
    client, settings = make_client()
    warning = '<p class="no-renderer" id="no-renderer" role="status">'
    html = client.get("/").text
    assert warning in html and "jobs wait until <code>heygemd run</code> starts" in html
    renderer_here(settings.paths.state_dir)
    assert '<p class="no-renderer" id="no-renderer" role="status" hidden>' in client.get("/").text


def test_the_job_list_says_which_job_settles_and_which_files_the_inbox_ignores(make_client) -> None:
    from datetime import timedelta

    from heygemd.daemon.status import utc_now
    from heygemd.daemon.waiting import write_waiting

    client, settings = make_client()
    inbox, state = settings.paths.inbox, settings.paths.state_dir
    (inbox / "lesson-02").mkdir()
    (inbox / "lesson-02" / "voice.wav").write_bytes(b"RIFF")
    (inbox / "notes.txt").write_text("next to the job folders")
    write_waiting(state, {}, {"lesson-02": utc_now() + timedelta(seconds=52.4)})
    html = client.get("/").text
    shown = re.search(
        r'<p class="waiting" data-field="waiting">settling: taken in (\d+) s, or at once with .ready</p>', html
    )
    assert shown and 40 <= int(shown.group(1)) <= 53, html
    assert "<strong>Ignored in the inbox:</strong> notes.txt" in html and "put it in a job folder" in html
    job = client.get("/api/jobs/lesson-02").json()
    assert job["state"] == "queued" and job["waiting"].startswith("settling: taken in ")
    assert "settling: taken in " in client.get("/jobs/lesson-02").text
    assert client.get("/api/health").json()["ignored"] == ["notes.txt"]
