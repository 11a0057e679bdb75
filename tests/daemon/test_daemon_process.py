"""End to end: the real ``heygemd run`` process, driven through its inbox, outbox, status.json and signals.

Each daemon renders with the weights-free mouthwarp engine on tiny generated media. Synchronisation is by
polling files (``wait_until``), never by fixed sleeps. Daemons are always SIGKILLed in teardown.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from heygemd.daemon.status import SCHEMA_PATH
from heygemd.names import is_heygemd_temp
from tests.daemon.daemon_process import JOB_TIMEOUT_S, POLL_S, Daemon, Media, ffprobe, stop_daemon

pytestmark = pytest.mark.slow

SETTLE_S = 1.0
SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the tests whose jobs do not interfere: settle 1 s, polling observer (0.2 s)."""
    daemon = Daemon(
        tmp_path_factory.mktemp("shared"),
        settle_seconds=SETTLE_S,
        observer="polling",
        poll_interval=0.2,
        rescan_interval=1.0,
    )
    daemon.start()
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        stop_daemon(daemon)


def idle(daemon: Daemon) -> bool:
    claimed = daemon.state / "claimed"
    return not claimed.is_dir() or not any(claimed.iterdir())


def validate(status: dict[str, Any]) -> None:
    jsonschema.validate(status, SCHEMA)


def audio_duration(path: Path) -> float:
    return float(ffprobe(path)["format"]["duration"])


def job_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if is_heygemd_temp(p.name))


def video_entry(status: dict[str, Any] | None, index: int) -> dict[str, Any] | None:
    if not status or len(status.get("videos") or []) <= index:
        return None
    return status["videos"][index]


def assert_plays_with_audio(mp4: Path, speech: Path) -> None:
    """H.264 + AAC, and as long as the speech within one frame."""
    info = ffprobe(mp4)
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264", info
    assert streams["audio"]["codec_name"] == "aac", info
    num, den = (int(x) for x in streams["video"]["r_frame_rate"].split("/"))
    frame = den / num
    expected = audio_duration(speech)
    assert abs(float(info["format"]["duration"]) - expected) <= frame, (info, expected)
    assert abs(float(streams["video"]["duration"]) - expected) <= frame, (info, expected)


# ---------------------------------------------------------------------------------------------- intake


def test_slow_copy_is_claimed_only_after_it_settles(shared: Daemon, media: Media) -> None:
    d, name = shared, "slow copy"
    d.wait_for(lambda: idle(d), JOB_TIMEOUT_S, "the daemon to be idle")
    job = d.inbox / name
    job.mkdir()
    shutil.copyfile(media.speech, job / "voice.wav")
    data = media.face_a.read_bytes()
    size = len(data) // 12 + 1
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    assert len(chunks) >= 12
    last_write: list[float] = []
    writer_error: list[BaseException] = []

    def writer() -> None:  # a slow uploader: one chunk every 0.2 s (~2.5 s), then the last file
        try:
            with open(job / "a.mp4", "ab") as out:
                for chunk in chunks:
                    out.write(chunk)
                    out.flush()
                    time.sleep(0.2)  # the upload's pace, not synchronisation
            shutil.copyfile(media.face_b, job / "b.mp4")
            last_write.append(time.time())
        except BaseException as exc:  # pragma: no cover - reported below
            writer_error.append(exc)

    thread = threading.Thread(target=writer, name="slow-uploader")
    began = time.monotonic()
    thread.start()
    checks = 0
    while thread.is_alive():
        assert job.is_dir(), f"job left the inbox while still being copied\n{d.diagnostics()}"
        assert not (d.state / "claimed" / name).exists(), "claimed while still being copied"
        assert not (d.outbox / name).exists(), "outbox folder made while still being copied"
        checks += 1
        time.sleep(POLL_S)
    thread.join()
    assert not writer_error, writer_error
    assert time.monotonic() - began > 2 * SETTLE_S, (
        "the copy must outlast the settle time for this test to mean anything"
    )
    assert checks > 20

    status = d.wait_finished(name)
    validate(status)
    assert status["state"] == "done", status
    assert [v["state"] for v in status["videos"]] == ["done", "done"], status
    claimed_at = datetime.fromisoformat(status["claimed"]).timestamp()
    assert claimed_at >= last_write[0] + SETTLE_S - 0.05, "claimed before the folder was unchanged for settle_seconds"
    assert (d.outbox / name / "a.mp4").is_file() and (d.outbox / name / "b.mp4").is_file()
    assert not job.exists()


