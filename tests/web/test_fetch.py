"""URL inputs (heygemd.web.fetch) downloaded from a real server on 127.0.0.1 into a staging folder, with the rules
of an upload; every refusal and failure names the host (never the URL) and leaves nothing in the staging folder."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from heygemd.errors import FetchFailed, FetchNotAllowed, HeygemdError
from heygemd.settings import WebSettings
from heygemd.web.fetch import UrlInputs
from heygemd.web.problems import BadUpload, TooLarge, http_status
from tests.httpserver import Answer, Receiver, Seen, receiver
from tests.processes import run_on_full_disk

WAV = b"RIFF" + os.urandom(4000)
MP4 = b"\x00\x00\x00\x18ftypmp42" + os.urandom(6000)


def serve(seen: Seen) -> Answer:
    path = seen.path.partition("?")[0]
    if path == "/speech.wav":
        return Answer(200, WAV, {"Content-Type": "audio/wav"})
    if path == "/files/7f3a":  # no suffix: the Content-Type names the kind
        return Answer(200, MP4, {"Content-Type": "video/mp4"})
    if path == "/download":
        return Answer(
            200,
            MP4,
            {
                "Content-Type": "application/octet-stream",
                "Content-Disposition": "attachment; filename*=UTF-8''%C3%A4nna%20talks.mp4",
            },
        )
    if path == "/unsized.mp4":
        return Answer(200, MP4, {"Content-Type": "video/mp4"}, declare_length=False)
    if path == "/moved":
        return Answer(302, headers={"Location": "/speech.wav"})
    if path == "/away":
        return Answer(302, headers={"Location": "http://media.example/speech.wav"})
    if path == "/login.mp4":
        return Answer(200, b"<html>log in</html>", {"Content-Type": "text/html; charset=utf-8"})
    if path == "/notes.txt":
        return Answer(200, b"words", {"Content-Type": "application/octet-stream"})
    return Answer(404, b"not here")


def inputs(staging: Path, *hosts: str, **web: object) -> UrlInputs:
    staging.mkdir(exist_ok=True)
    return UrlInputs(staging, WebSettings(fetch_hosts=hosts, **web))


@pytest.fixture
def server() -> Iterator[Receiver]:
    with receiver(serve) as running:
        yield running


def test_urls_are_downloaded_into_the_staging_folder(tmp_path: Path, server: Receiver) -> None:
    fetch = inputs(tmp_path / "staging", "127.0.0.1")
    assert fetch.fetch(server.url("/speech.wav?sig=abc"), "audio", "audio_url") == "speech.wav"
    assert fetch.fetch(server.url("/files/7f3a"), "presenter", "video_urls[0]") == "7f3a.mp4"
    assert fetch.fetch(server.url("/download"), "presenter", "video_urls[1]") == "änna talks.mp4"
    assert fetch.fetch(server.url("/unsized.mp4"), "presenter", "video_urls[2]") == "unsized.mp4"
    assert fetch.fetch(server.url("/moved"), "audio", "video_urls[3]") == "speech-2.wav", "redirect followed"
    staging = tmp_path / "staging"
    assert (staging / "speech.wav").read_bytes() == WAV == (staging / "speech-2.wav").read_bytes()
    assert (staging / "7f3a.mp4").read_bytes() == MP4 == (staging / "änna talks.mp4").read_bytes()
    assert fetch.stored == ["speech.wav", "7f3a.mp4", "änna talks.mp4", "unsized.mp4", "speech-2.wav"]


def refused(staging: Path, error: type[HeygemdError], call: Callable[[], object]) -> HeygemdError:
    with pytest.raises(error) as caught:
        call()
    assert list(staging.iterdir()) == [], "nothing is left in the staging folder"
    assert "sig=" not in str(caught.value) and "token" not in str(caught.value), "the URL is never quoted"
    return caught.value


def test_a_host_not_allowed_is_refused_naming_the_setting(tmp_path: Path, server: Receiver) -> None:
    staging = tmp_path / "staging"
    fetch = inputs(staging, "cdn.example.com")
    call = lambda: fetch.fetch(server.url("/speech.wav?sig=1"), "audio", "audio_url")  # noqa: E731
    error = refused(staging, FetchNotAllowed, call)
    assert error.code == "FETCH_NOT_ALLOWED" and "127.0.0.1" in str(error) and "web.fetch_hosts" in str(error)
    assert http_status(error) == 400
    with pytest.raises(FetchNotAllowed):
        fetch.check("http://127.0.0.1/x.wav", "audio_url")
    assert server.seen == []


def test_a_redirect_to_a_host_not_allowed_is_refused(tmp_path: Path, server: Receiver) -> None:
    staging = tmp_path / "staging"
    fetch = inputs(staging, "127.0.0.1")
    error = refused(staging, FetchNotAllowed, lambda: fetch.fetch(server.url("/away"), "audio", "audio_url"))
    assert "media.example" in str(error)


def test_a_metadata_address_is_refused_even_inside_an_allowed_network(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    fetch = inputs(staging, "0.0.0.0/0")
    call = lambda: fetch.fetch("http://169.254.169.254/latest/meta-data/iam", "audio", "audio_url")  # noqa: E731
    assert "never sends to" in str(refused(staging, FetchNotAllowed, call))


@pytest.mark.parametrize("path", ["/speech.wav", "/unsized.mp4"], ids=["declared", "streamed"])
def test_a_file_over_the_limit_is_refused(tmp_path: Path, server: Receiver, path: str) -> None:
    staging = tmp_path / "staging"
    fetch = inputs(staging, "127.0.0.1", max_file_mb=2000 / 2**20)
    role = "audio" if path.endswith(".wav") else "presenter"
    error = refused(staging, TooLarge, lambda: fetch.fetch(server.url(path), role, "audio_url"))
    assert "web.max_file_mb" in str(error) and "127.0.0.1" in str(error) and error.code == "UPLOAD_TOO_LARGE"


def test_the_job_total_counts_every_url(tmp_path: Path, server: Receiver) -> None:
    staging = tmp_path / "staging"
    fetch = inputs(staging, "127.0.0.1", max_total_mb=8000 / 2**20)
    fetch.fetch(server.url("/files/7f3a"), "presenter", "video_urls[0]")
    with pytest.raises(TooLarge, match="web.max_total_mb"):
        fetch.fetch(server.url("/files/7f3a"), "presenter", "video_urls[1]")
    assert [p.name for p in staging.iterdir()] == ["7f3a.mp4"], "the file begun is removed"


def test_a_404_fails_naming_the_host(tmp_path: Path, server: Receiver) -> None:
    staging = tmp_path / "staging"
    fetch = inputs(staging, "127.0.0.1")
    error = refused(staging, FetchFailed, lambda: fetch.fetch(server.url("/gone.wav?sig=2"), "audio", "audio_url"))
    assert error.code == "FETCH_FAILED" and "audio_url (from 127.0.0.1): answered 404 Not Found" in str(error)
    assert http_status(error) == 502


@pytest.mark.parametrize(
    ("path", "words"), [("/login.mp4", "answered a page (text/html)"), ("/notes.txt", "notes.txt")]
)
def test_no_media_is_refused_by_name_and_type(tmp_path: Path, server: Receiver, path: str, words: str) -> None:
    staging = tmp_path / "staging"
    fetch = inputs(staging, "127.0.0.1")
    error = refused(staging, BadUpload, lambda: fetch.fetch(server.url(path), "presenter", "video_urls[0]"))
    assert words in str(error) and "not a video or a still photo" in str(error)


def test_a_server_that_stalls_fails_after_the_timeout(tmp_path: Path) -> None:
    with receiver(lambda _: Answer(hold=stalled.release)) as stalled:
        staging = tmp_path / "staging"
        fetch = inputs(staging, "127.0.0.1", fetch_timeout=0.3)
        error = refused(staging, FetchFailed, lambda: fetch.fetch(stalled.url("/a.wav"), "audio", "audio_url"))
    assert "no answer within 0.3 s" in str(error)


@pytest.mark.parametrize("declare_length", [True, False], ids=["sized", "unsized"])
def test_a_server_that_trickles_fails_at_the_deadline_of_the_jobs_downloads(
    tmp_path: Path, declare_length: bool
) -> None:
    """A byte every 0.01 s never trips the timeout of a step: the deadline of all the job's downloads ends it, in
    the body (and a body without a length, cut there, is not taken for a whole one)."""
    slowly = Answer(200, MP4, {"Content-Type": "video/mp4"}, declare_length=declare_length, drip_s=0.01)
    with receiver(lambda _: slowly) as slow:
        staging = tmp_path / "staging"
        fetch = inputs(staging, "127.0.0.1", fetch_timeout=1.0, fetch_deadline=1.0)
        began = time.monotonic()
        error = refused(staging, FetchFailed, lambda: fetch.fetch(slow.url("/a.mp4"), "presenter", "video_urls[0]"))
        assert time.monotonic() - began < 5, "not the 60 s the whole answer would take"
    assert "video_urls[0] (from 127.0.0.1)" in str(error) and "web.fetch_deadline = 1 s" in str(error)


def test_too_many_files_and_bad_urls_are_refused(tmp_path: Path, server: Receiver) -> None:
    staging = tmp_path / "staging"
    fetch = inputs(staging, "127.0.0.1", max_files=2)
    fetch.fetch(server.url("/speech.wav"), "audio", "audio_url")
    fetch.fetch(server.url("/files/7f3a"), "presenter", "video_urls[0]")
    with pytest.raises(TooLarge, match="more than 2 files"):
        fetch.fetch(server.url("/files/7f3a"), "presenter", "video_urls[1]")
    with pytest.raises(BadUpload, match=r"video_urls\[1\] is not an http:// or https:// URL"):
        fetch.check("file:///etc/passwd", "video_urls[1]")


DISK_FULL_SCRIPT = """
import sys
from pathlib import Path
from heygemd.errors import DiskFull
from heygemd.settings import WebSettings
from heygemd.web.fetch import UrlInputs
from tests.httpserver import Answer, receiver

staging = Path(sys.argv[1]) / "staging"
with receiver(lambda _: Answer(200, b"v" * 3_000_000, {"Content-Type": "video/mp4"})) as server:
    try:
        fetch = UrlInputs(staging, WebSettings(fetch_hosts=("127.0.0.1",)))
        fetch.fetch(server.url("/b.mp4"), "presenter", "video_urls[0]")
    except DiskFull as exc:
        print("ERROR", exc.code, exc.message)
print("LEFT", sorted(p.name for p in staging.iterdir()))
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare is not installed")
def test_a_full_disk_is_disk_full_and_leaves_nothing(tmp_path: Path) -> None:
    """A real full filesystem: a 1 MiB tmpfs mounted on the staging folder in a private mount namespace."""
    result = run_on_full_disk(tmp_path, "staging", DISK_FULL_SCRIPT)
    assert result.returncode == 0, result.stderr
    error_line, left_line = result.stdout.strip().splitlines()[-2:]
    assert error_line.startswith("ERROR DISK_FULL ") and "b.mp4" in error_line, result.stdout
    assert left_line == "LEFT []"
