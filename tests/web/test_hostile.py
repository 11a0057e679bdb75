"""Hostile requests against the real app over real folders: names the intake would skip or Windows cannot open,
malformed multipart bodies, a delete racing a retry, chunked bodies padded with form fields. Each is answered
with a JSON error or made safe, and leaves nothing half-written behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from heygemd import control
from heygemd.daemon.readiness import scan_inbox
from heygemd.daemon.status import VideoStatus
from heygemd.names import make_windows_safe, windows_safe
from tests.web.test_api import MP4, WAV, _archive_inputs, assert_problem, upload
from tests.web.webserver import finished_job

MULTIPART = {"content-type": "multipart/form-data; boundary=b"}


def left_in_inbox(inbox: Path) -> list[str]:
    """What a refused request left: entries of the inbox and of the staging folders (none, when all is well)."""
    uploads = inbox / ".heygemd" / "uploads"
    staged = [f"uploads/{p.name}" for p in uploads.iterdir()] if uploads.is_dir() else []
    return sorted([p.name for p in inbox.iterdir() if p.name != ".heygemd"] + staged)


# ------------------------------------------------------------------------------------------- job and file names

SKIPPED_BY_THE_INTAKE = [
    ("__MACOSX", "lesson"),
    ("lost+found", "lesson"),
    ("@eaDir", "lesson"),
    ("#recycle", "lesson"),
    ("#snapshot", "lesson"),
    ("$RECYCLE.BIN", "lesson"),
    ("System Volume Information", "lesson"),
    ("...", "lesson"),
    ("lesson 1.part", "lesson"),
    ("~$lesson", "lesson"),
    (".hidden", "hidden"),
]
WINDOWS_CANNOT_OPEN = [
    ("CON", "_CON"),
    ("prn", "_prn"),
    ("Aux.mp4", "_Aux.mp4"),
    ("NUL.txt", "_NUL.txt"),
    ("com1", "_com1"),
    ("LPT9.tar.gz", "_LPT9.tar.gz"),
    ("COM¹", "_COM¹"),
    ("con .txt", "_con .txt"),
    ("a:b", "a_b"),
    ('say "hi"', "say _hi_"),
    ("what?", "what_"),
    ("x*y", "x_y"),
    ("<tag>", "_tag_"),
    ("a|b", "a_b"),
    ("ends in a dot.", "ends in a dot"),
    ("dots. . .", "dots"),
    ("CON.", "_CON"),
    ("nul ", "_nul"),
]


@pytest.mark.parametrize(("requested", "expected"), SKIPPED_BY_THE_INTAKE + WINDOWS_CANNOT_OPEN)
def test_a_job_name_the_intake_skips_or_windows_cannot_open_is_made_safe(
    make_client, requested: str, expected: str
) -> None:
    client, settings = make_client()
    response = upload(client, name=requested)
    assert response.status_code == 201, response.text
    assert response.json()["job_id"] == expected
    assert [c.name for c in scan_inbox(settings.paths.inbox, settings.paths.state_dir)] == [expected]
    assert client.get(response.json()["status_url"]).json()["state"] == "queued"


def test_windows_safe_refuses_what_make_windows_safe_mends() -> None:
    for name, mended in WINDOWS_CANNOT_OPEN:
        assert not windows_safe(name) and windows_safe(mended) and make_windows_safe(name) == mended, name
    for name in ("CONSOLE", "icon", "com10", "lpt", "a.con", "Ana María.mp4", "课程 01", "x.mp4"):
        assert windows_safe(name) and make_windows_safe(name) == name, name


def test_the_audio_name_stands_in_only_when_it_is_safe_itself(make_client) -> None:
    client, settings = make_client()
    ids = [
        upload(client, audio=("CON.wav", WAV), name="__MACOSX").json()["job_id"],
        upload(client, audio=("__MACOSX.wav", WAV), name="@eaDir").json()["job_id"],
        upload(client, audio=("what?.wav", WAV)).json()["job_id"],
    ]
    assert ids == ["_CON", "job", "what_"]
    assert sorted(c.name for c in scan_inbox(settings.paths.inbox, settings.paths.state_dir)) == sorted(ids)
    assert sorted(p.name for p in (settings.paths.inbox / "_CON").iterdir()) == [
        ".ready",
        "_CON.wav",
        "anna.mp4",
        "bob.mov",
    ]


def test_uploaded_file_names_windows_cannot_open_are_made_safe(make_client) -> None:
    client, settings = make_client()
    videos = (("Aux.mp4", MP4), ("what?.mp4", MP4), ("a:b.mov", MP4), ("lpt1 .mp4", MP4))
    response = upload(client, audio=("say: hi.wav", WAV), videos=videos, name="lesson")
    assert response.status_code == 201, response.text
    stored = sorted(p.name for p in (settings.paths.inbox / "lesson").iterdir())
    assert stored == [".ready", "_Aux.mp4", "_lpt1 .mp4", "a_b.mov", "say_ hi.wav", "what_.mp4"]


def test_a_junk_folder_in_the_inbox_is_no_job_to_the_api(make_client) -> None:
    """A NAS user's __MACOSX folder is never a job: the API neither shows it as queued nor offers to act on it."""
    client, settings = make_client()
    junk = settings.paths.inbox / "__MACOSX"
    junk.mkdir(parents=True)
    (junk / "._anna.mp4").write_bytes(b"\x00" * 10)
    (junk / "lesson.wav").write_bytes(WAV)
    assert_problem(client.get("/api/jobs/__MACOSX"), 404, "NOT_FOUND")
    assert_problem(client.delete("/api/jobs/__MACOSX"), 404, "NOT_FOUND")
    assert_problem(client.post("/api/jobs/__MACOSX/retry"), 404, "NOT_FOUND")
    assert client.get("/api/jobs").json()["total"] == 0
    assert junk.is_dir()


