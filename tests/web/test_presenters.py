"""The presenter library over HTTP with the real app over real folders: a presenter added as a job is uploaded
(staging, limits, the file moved into the library with its toml and its ready marker), listed with its state, its
poster and preview served from heygemd's own folders only, refused when the name is taken or the file is no video,
removed unless a job not finished names it (PRESENTER_BUSY); jobs submitted by naming presenters, an unknown one
refused; a retry names again the presenters that never reached the job; the pages show the library."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from heygemd import layout
from heygemd.control import Control
from heygemd.daemon.claims import ClaimRecord
from heygemd.daemon.library import FileIdentity, LibraryStatus, PresenterStatus, scan_library, write_library_status
from heygemd.daemon.lifecycle import Sessions
from heygemd.daemon.preparation import LibraryKeeper, Preparer
from heygemd.daemon.presenter_links import LinkedPresenter, PresenterLinks
from heygemd.daemon.status import ErrorStatus, JobStatus, VideoStatus, write_status
from heygemd.layout import CLAIM_FILE, INPUT_DIR
from heygemd.status_view import format_presenters_table
from tests.daemon.daemon_process import Media
from tests.web.test_api import WAV, assert_problem, upload
from tests.web.webserver import ORIGIN, TOKEN, finished_job


def add(client, path: Path | None = None, data: bytes = b"", filename: str = "anna.mp4", **fields):
    content = path.read_bytes() if path is not None else data
    return client.post("/api/presenters", files=[("video", (filename, content))], data=fields)


def test_a_presenter_is_added_listed_and_removed(make_client, media: Media) -> None:
    client, settings = make_client()
    assert client.get("/api/presenters").json() == {"presenters": []}
    response = add(client, media.face_a, name="Anna", display_name="Anna S.", face="left", loop_mode="loop")
    assert response.status_code == 201, response.text
    anna = response.json()
    got = (anna["name"], anna["file"], anna["state"], anna["display_name"])
    assert got == ("Anna", "Anna.mp4", "preparing", "Anna S.")
    assert anna["stage"] == "waiting" and anna["waiting_for"] == "the daemon has not looked at it yet"
    assert anna["preview_url"] == "/api/presenters/Anna/preview" and anna["poster_url"] is None
    library = settings.paths.presenters_dir
    assert sorted(os.listdir(library)) == ["Anna.mp4", "Anna.mp4.ready", "Anna.toml"]
    assert (library / "Anna.mp4").read_bytes() == media.face_a.read_bytes()
    assert (library / "Anna.toml").read_text() == 'display_name = "Anna S."\nface = "left"\nloop_mode = "loop"\n'
    assert list((settings.paths.state_dir / "uploads").iterdir()) == []  # the staging folder is gone

    assert client.get("/api/presenters/anna").json()["name"] == "Anna"  # found ignoring case
    preview = client.get("/api/presenters/Anna/preview")
    assert preview.status_code == 200 and preview.content == media.face_a.read_bytes()
    assert_problem(client.get("/api/presenters/Anna/poster"), 404, "NOT_FOUND")  # not prepared yet
    body = assert_problem(client.get("/api/presenters/zoe"), 404, "NO_SUCH_PRESENTER")
    assert "zoe" in body["message"]

    assert client.delete("/api/presenters/Anna").json() == {"deleted": "Anna"}
    assert os.listdir(library) == []
    assert_problem(client.delete("/api/presenters/Anna"), 404, "NO_SUCH_PRESENTER")


def test_bad_presenter_uploads_are_refused_and_leave_nothing(make_client, media: Media) -> None:
    client, settings = make_client("max_file_mb = 0.01\n")
    library = settings.paths.presenters_dir
    body = assert_problem(add(client, data=b"%PDF", filename="slides.pdf"), 400, "BAD_UPLOAD")
    assert "not a video or a still photo" in body["message"]
    body = assert_problem(add(client, data=b"x", face="middle"), 400, "BAD_UPLOAD")
    assert "face" in body["message"] and "largest, left, right or centre" in body["hint"]
    assert_problem(client.post("/api/presenters", data={"name": "anna"}), 400, "BAD_UPLOAD")  # no video
    assert_problem(add(client, data=b"x" * 20_000), 413, "UPLOAD_TOO_LARGE")
    assert not library.exists() or os.listdir(library) == []
    assert list((settings.paths.state_dir / "uploads").iterdir()) == []

    assert add(client, data=b"video", name="../../anna").status_code == 201  # the name made safe: "anna"
    assert sorted(os.listdir(library)) == ["anna.mp4", "anna.mp4.ready"]
    body = assert_problem(add(client, data=b"other", filename="ANNA.mov"), 409, "PRESENTER_EXISTS")
    assert "anna" in body["message"]
    assert sorted(os.listdir(library)) == ["anna.mp4", "anna.mp4.ready"]


def test_a_presenter_named_by_a_job_not_finished_is_busy(make_client) -> None:
    client, settings = make_client()
    assert add(client, data=b"a", name="anna").status_code == 201
    assert add(client, data=b"b", name="bob").status_code == 201
    response = client.post("/api/jobs", files=[("audio", ("lesson.wav", WAV))], data={"presenters": ["anna"]})
    assert response.status_code == 201, response.text
    job = settings.paths.inbox / response.json()["job_id"]
    assert (job / "job.toml").read_text() == 'presenters = ["anna"]\n'
    assert sorted(os.listdir(job)) == [".ready", "job.toml", "lesson.wav"]

    body = assert_problem(client.delete("/api/presenters/anna"), 409, "PRESENTER_BUSY")
    assert "lesson" in body["message"]
    assert client.delete("/api/presenters/bob").status_code == 200  # named by no job
    claimed = settings.paths.state_dir / "claimed" / "lesson"
    claimed.mkdir(parents=True)
    job.rename(claimed / INPUT_DIR)  # claimed now (still not finished)
    assert_problem(client.delete("/api/presenters/anna"), 409, "PRESENTER_BUSY")
    (claimed / INPUT_DIR / "job.toml").write_text('presenters = "all"\n')
    assert_problem(client.delete("/api/presenters/anna"), 409, "PRESENTER_BUSY")
    shutil.rmtree(claimed)
    assert client.delete("/api/presenters/anna").status_code == 200


def test_jobs_name_presenters_instead_of_or_besides_videos(make_client) -> None:
    client, settings = make_client()
    assert add(client, data=b"a", name="anna").status_code == 201
    response = upload(client, videos=(("own.mp4", b"own"),), presenters=["anna", "ANNA"])
    assert response.status_code == 201, response.text
    job = settings.paths.inbox / response.json()["job_id"]
    assert (job / "job.toml").read_text() == 'presenters = ["anna", "ANNA"]\n'  # found ignoring case, each once
    assert "own.mp4" in os.listdir(job)
    response = client.post("/api/jobs", files=[("audio", ("b.wav", WAV))], data={"presenters": "all"})
    assert (settings.paths.inbox / response.json()["job_id"] / "job.toml").read_text() == 'presenters = "all"\n'

    body = assert_problem(upload(client, videos=(), presenters=["anna", "zoe"]), 400, "NO_SUCH_PRESENTER")
    assert "'zoe'" in body["message"] and "the presenters there: anna" in body["message"]
    body = assert_problem(upload(client, videos=()), 400, "BAD_UPLOAD")
    assert "'presenters'" in body["message"]


def test_posters_and_previews_are_served_from_heygemds_folders_only(make_client, media: Media, tmp_path: Path) -> None:
    client, settings = make_client()
    assert add(client, media.face_a, name="anna").status_code == 201
    keeper = LibraryKeeper(settings, Preparer(settings, Sessions(settings)))
    keeper.scan()
    assert keeper.prepare_next()
    anna = client.get("/api/presenters/anna").json()
    assert anna["state"] == "ready" and anna["poster_url"].startswith("/api/presenters/anna/poster?v=")
    poster = client.get(anna["poster_url"])
    assert poster.status_code == 200 and poster.headers["content-type"] == "image/jpeg"
    assert poster.content[:2] == b"\xff\xd8"
    assert client.head("/api/presenters/anna/preview").headers["content-length"] == str(media.face_a.stat().st_size)

    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8 not for the web")
    posters = settings.paths.state_dir / "posters"
    (posters / "anna.jpg").unlink()
    (posters / "anna.jpg").symlink_to(secret)  # planted: never served
    assert_problem(client.get("/api/presenters/anna/poster"), 404, "NOT_FOUND")
    library = settings.paths.presenters_dir
    (library / "anna.mp4").unlink()
    (library / "anna.mp4").symlink_to(media.face_b)  # the presenter is now a link: it fails, nothing is served
    assert client.get("/api/presenters/anna").json()["error"]["code"] == "UNSAFE_PATH"
    assert_problem(client.get("/api/presenters/anna/preview"), 404, "NOT_FOUND")


def test_the_library_needs_the_token_like_every_api(make_client) -> None:
    client, _ = make_client(f'token = "{TOKEN}"\n')
    assert_problem(client.get("/api/presenters"), 401, "UNAUTHORIZED")
    assert_problem(add(client, data=b"x"), 401, "UNAUTHORIZED")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/presenters", headers=headers).status_code == 200
    crossing = client.delete("/api/presenters/anna", headers={"Origin": "https://evil.example"})
    assert crossing.status_code in (401, 403)


def archive(state_dir: Path, status: JobStatus, inputs: dict[str, bytes]) -> Path:
    """The archive folder a finished job ``status`` leaves (its claim record, ``inputs`` in input/); returned."""
    folder = state_dir / "archive" / status.claimed.strftime("%Y-%m-%d") / status.job_id  # type: ignore[union-attr]
    (folder / INPUT_DIR).mkdir(parents=True)
    record = ClaimRecord(job_id=status.job_id, name=status.job_name, claimed_at=status.claimed, host="h", pid=1)  # type: ignore[arg-type]
    (folder / CLAIM_FILE).write_text(record.model_dump_json())
    for name, data in inputs.items():
        (folder / INPUT_DIR / name).write_bytes(data)
    return folder


def test_a_retry_names_again_the_presenters_that_never_reached_the_job(make_client) -> None:
    client, settings = make_client()
    videos = [
        VideoStatus(input="anna.mp4", state="done", progress=1.0, output="anna.mp4", presenter="anna"),
        VideoStatus(input="bob.mp4", state="failed", presenter="bob"),  # linked, then failed in the render
        VideoStatus(input="zoe", state="failed", presenter="zoe"),  # never in the library
        VideoStatus(input="own.mp4", state="failed"),
    ]
    status = finished_job(settings.paths.outbox, "lesson", state="partial", videos=videos)
    archive(
        settings.paths.state_dir,
        status,
        {
            "lesson.wav": WAV,
            "anna.mp4": b"a",
            "bob.mp4": b"b",
            "own.mp4": b"o",
            "job.toml": b'crf = 20\npresenters = ["anna", "bob", "zoe"]\n',
        },
    )

    response = client.post("/api/jobs/lesson/retry")
    assert response.status_code == 201, response.text
    job = settings.paths.inbox / "lesson-retry"
    assert sorted(os.listdir(job)) == [".ready", "bob.mp4", "job.toml", "lesson.wav", "own.mp4"]
    assert (job / "job.toml").read_text() == 'crf = 20\npresenters = ["zoe"]\n'


def test_a_retry_names_again_a_presenter_whose_archived_file_is_not_the_one_linked(make_client) -> None:
    """A library file overwritten in place changed the job's hard link to it (its video failed PRESENTER_CHANGED, or
    was cancelled): the retry takes the presenter from the library again, not the archive's changed file."""
    client, settings = make_client()
    changed = ErrorStatus(code="PRESENTER_CHANGED", message="presenters/anna.mp4: the presenter 'anna' was overwritten")
    videos = [
        VideoStatus(input="anna.mp4", state="failed", presenter="anna", error=changed),
        VideoStatus(input="bob.mp4", state="cancelled", presenter="bob"),  # its archived file is as it was linked
        VideoStatus(input="carla.mp4", state="cancelled", presenter="carla"),  # copied into the job: its own
    ]
    status = finished_job(settings.paths.outbox, "lesson", state="partial", videos=videos)
    files = {"lesson.wav": WAV, "anna.mp4": b"new anna", "bob.mp4": b"b", "carla.mp4": b"c"}
    folder = archive(
        settings.paths.state_dir, status, {**files, "job.toml": b'presenters = ["anna", "bob", "carla"]\n'}
    )
    inputs = folder / INPUT_DIR

    def linked(name: str, size: int, **fields: object) -> LinkedPresenter:
        mtime = (inputs / f"{name}.mp4").stat().st_mtime_ns
        identity = FileIdentity(file=f"{name}.mp4", size=size, mtime_ns=mtime)
        return LinkedPresenter(
            name=name, file=f"{name}.mp4", library_file=f"presenters/{name}.mp4", identity=identity, **fields
        )

    links = [linked("anna", 4), linked("bob", 1), linked("carla", 99, copied=True)]
    layout.links_file(folder).write_text(PresenterLinks(presenters=links).model_dump_json())

    response = client.post("/api/jobs/lesson/retry")
    assert response.status_code == 201, response.text
    job = settings.paths.inbox / "lesson-retry"
    assert sorted(os.listdir(job)) == [".ready", "bob.mp4", "carla.mp4", "job.toml", "lesson.wav"]
    assert (job / "job.toml").read_text() == 'presenters = ["anna"]\n'