def test_ready_marker_is_claimed_at_once(daemon_factory, media: Media) -> None:
    d = daemon_factory("marker", settle_seconds=600.0, observer="inotify").start().wait_ready()
    d.submit("unmarked", {"voice.wav": media.speech, "a.mp4": media.face_a}, marker=False)
    submitted = time.monotonic()
    d.submit("marked", {"voice.wav": media.speech, "a.mp4": media.face_a})
    d.wait_for(lambda: not (d.inbox / "marked").exists(), 10, "the marked job to be claimed")
    assert time.monotonic() - submitted < 10  # settle_seconds is 600: only the marker explains this
    status = d.wait_finished("marked")
    assert status["state"] == "done", status
    assert d.has_event("job.claimed", job_id="marked")
    # Without a marker the other job waits for its 600 s settle time: still in the inbox, untouched.
    assert (d.inbox / "unmarked" / "a.mp4").is_file()
    assert not (d.outbox / "unmarked").exists() and not (d.state / "claimed" / "unmarked").exists()


# ---------------------------------------------------------------------------------------------- results


def test_results_outputs_posters_status_and_log(shared: Daemon, media: Media) -> None:
    d, name = shared, "lesson"
    d.submit(name, {"voice.wav": media.speech, "a.mp4": media.face_a, "b.mp4": media.face_b, "notes.txt": b"hi"})
    status = d.wait_finished(name)
    out = d.outbox / name

    validate(status)
    assert status["state"] == "done", status
    assert status["job_id"] == name and status["job_name"] == name and status["attempt"] == 1
    assert status["engine"] == "mouthwarp"
    assert status["error"] is None
    assert status["progress"] == 1.0
    assert status["ignored"] == ["notes.txt"]
    assert status["audio"]["file"] == "voice.wav"
    assert abs(status["audio"]["duration_s"] - audio_duration(media.speech)) < 0.01
    assert [v["input"] for v in status["videos"]] == ["a.mp4", "b.mp4"]
    for video in status["videos"]:
        stem = video["input"].removesuffix(".mp4")
        assert video["state"] == "done", video
        assert video["error"] is None
        assert video["output"] == f"{stem}.mp4" and video["poster"] == f"{stem}.jpg"
        assert video["face_ratio"] is not None and video["face_ratio"] > 0.5, video
        assert video["frames_total"] == video["frames_done"] > 0
        assert video["finished"] is not None and video["timings"].get("total", 0) > 0
        assert (out / video["poster"]).read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG
        assert_plays_with_audio(out / video["output"], media.speech)
    assert job_files(out) == {"a.mp4", "a.jpg", "b.mp4", "b.jpg", "status.json", "job.log"}

    log = (out / "job.log").read_text(encoding="utf-8")
    for event in ("job.started", "audio.decoded", "video.started", "video.done", "job.done"):
        assert event in log, f"{event} missing from job.log:\n{log}"
    assert log.count("video.done") == 2 and "a.mp4" in log and "b.mp4" in log
    # the daemon's own log (JSON lines) has the same story, with the job id bound
    assert d.has_event("job.done", job_id=name)

    # inputs left claimed/ for the archive; the inbox no longer has the job
    assert not (d.inbox / name).exists() and not (d.state / "claimed" / name).exists()
    archived = list((d.state / "archive").glob(f"*/{name}/input/voice.wav"))
    assert len(archived) == 1, list((d.state / "archive").rglob("*"))