# ------------------------------------------------------------------------------------------- malformed bodies

MALFORMED_PARTS = {
    "a CR in a quoted file name": b'Content-Disposition: form-data; name="audio"; filename="a\rb.wav"',
    "a part header over 4 KB": b'Content-Disposition: form-data; name="audio"; filename="' + b"a" * 5000 + b'.wav"',
    "a header line without a colon": b"nonsense",
}


@pytest.mark.parametrize("what", MALFORMED_PARTS)
def test_a_malformed_multipart_body_is_a_json_400_and_leaves_nothing(make_client, what: str) -> None:
    client, settings = make_client()
    body = b"--b\r\n" + MALFORMED_PARTS[what] + b"\r\n\r\n" + WAV + b"\r\n--b--\r\n"
    response = client.post("/api/jobs", content=body, headers=MULTIPART)
    problem = assert_problem(response, 400, "BAD_UPLOAD")
    assert "not valid multipart/form-data" in problem["message"]
    assert left_in_inbox(settings.paths.inbox) == []


# ------------------------------------------------------------------------------------------- every byte counts


def test_every_byte_of_a_chunked_upload_counts_against_the_limit(make_client) -> None:
    """No Content-Length (chunked): 3 MiB of text fields after two small files, with a 2 MiB limit."""
    client, settings = make_client("max_total_mb = 2\n")

    def body() -> Iterator[bytes]:
        for field, name, data in (("audio", "lesson.wav", WAV), ("videos", "anna.mp4", MP4)):
            yield f'--b\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n\r\n'.encode() + data
            yield b"\r\n"
        for _ in range(3 * 1024):
            yield b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\n' + b"x" * 1000 + b"\r\n"
        yield b"--b--\r\n"

    response = client.post("/api/jobs", content=body(), headers=MULTIPART)
    assert "content-length" not in response.request.headers  # sent chunked
    problem = assert_problem(response, 413, "UPLOAD_TOO_LARGE")
    assert "web.max_total_mb = 2 MiB" in problem["message"]
    assert left_in_inbox(settings.paths.inbox) == []


# ------------------------------------------------------------------------------------------- races


