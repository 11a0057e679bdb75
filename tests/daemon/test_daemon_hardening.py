"""The real daemon against stalled uploads and symbolic links: a presenter at 0 bytes or an MP4 without its index
is not taken until complete, or until intake.incomplete_timeout (then it fails alone); a link is refused and its
target never read or touched. Synchronisation by polling the daemon's own files and log, never by sleeps."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from heygemd.fsutil import remove_tree
from heygemd.pipeline.probe import top_level_atoms
from tests.daemon.daemon_process import JOB_TIMEOUT_S, Daemon, Media, stop_daemon
from tests.pipeline.media import ffmpeg

pytestmark = pytest.mark.slow

INCOMPLETE_TIMEOUT_S = 8.0


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(
        tmp_path_factory.mktemp("hardening"),
        settle_seconds=0.5,
        rescan_interval=0.5,
        incomplete_timeout=INCOMPLETE_TIMEOUT_S,
    )
    d.start()
    try:
        d.wait_ready()
        yield d
    finally:
        stop_daemon(d)


def without_index(clip: Path, out: Path) -> Path:
    """``clip`` without its moov box (cut at it, or right after ftyp when it comes first: +faststart)."""
    atoms = top_level_atoms(clip)
    moov = next(offset for name, offset, _ in atoms if name == "moov")
    data = clip.read_bytes()
    if moov < next(offset for name, offset, _ in atoms if name == "mdat"):  # faststart: drop the moov box itself
        size = next(size for name, _, size in atoms if name == "moov")
        out.write_bytes(data[:moov] + data[moov + size :])
    else:
        out.write_bytes(data[:moov])
    return out


def test_a_presenter_at_zero_bytes_is_taken_only_once_complete(daemon: Daemon, media: Media) -> None:
    d, name = daemon, "zero bytes"
    job = d.submit(name, {"voice.wav": media.speech, "bob.mp4": b""}, marker=False)  # settles, bob.mp4 does not
    d.wait_for(lambda: d.has_event("job.waiting", job_name=name), 30, "job.waiting in the log")
    waiting = next(e for e in d.events() if e.get("event") == "job.waiting" and e.get("job_name") == name)
    assert waiting["incomplete"] == f"{name}/bob.mp4: 0 bytes so far", waiting
    assert not d.claimed(name) and job.is_dir()
    shutil.copyfile(media.face_a, job / "bob.mp4")  # then the client writes it at once
    status = d.wait_finished(name)
    assert status["state"] == "done", status


def test_an_mp4_without_its_index_is_claimed_after_the_timeout_and_fails_alone(
    daemon: Daemon, media: Media, tmp_path: Path
) -> None:
    d, name = daemon, "no index"
    d.submit(
        name,
        {
            "voice.wav": media.speech,
            "anna.mp4": media.face_a,
            "bob.mp4": without_index(media.face_b, tmp_path / "bob.mp4"),
        },
        marker=False,
    )
    d.wait_for(lambda: d.has_event("job.waiting", job_name=name), 30, "job.waiting in the log")
    assert not d.claimed(name)
    status = d.wait_finished(name, timeout=INCOMPLETE_TIMEOUT_S + JOB_TIMEOUT_S)
    assert d.has_event("job.incomplete_timeout", job_name=name)
    videos = {v["input"]: v for v in status["videos"]}
    assert status["state"] == "partial", status
    assert videos["anna.mp4"]["state"] == "done"
    bob = videos["bob.mp4"]
    assert bob["state"] == "failed" and bob["error"]["code"] in ("DECODE_FAILED", "NOT_MEDIA"), bob
    assert videos["bob.mp4"]["error"]["message"].startswith(f"{name}/bob.mp4: ")


def test_a_linked_presenter_is_refused_and_its_target_untouched(daemon: Daemon, media: Media) -> None:
    d, name = daemon, "linked"
    secret = d.root / "other-team" / "secret.mp4"
    secret.parent.mkdir()
    shutil.copyfile(media.face_b, secret)
    before = secret.read_bytes()
    folder = d.staging / name
    folder.mkdir(parents=True)
    shutil.copyfile(media.speech, folder / "voice.wav")
    shutil.copyfile(media.face_a, folder / "a.mp4")
    os.symlink(secret, folder / "talk.mp4")
    (folder / ".ready").touch()
    os.rename(folder, d.inbox / name)
    status = d.wait_finished(name)
    videos = {v["input"]: v for v in status["videos"]}
    assert status["state"] == "partial" and videos["a.mp4"]["state"] == "done", status
    error = videos["talk.mp4"]["error"]
    assert (
        error["code"] == "UNSAFE_PATH"
        and error["message"] == f"{name}/talk.mp4: is a symbolic link to {secret}; it is not followed"
    ), error
    assert not (d.outbox / name / "talk.mp4").exists()
    assert secret.read_bytes() == before
    archived = next((d.state / "archive").glob(f"*/{name}/input/talk.mp4"))
    assert archived.is_symlink() and os.readlink(archived) == str(secret)


def test_a_fifo_job_toml_fails_its_job_and_the_daemon_goes_on(daemon: Daemon, media: Media) -> None:
    d, name = daemon, "fifo toml"
    folder = d.staging / name
    folder.mkdir(parents=True)
    shutil.copyfile(media.speech, folder / "voice.wav")
    shutil.copyfile(media.face_a, folder / "a.mp4")
    os.mkfifo(folder / "job.toml")  # nobody ever writes to it: reading it would wait for ever
    (folder / ".ready").touch()
    os.rename(folder, d.inbox / name)
    status = d.wait_finished(name)
    assert status["state"] == "failed", status
    assert status["error"]["code"] == "NOT_A_FILE", status
    assert status["error"]["message"] == f"{name}/job.toml: is a named pipe (FIFO), not a regular file"
    assert d.running and d.has_event("job.failed", job_id=name)
    d.submit("after fifo", {"voice.wav": media.speech, "a.mp4": media.face_a})
    assert d.wait_finished("after fifo")["state"] == "done"  # the worker is free for the next job


def test_long_names_fit_the_second_job_of_a_255_byte_name_and_a_244_byte_presenter(
    daemon: Daemon, media: Media
) -> None:
    d, name = daemon, "ä" * 127 + "n"  # 255 bytes: as long as a folder name can be
    presenter = "é" * 120 + ".mp4"  # 244 bytes: its temporary output name is longer than the name itself
    d.submit(name, {"voice.wav": media.speech, presenter: media.face_a})
    first = d.wait_finished(name)
    assert first["state"] == "done" and first["videos"][0]["output"] == presenter, first
    assert (d.outbox / name / presenter).is_file() and (d.outbox / name / ("é" * 120 + ".jpg")).is_file()

    d.submit(name, {"voice.wav": media.speech, "a.mp4": media.face_a})  # the same name again
    second = d.wait_for(
        lambda: next((n for n in os.listdir(d.outbox) if n.endswith("-2") and n.startswith("ä" * 100)), None),
        30,
        "the second job's outbox folder",
    )
    assert len(second.encode()) <= 255 and second == "ä" * 126 + "-2", second
    status = d.wait_finished(second)
    assert status["state"] == "done" and status["job_name"] == name, status


def test_a_job_nested_1100_deep_and_links_in_the_state_folder_stop_neither_once_nor_run(
    daemon_factory, media: Media, nested
) -> None:
    d = daemon_factory("deep", settle_seconds=0.5, rescan_interval=0.5)
    outside = d.root / "other-team"
    (outside / "input").mkdir(parents=True)
    (outside / "input" / "plan.txt").write_text("do not touch")
    (d.state / "claimed").mkdir(parents=True)
    (d.state / "claimed" / "planted").symlink_to(outside)  # looks like a claimed job with its input/
    (d.state / "claimed" / "stale").symlink_to(outside / "input")  # looks like an old reservation
    os.utime(d.state / "claimed" / "stale", (0, 0), follow_symlinks=False)
    try:
        for name in ("deep-once", "deep-run"):
            job = d.submit(name, {"voice.wav": media.speech, "face.mp4": media.face_a}, marker=False)
            nested(job / "sub", 1100)
            (job / ".ready").touch()
            if name == "deep-once":
                once = d.command("once", timeout=JOB_TIMEOUT_S + 60)
                assert once.returncode == 0, once.stdout[-3000:] + once.stderr[-3000:]
                assert json.loads(d.status_path(name).read_bytes())["state"] == "done"
                nested(d.state / "trash" / "half-deleted", 1100)  # for empty_trash at the next start
        d.start().wait_ready()
        assert d.wait_finished("deep-run")["state"] == "done"
        assert not (d.state / "trash" / "half-deleted").exists()
        assert (outside / "input" / "plan.txt").read_text() == "do not touch"
        assert (d.state / "claimed" / "planted").is_symlink() and (d.state / "claimed" / "stale").is_symlink()
    finally:
        stop_daemon(d)
        remove_tree(d.root)  # the archived jobs hold the deep folders; pytest's own cleanup cannot remove them


def test_complete_files_that_only_look_unfinished_are_taken_once_settled(
    daemon: Daemon, media: Media, tmp_path: Path
) -> None:
    d, name = daemon, "cover and padding"
    cover = tmp_path / "cover.png"
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=320x180", "-frames:v", "1", str(cover))
    picture = tmp_path / "picture.mp4"  # its only stream is an attached picture: no duration
    ffmpeg("-i", str(cover), "-map", "0", "-c:v", "mjpeg", "-disposition:v:0", "attached_pic", str(picture))
    mp3 = tmp_path / "voice.mp3"
    ffmpeg("-i", str(media.speech), str(mp3))
    padded = bytes(8192) + mp3.read_bytes()  # leading zero padding
    d.submit(name, {"voice.mp3": padded, "anna.mp4": media.face_a, "cover.mp4": picture}, marker=False)
    status = d.wait_finished(name, timeout=JOB_TIMEOUT_S)
    assert not d.has_event("job.waiting", job_name=name) and not d.has_event("job.incomplete_timeout", job_name=name)
    videos = {v["input"]: v for v in status["videos"]}
    assert videos["anna.mp4"]["state"] == "done", status
    assert status["audio"]["duration_s"] > 2, status