def test_one_broken_video_makes_a_partial_job(shared: Daemon, media: Media) -> None:
    d, name = shared, "mixed"
    d.submit(
        name,
        {"voice.wav": media.speech, "good.mp4": media.face_a, "broken.mp4": b"this is a text file, not a video\n" * 20},
    )
    status = d.wait_finished(name)
    out = d.outbox / name

    validate(status)
    assert status["state"] == "partial", status
    by_input = {v["input"]: v for v in status["videos"]}
    good, broken = by_input["good.mp4"], by_input["broken.mp4"]
    assert good["state"] == "done" and good["error"] is None
    assert_plays_with_audio(out / "good.mp4", media.speech)
    assert broken["state"] == "failed", broken
    error = broken["error"]
    assert error["code"] and error["code"].isupper() and error["code"] != "INTERNAL", error
    assert "broken.mp4" in error["message"], error
    assert error["hint"].strip(), error
    assert not (out / "broken.mp4").exists() and not (out / "broken.jpg").exists()
    assert leftovers(out) == []
    log = (out / "job.log").read_text(encoding="utf-8")
    assert "video.failed" in log and error["code"] in log and "job.partial" in log


def test_bad_jobs_fail_clearly_and_the_daemon_keeps_serving(shared: Daemon, media: Media) -> None:
    d = shared
    d.submit("no audio", {"a.mp4": media.face_a})
    d.submit("two audios", {"one.wav": media.speech, "two.wav": media.speech, "a.mp4": media.face_a})

    no_audio = d.wait_finished("no audio")
    two_audios = d.wait_finished("two audios")
    for status in (no_audio, two_audios):
        validate(status)
        assert status["state"] == "failed", status
        assert status["error"]["code"] == "BAD_JOB", status
        assert status["error"]["hint"].strip()
        assert [(v["input"], v["state"]) for v in status["videos"]] == [("a.mp4", "not_started")], status
    assert no_audio["error"]["message"] == "no audio/: no audio file in the job folder", no_audio
    assert two_audios["error"]["message"].startswith("two audios/: several audio files"), two_audios
    assert not any(
        ".heygemd" in s["error"]["message"] or "claimed" in s["error"]["message"] for s in (no_audio, two_audios)
    )
    assert "several audio files" in two_audios["error"]["message"], two_audios
    assert '"one.wav"' in two_audios["error"]["message"] and '"two.wav"' in two_audios["error"]["message"]
    assert "job.toml" in two_audios["error"]["hint"]
    assert "job.failed" in (d.outbox / "two audios" / "job.log").read_text(encoding="utf-8")
    no_audio_log = (d.outbox / "no audio" / "job.log").read_text(encoding="utf-8")
    assert "no audio/: no audio file" in no_audio_log and "/.heygemd/claimed" not in no_audio_log
    # a failed job's inputs are archived, not lost
    assert list((d.state / "archive").glob("*/two audios/input/one.wav"))

    assert d.running
    d.submit("after bad", {"voice.wav": media.speech, "a.mp4": media.face_a})
    status = d.wait_finished("after bad")
    assert status["state"] == "done", status
    assert d.running


def test_names_with_spaces_and_chinese(shared: Daemon, media: Media) -> None:
    d, name = shared, "课程 一 lesson"
    d.submit(name, {"讲话 录音.wav": media.speech, "主持人 视频.mp4": media.face_a})
    status = d.wait_finished(name)
    out = d.outbox / name

    validate(status)
    assert status["state"] == "done", status
    assert status["job_name"] == name and status["audio"]["file"] == "讲话 录音.wav"
    video = status["videos"][0]
    assert video["input"] == "主持人 视频.mp4" and video["output"] == "主持人 视频.mp4"
    assert video["poster"] == "主持人 视频.jpg" and (out / "主持人 视频.jpg").is_file()
    assert_plays_with_audio(out / "主持人 视频.mp4", media.speech)
    assert "主持人 视频.mp4" in (out / "job.log").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------- signals