def test_the_pages_show_the_library_and_offer_it_in_the_new_job_form(make_client) -> None:
    client, settings = make_client()
    page = client.get("/presenters")
    assert page.status_code == 200 and "The library is empty" in page.text
    assert add(client, data=b"a", name="anna", display_name="Anna S.").status_code == 201
    page = client.get("/presenters")
    assert 'data-presenter="anna"' in page.text and "Anna S." in page.text and "the daemon has not looked" in page.text
    form = client.get("/new")
    assert 'name="presenters" value="anna"' in form.text
    assert '<a href="/presenters">Presenters</a>' in form.text


def test_a_job_failed_as_a_whole_is_retried_with_its_presenters_named_again_not_copied(make_client) -> None:
    """Its job.toml names the presenters again: the files linked from the library are not sent as its own videos."""
    client, settings = make_client()
    videos = [VideoStatus(input="anna.mp4", state="not_started", presenter="anna"), VideoStatus(input="own.mp4")]
    status = finished_job(settings.paths.outbox, "lesson", state="failed", videos=videos)
    status = status.model_copy(update={"error": ErrorStatus(code="BAD_JOB", message="lesson/: two audio files")})
    write_status(settings.paths.outbox / "lesson" / "status.json", status)
    folder = archive(
        settings.paths.state_dir,
        status,
        {"lesson.wav": WAV, "anna.mp4": b"a", "own.mp4": b"o", "job.toml": b'presenters = ["anna"]\n'},
    )
    anna = LinkedPresenter(name="anna", file="anna.mp4", library_file="presenters/anna.mp4")
    layout.links_file(folder).write_text(PresenterLinks(presenters=[anna]).model_dump_json())

    response = client.post("/api/jobs/lesson/retry")
    assert response.status_code == 201, response.text
    job = settings.paths.inbox / "lesson-retry"
    assert sorted(os.listdir(job)) == [".ready", "job.toml", "lesson.wav", "own.mp4"]
    assert (job / "job.toml").read_text() == 'presenters = ["anna"]\n'


