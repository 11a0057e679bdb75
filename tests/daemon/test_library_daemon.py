"""The presenter library with the real daemon (``heygemd run``) and real files: presenters copied into the library
are prepared between jobs (ready with a poster; a link, a faceless video, failed with their errors); a job folder
holding only its audio and job.toml renders the presenters it names, each output as long as the audio, an unknown
name failing only its video; the face track and the engine's preparation are found cached (no detection, no VAE
encoding: MuseTalk's tiny random model); a job killed mid-render resumes after its presenters left the library; a
job rendering while its presenters are deleted or replaced in the library (as a NAS user does, and refused through
the API) renders them as they were when it was claimed, touching nothing outside the inbox, outbox and state."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from heygemd.pipeline.audio import decode_audio
from heygemd.pipeline.probe import probe_video
from heygemd.settings import load_settings
from heygemd.web.app import create_app
from tests.daemon.daemon_process import Daemon, Media, stop_daemon
from tests.pipeline.media import lavfi_clip
from tests.test_musetalk_e2e import models_with

pytestmark = pytest.mark.slow


def presenters(daemon: Daemon) -> dict[str, dict[str, Any]]:
    try:
        document = json.loads((daemon.state / "presenters.json").read_bytes())
    except (FileNotFoundError, ValueError):
        return {}
    return {p["name"]: p for p in document["presenters"]}


def settled(daemon: Daemon, names: set[str]) -> Callable[[], dict[str, dict[str, Any]] | None]:
    def check() -> dict[str, dict[str, Any]] | None:
        now = presenters(daemon)
        return now if set(now) == names and all(p["state"] != "preparing" for p in now.values()) else None

    return check


def audio_seconds(path: Path) -> float:
    return len(decode_audio(path)) / 16000


def test_a_job_of_audio_only_renders_the_library_presenters_it_names(
    daemon_factory: Callable[..., Daemon], media: Media, tmp_path: Path
) -> None:
    daemon = daemon_factory(settle_seconds=2.0)
    library = daemon.root / "models" / "presenters"
    library.mkdir()
    shutil.copyfile(media.face_a, library / "anna.mp4")
    shutil.copyfile(media.face_b, library / "bob.mp4")
    (library / "bob.toml").write_text('display_name = "Bob B."\nloop_mode = "loop"\n')
    (library / "link.mp4").symlink_to(media.face_a)
    lavfi_clip(library / "pattern.mp4", size="320x180", seconds=1)
    daemon.start().wait_ready()

    ready = daemon.wait_for(settled(daemon, {"anna", "bob", "link", "pattern"}), 180, "the library prepared")
    for name in ("anna", "bob"):
        assert ready[name]["state"] == "ready", ready[name]
        assert ready[name]["engines"] == ["mouthwarp"] and ready[name]["face_ratio"] > 0.9
        assert (daemon.state / "posters" / ready[name]["poster"]).read_bytes()[:2] == b"\xff\xd8"
    assert ready["bob"]["display_name"] == "Bob B."
    assert ready["link"]["state"] == "failed" and ready["link"]["error"]["code"] == "UNSAFE_PATH"
    assert ready["pattern"]["state"] == "failed" and ready["pattern"]["error"]["code"] == "NO_FACE"
    assert ready["pattern"]["error"]["message"].startswith("presenters/pattern.mp4: a face was found in 0%")

    daemon.submit("lesson-01", {"lesson.wav": media.speech, "job.toml": b'presenters = ["anna", "bob", "zoe"]\n'})
    status = daemon.wait_finished("lesson-01", timeout=180)
    assert status["state"] == "partial", status
    videos = {v["presenter"]: v for v in status["videos"]}
    assert [v["input"] for v in status["videos"]] == ["anna.mp4", "bob.mp4", "zoe"]
    for name in ("anna", "bob"):
        video = videos[name]
        assert video["state"] == "done", video
        assert video["face_track"] == "cached" and video["timings"]["detect"] == 0.0  # prepared before: no detection
        out = probe_video(daemon.outbox / "lesson-01" / video["output"])
        assert abs(out.duration - audio_seconds(media.speech)) <= 1 / out.fps + 0.03
    zoe = videos["zoe"]
    assert zoe["state"] == "failed" and zoe["error"]["code"] == "NO_SUCH_PRESENTER"
    assert "the presenters there: anna, bob, link, pattern" in zoe["error"]["message"]

    # a job with its own video and a library presenter; killed mid-render; the presenters leave the library
    daemon.submit(
        "lesson-02",
        {"lesson.wav": media.long_speech, "own.mp4": media.face_b, "job.toml": b'presenters = ["anna", "bob"]\n'},
    )
    daemon.wait_for(
        lambda: (s := daemon.status("lesson-02")) and any(v["state"] == "processing" for v in s["videos"]),
        120,
        "lesson-02 rendering",
    )
    daemon.send(signal.SIGKILL)
    daemon.wait_exit(30)
    for name in ("anna.mp4", "bob.mp4", "bob.toml"):
        (library / name).unlink()
    daemon.start().wait_ready()
    status = daemon.wait_finished("lesson-02", timeout=240)
    assert status["state"] == "done", status
    assert status["attempt"] == 2
    assert [(v["input"], v["presenter"]) for v in status["videos"]] == [
        ("anna.mp4", "anna"),
        ("bob.mp4", "bob"),
        ("own.mp4", None),
    ]
    for video in status["videos"]:
        out = probe_video(daemon.outbox / "lesson-02" / video["output"])
        assert abs(out.duration - audio_seconds(media.long_speech)) <= 1 / out.fps + 0.03
    daemon.wait_for(lambda: set(presenters(daemon)) == {"link", "pattern"}, 60, "the removed presenters forgotten")
    archived = next((daemon.state / "archive").glob("*/lesson-02"))
    assert sorted(p.name for p in (archived / "input").iterdir()) == [
        ".ready",
        "anna.mp4",
        "bob.mp4",
        "job.toml",
        "lesson.wav",
        "own.mp4",
    ]  # what was rendered, kept for a retry


def outside_heygemds_folders(daemon: Daemon) -> dict[str, tuple[int, int, int]]:
    """Every path under the daemon's root but its inbox (with the state folder), outbox and logs: inode, size and
    mtime, to see that nothing there was written, replaced or removed."""
    mine = {daemon.inbox, daemon.outbox, *daemon.logs}
    found: dict[str, tuple[int, int, int]] = {}
    for folder, dirs, files in os.walk(daemon.root):
        dirs[:] = [d for d in dirs if Path(folder, d) not in mine]
        for name in [*dirs, *files]:
            path = Path(folder, name)
            if path not in mine:
                info = path.lstat()
                found[str(path.relative_to(daemon.root))] = (info.st_ino, info.st_size, info.st_mtime_ns)
    return found


def test_presenters_deleted_or_replaced_while_their_job_renders_are_rendered_as_claimed(
    daemon_factory: Callable[..., Daemon], media: Media, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = daemon_factory(settle_seconds=1.0)
    library = daemon.root / "models" / "presenters"
    library.mkdir()
    for name, video in (("anna", media.face_a), ("bob", media.face_b)):
        shutil.copyfile(video, library / f"{name}.mp4")
        (library / f"{name}.mp4.ready").touch()  # the copy is complete: prepared at once
    (library / "anna.toml").write_text('display_name = "Anna S."\n')
    replacement = lavfi_clip(tmp_path / "other.mp4", size="640x360", seconds=1)  # no face, another size
    for key in [k for k in os.environ if k.startswith("HEYGEMD_")]:
        monkeypatch.delenv(key)
    api = TestClient(create_app(load_settings(daemon.config)), base_url="http://localhost")
    daemon.start().wait_ready()
    ready = daemon.wait_for(settled(daemon, {"anna", "bob"}), 120, "the library prepared")
    assert [p["state"] for p in ready.values()] == ["ready", "ready"], ready
    anna_poster = daemon.state / "posters" / ready["anna"]["poster"]
    assert anna_poster.is_file()

    daemon.submit("lesson", {"lesson.wav": media.long_speech, "job.toml": b'presenters = ["anna", "bob"]\n'})
    daemon.wait_for(
        lambda: (s := daemon.status("lesson")) and s["videos"][0]["state"] == "processing",
        120,
        "anna's video rendering",
    )
    # the API refuses to remove a presenter a running job names, and removes nothing
    busy = api.delete("/api/presenters/anna")
    assert busy.status_code == 409 and busy.json()["code"] == "PRESENTER_BUSY", busy.text
    assert "lesson" in busy.json()["message"]
    assert sorted(os.listdir(library)) == ["anna.mp4", "anna.mp4.ready", "anna.toml", "bob.mp4", "bob.mp4.ready"]
    # a NAS user removes anna and replaces bob by another file under the same name (copied, renamed over it)
    for name in ("anna.mp4", "anna.toml", "anna.mp4.ready"):
        (library / name).unlink()
    shutil.copyfile(replacement, library / "bob.mp4.part")
    os.replace(library / "bob.mp4.part", library / "bob.mp4")
    status = daemon.status("lesson")
    assert status is not None and status["state"] == "processing", status  # all this while the job renders
    left = outside_heygemds_folders(daemon)

    status = daemon.wait_finished("lesson", timeout=180)
    assert status["state"] == "done", status
    assert [(v["input"], v["presenter"], v["face_track"]) for v in status["videos"]] == [
        ("anna.mp4", "anna", "cached"),
        ("bob.mp4", "bob", "cached"),
    ]  # the files prepared before: the face tracks of the claimed files, not the replacement's
    for video in status["videos"]:
        out = probe_video(daemon.outbox / "lesson" / video["output"])
        assert (out.width, out.height) == (320, 180)
        assert abs(out.duration - audio_seconds(media.long_speech)) <= 1 / out.fps + 0.03
    archived = next((daemon.state / "archive").glob("*/lesson")) / "input"
    assert (archived / "anna.mp4").read_bytes() == media.face_a.read_bytes()
    assert (archived / "bob.mp4").read_bytes() == media.face_b.read_bytes()  # what was rendered, kept for a retry

    # the library shows what is there now: anna gone (her poster too), bob the new file (a pattern: no face)
    now = daemon.wait_for(settled(daemon, {"bob"}), 120, "anna forgotten, the new bob prepared")
    assert now["bob"]["state"] == "failed" and now["bob"]["error"]["code"] == "NO_FACE", now
    assert now["bob"]["identity"]["size"] == replacement.stat().st_size
    assert not anna_poster.exists()
    assert [p["name"] for p in api.get("/api/presenters").json()["presenters"]] == ["bob"]
    assert outside_heygemds_folders(daemon) == left  # the library and models read, never written
    # the job finished, nothing names bob any more: the API removes it
    assert api.delete("/api/presenters/bob").status_code == 200
    assert os.listdir(library) == []  # its file and its ready marker


def test_a_presenter_overwritten_in_place_while_its_job_renders_fails_its_video_and_a_retry_takes_the_new_file(
    daemon_factory: Callable[..., Daemon], media: Media
) -> None:
    """A NAS user "replaces" bob.mp4 by writing into it (the same file, as a copy over SMB does) while the job
    renders anna: bob's video fails PRESENTER_CHANGED instead of rendering the new (or half-written) file; the job's
    other video renders; `heygemd retry` renders bob as the library holds it now."""
    daemon = daemon_factory(settle_seconds=1.0)
    library = daemon.root / "models" / "presenters"
    library.mkdir()
    for name, video in (("anna", media.face_a), ("bob", media.face_b)):
        shutil.copyfile(video, library / f"{name}.mp4")
        (library / f"{name}.mp4.ready").touch()
    daemon.start().wait_ready()
    daemon.wait_for(settled(daemon, {"anna", "bob"}), 120, "the library prepared")

    daemon.submit("lesson", {"lesson.wav": media.long_speech, "job.toml": b'presenters = ["anna", "bob"]\n'})
    daemon.wait_for(
        lambda: (s := daemon.status("lesson")) and s["videos"][0]["state"] == "processing",
        120,
        "anna's video rendering",
    )
    with open(library / "bob.mp4", "r+b") as bob:  # truncated and written again: the same inode
        bob.truncate(0)
        bob.write(media.face_large.read_bytes())
    status = daemon.wait_finished("lesson", timeout=180)
    assert status["state"] == "partial", status
    anna, bob_video = status["videos"]
    assert (anna["presenter"], anna["state"]) == ("anna", "done"), anna
    assert (bob_video["presenter"], bob_video["state"]) == ("bob", "failed"), bob_video
    assert bob_video["error"]["code"] == "PRESENTER_CHANGED", bob_video
    assert bob_video["error"]["message"].startswith("presenters/bob.mp4: the presenter 'bob' was overwritten")
    assert sorted(os.listdir(daemon.outbox / "lesson")) == sorted(["anna.mp4", "anna.jpg", "status.json", "job.log"])

    retried = daemon.command("retry", "lesson")
    assert retried.returncode == 0 and "lesson-retry" in retried.stdout, retried.stderr
    again = daemon.wait_finished("lesson-retry", timeout=240)
    assert [(v["presenter"], v["state"]) for v in again["videos"]] == [("bob", "done")], again
    out = probe_video(daemon.outbox / "lesson-retry" / again["videos"][0]["output"])
    assert (out.width, out.height) == (960, 540)  # the library's file now, not the archive's link


def test_musetalk_reuses_the_presenters_preparation(musetalk_folder: Path, media: Media, tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "d", batch_size=8, settle_seconds=1.0)
    (daemon.root / "models").rmdir()
    models = models_with(musetalk_folder, daemon.root)
    daemon.config.write_text(daemon.config.read_text().replace('name = "mouthwarp"', 'name = "auto"'))
    library = models / "presenters"
    library.mkdir()
    shutil.copyfile(media.face_a, library / "anna.mp4")
    (library / "anna.mp4.ready").touch()  # the copy is complete: prepared at once
    try:
        daemon.start().wait_ready()
        ready = daemon.wait_for(settled(daemon, {"anna"}), 240, "anna prepared")["anna"]
        assert ready["state"] == "ready", ready
        assert "musetalk" in ready["engines"] and len(ready["cache_files"]) == 1
        assert (daemon.state / "cache" / "presenter" / ready["cache_files"][0]).is_file()

        for job, audio in (("lesson-01", media.speech), ("lesson-02", media.long_speech)):
            daemon.submit(job, {"lesson.wav": audio, "job.toml": b'presenters = ["anna"]\n'})
            status = daemon.wait_finished(job, timeout=300)
            assert status["state"] == "done" and status["engine"] == "musetalk", status
            video = status["videos"][0]
            assert (video["presenter"], video["face_track"], video["engine_prep"]) == ("anna", "cached", "cached")
            assert video["timings"]["detect"] == 0.0 and "prepare" not in video["timings"]  # no detection, no VAE
            out = probe_video(daemon.outbox / job / video["output"])
            assert abs(out.duration - audio_seconds(audio)) <= 1 / out.fps + 0.03
    finally:
        stop_daemon(daemon)