def test_sigkill_mid_video_then_restart_resumes_without_redoing_done_videos(daemon_factory, media: Media) -> None:
    d, name = daemon_factory("kill"), "killed"
    d.start().wait_ready()
    d.submit(name, {"voice.wav": media.long_speech, "a.mp4": media.face_a, "b.mp4": media.face_b})
    out = d.outbox / name

    def second_video_rendering() -> dict[str, Any] | None:
        status = d.status(name)
        a, b = video_entry(status, 0), video_entry(status, 1)
        if a and b and a["state"] == "done" and b["state"] == "processing" and b["frames_done"] > 0:
            return status
        return None

    before = d.wait_for(second_video_rendering, JOB_TIMEOUT_S, "b.mp4 to be processing with frames_done > 0")
    a_mtime = (out / "a.mp4").stat().st_mtime_ns
    d.kill()  # SIGKILL
    assert d.proc is not None and d.proc.returncode == -signal.SIGKILL
    assert d.claimed(name) and not (out / "b.mp4").exists()
    # A kill in the middle of a status write leaves its temp file (this version's name and the older one):
    killed = d.proc.pid
    (out / f".status.json.heygemd-{killed}-0a1b2c3d.json").write_bytes(b'{"half": ')
    (out / f".status.json.tmp-{killed}-4e5f6a7b").write_bytes(b'{"half": ')
    (d.state / "claimed" / name / f".claim.json.heygemd-{killed}-00ff00ff.json").write_bytes(b"{")

    d.start().wait_ready()
    status = d.wait_finished(name)
    validate(status)
    assert status["state"] == "done", status
    assert status["attempt"] == 2
    assert status["pid"] == d.proc.pid  # the resuming process, not the killed one
    a, b = status["videos"]
    assert a["state"] == b["state"] == "done"
    assert a["finished"] == before["videos"][0]["finished"], "a.mp4 was redone"
    assert (out / "a.mp4").stat().st_mtime_ns == a_mtime, "a.mp4 was rewritten"
    assert job_files(out) == {"a.mp4", "a.jpg", "b.mp4", "b.jpg", "status.json", "job.log"}  # no temp file left
    assert leftovers(out) == []
    assert not any(is_heygemd_temp(p.name) for p in (d.state / "archive").glob("*/*/*"))
    assert [p.name for p in d.outbox.iterdir()] == [name], "a second outbox folder appeared"
    assert_plays_with_audio(out / "a.mp4", media.long_speech)
    assert_plays_with_audio(out / "b.mp4", media.long_speech)
    second_run = d.events()
    assert any(e.get("event") == "job.resuming" and e.get("job_id") == name for e in second_run)
    assert [e.get("video") for e in second_run if e.get("event") == "video.started"] == ["b.mp4"]
    assert (out / "job.log").read_text(encoding="utf-8").count("job.started") == 2


def test_sigterm_mid_video_exits_zero_and_restart_completes(daemon_factory, media: Media) -> None:
    d, name = daemon_factory("term"), "termed"
    d.start().wait_ready()
    d.submit(name, {"voice.wav": media.long_speech, "a.mp4": media.face_a})
    out = d.outbox / name

    def rendering() -> bool:
        a = video_entry(d.status(name), 0)
        return bool(a and a["state"] == "processing" and a["frames_done"] > 0)

    d.wait_for(rendering, JOB_TIMEOUT_S, "a.mp4 to be processing with frames_done > 0")
    d.send(signal.SIGTERM)
    assert d.wait_exit(20) == 0, d.diagnostics()

    assert d.claimed(name), "an interrupted job must stay claimed"
    assert not (d.inbox / name).exists()
    status = d.status(name)
    assert status is not None
    validate(status)
    assert status["state"] == "processing" and status["finished"] is None, status
    assert status["videos"][0]["state"] == "pending", status
    assert not (out / "a.mp4").exists() and leftovers(out) == []
    assert d.has_event("job.interrupted") and d.has_event("daemon.stopped")

    d.start().wait_ready()
    status = d.wait_finished(name)
    validate(status)
    assert status["state"] == "done" and status["attempt"] == 2, status
    assert_plays_with_audio(out / "a.mp4", media.long_speech)
    assert job_files(out) == {"a.mp4", "a.jpg", "status.json", "job.log"}
    assert [p.name for p in d.outbox.iterdir()] == [name]

    # idle now: SIGTERM ends the watch loop at once
    d.send(signal.SIGTERM)
    assert d.wait_exit(10) == 0