def swapping_at_response_start(app: Any, swap: Callable[[], None]) -> Any:
    """``app``, with ``swap`` run when a response starts: after the route looked at the file, before its body is
    read (what someone on the share replacing the file at that moment does)."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def send_after_swap(message: Any) -> None:
            if message["type"] == "http.response.start":
                swap()
            await send(message)

        await app(scope, receive, send_after_swap)

    return wrapped


def test_a_preview_or_poster_swapped_for_a_link_as_it_is_sent_serves_what_was_checked(
    make_client, tmp_path: Path
) -> None:
    client, settings = make_client()
    library = settings.paths.presenters_dir
    library.mkdir(parents=True, exist_ok=True)
    (library / "anna.jpg").write_bytes(b"\xff\xd8 anna")
    found = scan_library(library, ready_marker=".ready")[0]
    posters = layout.posters_root(settings.paths.state_dir)
    (posters / "anna.jpg").write_bytes(b"\xff\xd8 the poster")
    ready = PresenterStatus(name="anna", file="anna.jpg", identity=found.identity, state="ready", poster="anna.jpg")
    write_library_status(settings.paths.state_dir, LibraryStatus(presenters=[ready]))
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8 someone else's")

    for served, url, expected in (
        (library / "anna.jpg", "/api/presenters/anna/preview", b"\xff\xd8 anna"),
        (posters / "anna.jpg", "/api/presenters/anna/poster", b"\xff\xd8 the poster"),
    ):

        def swap(served: Path = served) -> None:
            served.rename(served.with_name("kept.jpg"))
            served.symlink_to(secret)

        with TestClient(swapping_at_response_start(client.app, swap), base_url=ORIGIN) as swapping:
            answer = swapping.get(url)
        assert answer.status_code == 200 and answer.content == expected, url
        assert answer.headers["content-type"] == "image/jpeg"
        served.unlink()
        served.with_name("kept.jpg").rename(served)


def test_an_add_writes_no_options_for_a_name_it_refuses_and_keeps_none_left_over(make_client) -> None:
    client, settings = make_client()
    library = settings.paths.presenters_dir
    library.mkdir(parents=True)
    (library / "zed.mp4").mkdir()  # a folder named like a presenter: passed over by the scan, and in the way
    assert_problem(add(client, data=b"v", name="zed", face="left"), 409, "PRESENTER_EXISTS")
    assert sorted(os.listdir(library)) == ["zed.mp4"]  # no zed.toml for a presenter that was not added

    (library / "anna.toml").write_text('face = "left"\nnotes = "a presenter removed long ago"\n')  # left over
    assert add(client, data=b"v", name="anna").status_code == 201
    anna = client.get("/api/presenters/anna").json()
    assert anna["options"]["face"] is None and anna["notes"] is None  # the options asked for: none


def test_names_options_and_errors_from_the_share_are_escaped_on_the_page_and_in_the_table(make_client) -> None:
    client, settings = make_client()
    library = settings.paths.presenters_dir
    library.mkdir(parents=True)
    (library / "anna.mp4").write_bytes(b"v")
    (library / "anna.toml").write_text('display_name = "<script>alert(1)</script>"\nnotes = "\\u001b[2J<b>"\n')
    (library / "bob.mp4").symlink_to('"><img src=x onerror=alert(2)>\x1b]0;owned\x07')

    page = client.get("/presenters").text
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "[2J&lt;b&gt;" in page

    table = format_presenters_table(Control(settings).presenters())
    assert "\x1b" not in table and "\x07" not in table
    assert [line.split()[0] for line in table.splitlines()] == ["NAME", "anna", "bob", "bob:"]  # bob's hint under it
    assert "\\x1b]0;owned\\x07" in table


def test_poster_and_preview_routes_serve_nothing_but_a_presenters_own_files(make_client) -> None:
    client, settings = make_client()
    library = settings.paths.presenters_dir
    library.mkdir(parents=True)
    (library / "anna.jpg").write_bytes(b"\xff\xd8 anna")
    (library / "anna.toml").write_text("\n")
    settings.paths.state_dir.mkdir(parents=True, exist_ok=True)
    (settings.paths.state_dir / "secret.jpg").write_bytes(b"\xff\xd8 state")
    for name in ("..", "%2e%2e", "..%2F..%2Fstate%2Fsecret", "anna.toml", "anna.jpg", "anna.jpg%00", "%2Fetc%2Fpasswd"):
        for kind in ("poster", "preview"):
            answer = client.get(f"/api/presenters/{name}/{kind}")
            assert answer.status_code == 404, (name, kind)
            assert b"\xff\xd8" not in answer.content
    assert client.get("/api/presenters/ANNA/preview").content == b"\xff\xd8 anna"  # its own name, in any case