def _failed_job_with_archived_inputs(settings) -> None:
    videos = [VideoStatus(input="anna.mp4", state="failed"), VideoStatus(input="bob.mov", state="failed")]
    status = finished_job(settings.paths.outbox, "lesson", state="failed", videos=videos)
    _archive_inputs(settings, status, {"lesson.wav": WAV, "anna.mp4": MP4, "bob.mov": MP4})


def test_a_delete_landing_while_a_retry_copies_is_a_409_and_leaves_no_half_job(make_client, monkeypatch) -> None:
    client, settings = make_client()
    _failed_job_with_archived_inputs(settings)
    copy = control._copy_regular
    copied: list[str] = []

    def copy_then_delete(src: Path, dst: Path) -> None:
        copy(src, dst)
        copied.append(src.name)
        if len(copied) == 1:  # the job is deleted after the retry copied its first file
            control.Control(settings).delete("lesson")

    monkeypatch.setattr(control, "_copy_regular", copy_then_delete)
    problem = assert_problem(client.post("/api/jobs/lesson/retry"), 409, "JOB_CHANGED")
    assert "'lesson'" in problem["message"] and "nothing was queued" in problem["message"]
    assert copied == ["lesson.wav"]
    assert left_in_inbox(settings.paths.inbox) == []
    assert not (settings.paths.outbox / "lesson").exists()


def test_two_deletes_of_one_job_at_once_one_deletes_the_other_is_a_409(make_client, monkeypatch) -> None:
    client, settings = make_client()
    _failed_job_with_archived_inputs(settings)
    trash = control._trash
    inner: list[None] = []

    def trash_after_another_delete(folder: Path, into: Path) -> None:
        if not inner:  # a second delete of the same job runs to its end first
            inner.append(None)
            control.Control(settings).delete("lesson")
        trash(folder, into)

    monkeypatch.setattr(control, "_trash", trash_after_another_delete)
    assert_problem(client.delete("/api/jobs/lesson"), 409, "JOB_CHANGED")
    assert not (settings.paths.outbox / "lesson").exists()
    assert list((settings.paths.outbox / ".heygemd-trash").iterdir()) == []


def test_job_toml_written_for_an_upload_cannot_be_given_another_option() -> None:
    """The upload writes job.toml itself; a value with quotes, backslashes or a line break stays one value."""
    import tomllib

    from heygemd.daemon.jobs import JobOptions, job_toml

    hostile = 'talk".mp4\\\nengine = "wav2lip'
    options = JobOptions(audio=hostile, crf=20, engine="mouthwarp")
    assert tomllib.loads(job_toml(options)) == {"audio": hostile, "crf": 20, "engine": "mouthwarp"}


def test_outbox_files_swapped_for_a_link_or_fifo_after_the_check_are_left_out_of_zips_and_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outbox is on a share: a file listed as regular and swapped for a link or a FIFO before it is read is
    neither read through (a file outside the outbox in the ZIP) nor waited on (a download or a job page stuck)."""
    import io
    import os
    import zipfile

    from heygemd.settings import Settings
    from heygemd.web import catalog as catalog_module
    from heygemd.web.catalog import Catalog
    from heygemd.web.zipstream import stream_zip

    outbox = tmp_path / "outbox"
    finished_job(outbox, "lesson")
    folder = outbox / "lesson"
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"outside the outbox")
    (folder / "anna.jpg").unlink()
    (folder / "anna.jpg").symlink_to(secret)
    os.mkfifo(folder / "fifo.mp4")
    listed = [folder / "anna.mp4", folder / "anna.jpg", folder / "fifo.mp4", folder / "status.json"]
    archive = zipfile.ZipFile(io.BytesIO(b"".join(stream_zip(listed))))
    assert archive.namelist() == ["anna.mp4", "status.json"]

    settings = Settings.model_validate({"paths": {"inbox": tmp_path / "inbox", "outbox": outbox}})
    pages = Catalog(settings)
    assert "job.started" in pages.log_text("lesson")
    (folder / "job.log").unlink()
    os.mkfifo(folder / "job.log")
    monkeypatch.setattr(catalog_module, "is_real_file", lambda path: True)  # swapped right after the check
    assert pages.log_text("lesson") == ""
