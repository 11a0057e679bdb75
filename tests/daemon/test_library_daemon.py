"""The presenter library with the real daemon (``heygemd run``) and real files: presenters copied into the library
are prepared between jobs (ready with a poster; a link, a faceless video, failed with their errors); a job folder
holding only its audio and job.toml renders the presenters it names, each output as long as the audio, an unknown
name failing only its video; the face track and the engine's preparation are found cached (no detection, no VAE
encoding: MuseTalk's tiny random model); a job killed mid-render resumes after its presenters left the library."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from heygemd.pipeline.audio import decode_audio
from heygemd.pipeline.probe import probe_video
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
