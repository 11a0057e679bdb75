"""The console script as people use it: check, status, bad configuration, bad audio."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from heygemd.batch import VideoOutcome, summary
from heygemd.daemon.status import AudioStatus, ErrorStatus, JobStatus, VideoStatus, write_status
from heygemd.daemon.waiting import write_waiting
from heygemd.demo import presenter_video
from heygemd.errors import ErrorInfo
from tests.daemon.conftest import media  # noqa: F401  (the tiny generated media, shared)
from tests.daemon.daemon_process import Media


def run(heygemd_bin: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [str(heygemd_bin), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HEYGEMD_LOGGING__FORMAT": "json", **(env or {})},
    )


def test_check_reports_each_part_with_a_fix(tmp_path: Path, heygemd_bin: Path) -> None:
    env = {
        "HEYGEMD_PATHS__INBOX": str(tmp_path / "inbox"),
        "HEYGEMD_PATHS__OUTBOX": "/proc/heygemd-outbox",
        "HEYGEMD_PATHS__MODELS": str(tmp_path / "models"),
    }
    proc = run(heygemd_bin, "check", env=env)
    lines = proc.stdout.splitlines()
    for name in ("ffmpeg", "ffprobe", "engine", "face detector", "device", "inbox", "outbox", "presenters", "journald"):
        assert any(f"  {name}:" in line for line in lines), f"no line for {name}: {proc.stdout}"
    assert any(line.startswith("ok    inbox:") for line in lines)
    outbox_line = next(i for i, line in enumerate(lines) if "  outbox:" in line)
    assert lines[outbox_line].startswith("FAIL") and lines[outbox_line + 1].strip().startswith("fix:")
    library_line = next(line for line in lines if "  presenters:" in line)  # no library yet: a warning only
    assert library_line.startswith("warn") and f"{tmp_path / 'models' / 'presenters'} does not exist" in library_line
    assert proc.returncode == 1  # a required check failed


def test_check_counts_the_presenters_of_the_library_by_state(tmp_path: Path, heygemd_bin: Path) -> None:
    library = tmp_path / "models" / "presenters"
    library.mkdir(parents=True)
    (library / "anna.mp4").write_bytes(b"not looked at yet")
    (library / "bob.mp4").symlink_to(library / "anna.mp4")  # never followed: failed
    env = {
        "HEYGEMD_PATHS__INBOX": str(tmp_path / "inbox"),
        "HEYGEMD_PATHS__OUTBOX": str(tmp_path / "outbox"),
        "HEYGEMD_PATHS__MODELS": str(tmp_path / "models"),
    }
    proc = run(heygemd_bin, "check", env=env)
    line = next(line for line in proc.stdout.splitlines() if "  presenters:" in line)
    assert line == f"ok    presenters: {library}: 2 presenter(s) (1 preparing, 1 failed)", proc.stdout


def test_check_does_not_warn_about_journald_when_json_logs_are_chosen(tmp_path: Path, heygemd_bin: Path) -> None:
    env = {"HEYGEMD_PATHS__INBOX": str(tmp_path / "inbox"), "HEYGEMD_PATHS__OUTBOX": str(tmp_path / "outbox")}
    line = next(x for x in run(heygemd_bin, "check", env=env).stdout.splitlines() if "  journald:" in x)
    assert line.startswith("ok") and "not used: logging.format = 'json'" in line, line


def test_check_reads_the_landmark_model_and_names_a_damaged_one(tmp_path: Path, heygemd_bin: Path) -> None:
    # A render reads dlib's landmark model only at its first face; the check must read it now. A damaged copy is
    # put first on the path as a package of the same name.
    package = tmp_path / "site" / "face_recognition_models"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models" / "shape_predictor_68_face_landmarks.dat").write_bytes(b"\0" * 4096)
    env = {
        "HEYGEMD_PATHS__INBOX": str(tmp_path / "inbox"),
        "HEYGEMD_PATHS__OUTBOX": str(tmp_path / "outbox"),
        "HEYGEMD_PATHS__MODELS": str(tmp_path / "models"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")])),
    }
    proc = run(heygemd_bin, "check", env=env)
    lines = proc.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if "  face detector:" in line)
    assert lines[at].startswith("FAIL") and "shape_predictor_68_face_landmarks.dat" in lines[at], proc.stdout
    assert "reinstall" in lines[at + 1]
    assert proc.returncode == 1

    healthy = run(heygemd_bin, "check", env={k: v for k, v in env.items() if k != "PYTHONPATH"})
    detector = next(line for line in healthy.stdout.splitlines() if "  face detector:" in line)
    assert detector.startswith("ok") and "landmark model reads" in detector


def test_check_wants_a_checkpoint_when_wav2lip_is_asked_for(tmp_path: Path, heygemd_bin: Path) -> None:
    env = {
        "HEYGEMD_PATHS__INBOX": str(tmp_path / "inbox"),
        "HEYGEMD_PATHS__OUTBOX": str(tmp_path / "outbox"),
        "HEYGEMD_PATHS__MODELS": str(tmp_path / "models"),
        "HEYGEMD_ENGINE__NAME": "wav2lip",
    }
    proc = run(heygemd_bin, "check", env=env)
    engine = next(line for line in proc.stdout.splitlines() if "  engine:" in line)
    assert engine.startswith("FAIL") and "wav2lip_gan.pth" in engine
    assert proc.returncode == 1


def test_check_loads_the_checkpoint_and_names_a_broken_one(tmp_path: Path, heygemd_bin: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "wav2lip_gan.pth").write_bytes(b"<html>login required</html>")  # a failed download
    env = {
        "HEYGEMD_PATHS__INBOX": str(tmp_path / "inbox"),
        "HEYGEMD_PATHS__OUTBOX": str(tmp_path / "outbox"),
        "HEYGEMD_PATHS__MODELS": str(models),
    }
    proc = run(heygemd_bin, "check", env=env)
    lines = proc.stdout.splitlines()
    engine = next(i for i, line in enumerate(lines) if "  engine:" in line)
    assert lines[engine].startswith("FAIL") and "wav2lip_gan.pth" in lines[engine]
    assert lines[engine + 1].strip().startswith("fix:")
    assert proc.returncode == 1


def test_invalid_configuration_stops_at_start_naming_the_setting(tmp_path: Path, heygemd_bin: Path) -> None:
    cfg = tmp_path / "heygemd.toml"
    cfg.write_text("[intake]\nsettle_seconds = -3\n", encoding="utf-8")
    proc = run(heygemd_bin, "--config", str(cfg), "run")
    assert proc.returncode == 2
    assert "intake.settle_seconds" in proc.stderr and str(cfg) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_status_table_and_detail(tmp_path: Path, heygemd_bin: Path) -> None:
    outbox = tmp_path / "outbox"
    status = JobStatus(
        job_id="lesson-01",
        job_name="lesson-01",
        state="partial",
        progress=1.0,
        audio=AudioStatus(file="lesson.wav", duration_s=12.5),
        videos=[
            VideoStatus(input="anna.mp4", state="done", progress=1.0, output="anna.mp4"),
            VideoStatus(
                input="bob.mp4",
                state="failed",
                progress=1.0,
                error=ErrorStatus(
                    code="NO_FACE",
                    message="bob.mp4: a face was found in 0% of the frames",
                    hint="Use a video where the face is visible.",
                ),
            ),
        ],
    )
    (outbox / "lesson-01").mkdir(parents=True)
    write_status(outbox / "lesson-01" / "status.json", status)
    env = {"HEYGEMD_PATHS__OUTBOX": str(outbox)}
    table = run(heygemd_bin, "status", env=env)
    assert table.returncode == 0
    row = next(line for line in table.stdout.splitlines() if line.startswith("lesson-01"))
    assert "partial" in row and "1/1/2" in row
    detail = run(heygemd_bin, "status", "lesson-01", env=env)
    assert "NO_FACE" in detail.stdout and "Use a video where the face is visible." in detail.stdout


def test_status_of_an_unknown_job_says_so_and_exits_1(tmp_path: Path, heygemd_bin: Path) -> None:
    env = {"HEYGEMD_PATHS__OUTBOX": str(tmp_path / "outbox"), "HEYGEMD_PATHS__INBOX": str(tmp_path / "inbox")}
    proc = run(heygemd_bin, "status", "nope", env=env)
    assert proc.returncode == 1
    assert "[NO_SUCH_JOB] no job 'nope'" in proc.stderr and "heygemd status" in proc.stderr


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback(tmp_path: Path, heygemd_bin: Path) -> None:
    """`heygemd status | head -1`, `heygemd --help | head -1`: the reader leaves before heygemd has written all."""
    outbox = tmp_path / "outbox"
    for n in range(400):  # a table longer than the pipe's buffer, so a write meets the closed pipe
        (outbox / f"job-{n:03d}").mkdir(parents=True)
        write_status(outbox / f"job-{n:03d}" / "status.json", JobStatus(job_id=f"job-{n:03d}", job_name="x" * 120))
    env = {**os.environ, "HEYGEMD_LOGGING__FORMAT": "json", "HEYGEMD_PATHS__OUTBOX": str(outbox)}
    for args in (["status"], ["--help"]):
        shell = subprocess.run(
            f'"{heygemd_bin}" {" ".join(args)} | head -1',
            shell=True,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert shell.returncode == 0 and shell.stdout.count("\n") == 1
        assert "Traceback" not in shell.stderr and "BrokenPipeError" not in shell.stderr, shell.stderr


def test_help_names_the_configuration_file_in_use(tmp_path: Path, heygemd_bin: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text("[video]\ncrf = 20\n")
    proc = run(heygemd_bin, "--help", env={"HEYGEMD_CONFIG": str(config), "COLUMNS": "1000"})  # no line wrapping
    assert proc.returncode == 0 and f"now: {config})" in proc.stdout


ESC = "\x1b"


def test_status_escapes_control_characters_in_every_field(tmp_path: Path, heygemd_bin: Path) -> None:
    outbox, state = tmp_path / "outbox", tmp_path / "inbox" / ".heygemd"
    job = f"les{ESC}]0;owned{chr(7)}son"  # a folder name may hold any byte but / and NUL
    status = JobStatus(
        job_id=job,
        job_name=job,
        state="failed",
        audio=AudioStatus(file=f"voice{ESC}[2J.wav"),
        videos=[
            VideoStatus(
                input=f"bob\n{ESC}[31m.mp4",
                state="failed",
                error=ErrorStatus(code="NO_FACE", message=f"bob\r{ESC}[1A.mp4: no face", hint="tab\there"),
            )
        ],
    )
    (outbox / job).mkdir(parents=True)
    write_status(outbox / job / "status.json", status)
    write_waiting(state, {f"wait{ESC}[5m": [f"x{ESC}[8m.mp4: 0 bytes so far"]})
    (tmp_path / "inbox" / f"wait{ESC}[5m").mkdir(parents=True)
    (tmp_path / "inbox" / f"loose{ESC}[1m.txt").write_text("a file outside any job folder")
    env = {"HEYGEMD_PATHS__OUTBOX": str(outbox), "HEYGEMD_PATHS__INBOX": str(tmp_path / "inbox")}
    table = run(heygemd_bin, "status", env=env)
    detail = run(heygemd_bin, "status", job, env=env)
    for proc in (table, detail):
        assert proc.returncode == 0, proc.stderr
        assert not any(ch in proc.stdout for ch in (ESC, "\r", "\t", chr(7))), repr(proc.stdout)
    lines = [line for line in table.stdout.splitlines() if line]
    assert len(lines) == 7, table.stdout  # 3 headers, 3 rows, who renders
    assert "les\\x1b]0;owned\\x07son" in table.stdout and "wait\\x1b[5m/" in table.stdout
    assert "loose\\x1b[1m.txt" in table.stdout
    assert "bob\\n\\x1b[31m.mp4" in detail.stdout and "bob\\r\\x1b[1A.mp4: no face" in detail.stdout
    assert "tab\\there" in detail.stdout


def test_batch_summary_and_check_escape_control_characters(tmp_path: Path, heygemd_bin: Path) -> None:
    failed = VideoOutcome(
        Path(f"a{ESC}[2J.mp4"), tmp_path / "a.mp4", None, ErrorInfo("NO_FACE", f"a\n{ESC}[2J.mp4: no face", "")
    )
    text = summary([failed])
    assert ESC not in text and len(text.splitlines()) == 2 and "a\\x1b[2J.mp4: [NO_FACE] a\\n" in text
    env = {
        "HEYGEMD_PATHS__INBOX": str(tmp_path / f"in{ESC}[31mbox"),
        "HEYGEMD_PATHS__OUTBOX": str(tmp_path / "outbox"),
        "HEYGEMD_PATHS__MODELS": str(tmp_path / "models"),
    }
    check = run(heygemd_bin, "check", env=env)
    assert ESC not in check.stdout and "in\\x1b[31mbox" in check.stdout, check.stdout


def test_single_with_a_silent_video_as_audio_names_the_file(tmp_path: Path, heygemd_bin: Path) -> None:
    silent = presenter_video(tmp_path / "silent clip.mp4", seconds=1.0, size=(320, 180))
    proc = run(
        heygemd_bin,
        "single",
        "--audio",
        str(silent),
        "--video",
        str(silent),
        "--out",
        str(tmp_path / "out.mp4"),
        env={"HEYGEMD_PATHS__INBOX": str(tmp_path / "inbox")},
    )
    assert proc.returncode == 1
    assert "[NO_AUDIO_STREAM]" in proc.stderr and "silent clip.mp4" in proc.stderr
    assert "what to do:" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out.mp4").exists()


def _once_in_background(heygemd_bin: Path, cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(heygemd_bin), "--config", str(cfg), "once"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HEYGEMD_LOGGING__FORMAT": "json"},
        )


def _events(log: Path) -> list[dict]:
    found = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return found


def test_once_does_not_take_a_fresh_copy_that_kept_old_mtimes(tmp_path: Path, heygemd_bin: Path) -> None:
    """`cp -p`, rsync -a, Explorer and Finder keep the source's mtimes: only the ctime says the copy is new. `once`
    says the job settles and when it is taken, and waits for it (here, stopped meanwhile: nothing was taken)."""
    import signal

    from tests.daemon.daemon_process import wait_until

    job = tmp_path / "inbox" / "copied with old dates"
    job.mkdir(parents=True)
    for name in ("voice.wav", "a.mp4"):
        (job / name).write_bytes(b"still arriving")
        os.utime(job / name, (0, 0))  # 1970, as an archive copy would keep
    cfg = tmp_path / "heygemd.toml"
    cfg.write_text(
        '[paths]\ninbox = "inbox"\noutbox = "outbox"\nmodels = "models"\n'
        '[intake]\nsettle_seconds = 600\n[engine]\nname = "mouthwarp"\n',
        encoding="utf-8",
    )
    log = tmp_path / "once.log"
    proc = _once_in_background(heygemd_bin, cfg, log)
    try:
        settling = wait_until(
            lambda: next((e for e in _events(log) if e.get("event") == "job.settling"), None), 120, "job.settling"
        )
        assert settling["job_name"] == "copied with old dates" and 590 <= settling["taken_in_s"] <= 600, settling
        assert "create copied with old dates/.ready to have it taken at once" in settling["hint"]
        state = tmp_path / "inbox" / ".heygemd"
        waiting = json.loads((state / "waiting.json").read_text(encoding="utf-8"))
        assert list(waiting["settling"]) == ["copied with old dates"]
        listed = run(heygemd_bin, "--config", str(cfg), "status")
        row = next(line for line in listed.stdout.splitlines() if line.startswith("copied with old dates/"))
        assert re.search(r"settling: taken in (59\d|600) s, or at once with \.ready$", row), row
        assert "rendering: heygemd once on " in listed.stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (job / "a.mp4").is_file(), "a job copied a moment ago was taken before settle_seconds passed"
    assert not (tmp_path / "outbox" / "copied with old dates").exists()
    assert not list((state / "renderers").iterdir()), "a renderer's record goes with it"
    assert (
        "Nothing is rendering: jobs wait until `heygemd run` starts"
        in run(heygemd_bin, "--config", str(cfg), "status").stdout
    )
    detail = run(heygemd_bin, "--config", str(cfg), "status", "copied with old dates").stdout
    assert detail.startswith("copied with old dates/ is still in the inbox, settling: taken in ")
    assert "Nothing is rendering" in detail


def test_once_waits_for_a_settling_job_then_takes_it(tmp_path: Path, heygemd_bin: Path) -> None:
    job = tmp_path / "inbox" / "lesson"
    job.mkdir(parents=True)
    for name in ("voice.wav", "a.mp4"):
        (job / name).write_bytes(b"not media at all")
    (tmp_path / "inbox" / "notes.txt").write_text("dropped next to the job folders")
    cfg = tmp_path / "heygemd.toml"
    cfg.write_text(
        '[paths]\ninbox = "inbox"\noutbox = "outbox"\nmodels = "models"\n'
        # longer than `once` takes to start and warm its engine on a busy machine (about 5 s), or the job has
        # settled before the first look and is taken at once
        '[intake]\nsettle_seconds = 15\n[engine]\nname = "mouthwarp"\n',
        encoding="utf-8",
    )
    once = run(heygemd_bin, "--config", str(cfg), "once")
    assert once.returncode == 0, once.stderr[-3000:]
    events = [json.loads(line) for line in once.stderr.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert names.index("job.settling") < names.index("job.claimed"), names
    loose = [e for e in events if e["event"] == "inbox.loose_file"]
    assert len(loose) == 1 and loose[0]["file"] == "notes.txt" and "put it in a job folder" in loose[0]["hint"]
    status = json.loads((tmp_path / "outbox" / "lesson" / "status.json").read_text(encoding="utf-8"))
    assert status["state"] == "failed"  # taken once settled: its files fail with their own errors
    listed = run(heygemd_bin, "--config", str(cfg), "status").stdout
    assert re.search(r"^notes\.txt +not in a job folder: put it in one of its own \(inbox/<job>/\)$", listed, re.M)


def test_batch_gives_inputs_with_the_same_stem_distinct_outputs(tmp_path: Path, heygemd_bin: Path) -> None:
    import cv2

    from heygemd.demo import portrait, speech_wav

    videos = tmp_path / "videos"
    presenter_video(videos / "anna.mp4", seconds=0.6, size=(320, 180))
    cv2.imwrite(str(videos / "anna.png"), portrait()[0:360, 60:420])
    audio = speech_wav(tmp_path / "hi.wav", sentences=("Hi.",), pause_seconds=0.1, lead_seconds=0.1)
    proc = run(
        heygemd_bin,
        "batch",
        "--audio",
        str(audio),
        "--videos",
        str(videos),
        "--out",
        str(tmp_path / "out"),
        "--engine",
        "mouthwarp",
        env={"HEYGEMD_PATHS__INBOX": str(tmp_path / "inbox")},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mp4")) == ["anna-2.mp4", "anna.mp4"]


def test_single_into_an_unusable_output_folder_fails_with_a_message(tmp_path: Path, heygemd_bin: Path) -> None:
    from heygemd.demo import speech_wav

    blocker = tmp_path / "out"
    blocker.write_text("a file where the output folder should be")
    presenter = presenter_video(tmp_path / "anna.mp4", seconds=0.5, size=(320, 180))
    audio = speech_wav(tmp_path / "hi.wav", sentences=("Hi.",), pause_seconds=0.1, lead_seconds=0.1)
    proc = run(
        heygemd_bin,
        "single",
        "--audio",
        str(audio),
        "--video",
        str(presenter),
        "--out",
        str(blocker / "anna.mp4"),
        env={"HEYGEMD_PATHS__INBOX": str(tmp_path / "inbox")},
    )
    assert proc.returncode == 1
    assert "FAILED  anna.mp4: [ENCODE_FAILED]" in proc.stdout and "cannot create the output folder" in proc.stdout
    assert "0 of 1 videos done" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr


def test_cancel_a_waiting_job_then_status_shows_it_cancelled(tmp_path: Path, heygemd_bin: Path) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    (inbox / "lesson-02").mkdir(parents=True)
    for name in ("lesson.wav", "anna.mp4"):
        (inbox / "lesson-02" / name).write_bytes(b"x")
    env = {"HEYGEMD_PATHS__INBOX": str(inbox), "HEYGEMD_PATHS__OUTBOX": str(outbox)}
    cancelled = run(heygemd_bin, "cancel", "lesson-02", env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "lesson-02: cancelled" in cancelled.stdout
    row = next(line for line in run(heygemd_bin, "status", env=env).stdout.splitlines() if line.startswith("lesson-02"))
    assert "cancelled" in row and "0/0/1" in row
    detail = run(heygemd_bin, "status", "lesson-02", env=env).stdout
    assert "state     cancelled" in detail and "cancelled 20" in detail and "by cli " in detail
    assert next(line for line in detail.splitlines() if line.startswith("anna.mp4")).split()[1] == "cancelled"
    again = run(heygemd_bin, "cancel", "lesson-02", env=env)
    assert again.returncode == 1
    assert "[ALREADY_DONE] job 'lesson-02' is already cancelled" in again.stderr and "what to do:" in again.stderr
    missing = run(heygemd_bin, "cancel", "lesson-99", env=env)
    assert missing.returncode == 1 and "[NO_SUCH_JOB]" in missing.stderr


def test_retry_and_delete_a_finished_job(tmp_path: Path, heygemd_bin: Path) -> None:
    """`heygemd retry` queues a failed job's videos again as <job>-retry from its archived inputs; `heygemd delete`
    removes a finished job's outbox folder and archived inputs; neither touches a job that has not finished."""
    import wave

    import numpy as np

    job = tmp_path / "inbox" / "lesson"
    job.mkdir(parents=True)
    tone = (np.sin(np.arange(16000) * 2 * np.pi * 220 / 16000) * 8000).astype("<i2")
    with wave.open(str(job / "lesson.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(tone.tobytes())
    for name in ("anna.mp4", "bob.mp4"):
        (job / name).write_bytes(b"not a video " + name.encode())
    (job / ".ready").touch()
    cfg = tmp_path / "heygemd.toml"
    cfg.write_text(
        '[paths]\ninbox = "inbox"\noutbox = "outbox"\nmodels = "models"\n[engine]\nname = "mouthwarp"\n',
        encoding="utf-8",
    )
    once = run(heygemd_bin, "--config", str(cfg), "once")
    assert once.returncode == 0, once.stderr
    status = json.loads((tmp_path / "outbox" / "lesson" / "status.json").read_text(encoding="utf-8"))
    assert status["state"] == "failed" and [v["state"] for v in status["videos"]] == ["failed", "failed"]
    archived = list((tmp_path / "inbox" / ".heygemd" / "archive").glob("*/lesson"))
    assert len(archived) == 1

    retried = run(heygemd_bin, "--config", str(cfg), "retry", "lesson")
    assert retried.returncode == 0, retried.stderr
    assert "lesson-retry" in retried.stdout
    again = tmp_path / "inbox" / "lesson-retry"
    assert sorted(p.name for p in again.iterdir()) == [".ready", "anna.mp4", "bob.mp4", "lesson.wav"]
    assert (again / "bob.mp4").read_bytes() == b"not a video bob.mp4"
    busy = run(heygemd_bin, "--config", str(cfg), "retry", "lesson-retry")
    assert busy.returncode == 1 and "[JOB_BUSY] job 'lesson-retry' is queued" in busy.stderr, busy.stderr
    assert "what to do:" in busy.stderr
    assert run(heygemd_bin, "--config", str(cfg), "delete", "lesson-retry").returncode == 1
    assert again.is_dir(), "a queued job is not deleted"

    deleted = run(heygemd_bin, "--config", str(cfg), "delete", "lesson")
    assert deleted.returncode == 0, deleted.stderr
    assert "lesson: deleted" in deleted.stdout
    assert not (tmp_path / "outbox" / "lesson").exists() and not archived[0].exists()
    assert [p.name for p in (tmp_path / "outbox").iterdir()] == [".heygemd-trash"]
    for command in ("delete", "retry"):
        gone = run(heygemd_bin, "--config", str(cfg), command, "lesson")
        assert gone.returncode == 1 and "[NO_SUCH_JOB]" in gone.stderr, gone.stderr


def test_single_follows_links_named_on_the_command_line(tmp_path: Path, heygemd_bin: Path) -> None:
    """Links in a job folder are refused (a job's files come from anyone on the share); the files an administrator
    names on the command line may be links."""
    from heygemd.demo import speech_wav

    presenter = presenter_video(tmp_path / "media" / "anna.mp4", seconds=0.5, size=(320, 180))
    audio = speech_wav(tmp_path / "media" / "hi.wav", sentences=("Hi.",), pause_seconds=0.1, lead_seconds=0.1)
    (tmp_path / "video.mp4").symlink_to(presenter)
    (tmp_path / "voice.wav").symlink_to(audio)
    proc = run(
        heygemd_bin,
        *("single", "--audio", str(tmp_path / "voice.wav"), "--video", str(tmp_path / "video.mp4")),
        *("--out", str(tmp_path / "out.mp4"), "--engine", "mouthwarp"),
        env={"HEYGEMD_PATHS__INBOX": str(tmp_path / "inbox")},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "out.mp4").is_file()


def test_a_job_with_a_bad_job_toml_is_retried_from_the_cli_once_it_is_fixed(
    tmp_path: Path,
    heygemd_bin: Path,
    media: Media,  # noqa: F811
) -> None:
    """A bad job.toml fails the job as a whole: its video is not started, status names the archive folder where
    its files are kept; `heygemd retry` with the file fixed there renders it (with --engine over a still broken
    job.toml it refuses, naming the file as the user knows it, and queues nothing)."""
    import re
    import shutil

    job = tmp_path / "inbox" / "lesson"
    job.mkdir(parents=True)
    shutil.copy(media.speech, job / "voice.wav")
    shutil.copy(media.face_a, job / "anna.mp4")
    (job / "job.toml").write_text("crf = 99\n")
    (job / ".ready").touch()
    cfg = tmp_path / "heygemd.toml"
    cfg.write_text(
        '[paths]\ninbox = "inbox"\noutbox = "outbox"\nmodels = "models"\n[engine]\nname = "mouthwarp"\n',
        encoding="utf-8",
    )
    once = run(heygemd_bin, "--config", str(cfg), "once", timeout=180)
    assert once.returncode == 0, once.stderr[-3000:]
    status = json.loads((tmp_path / "outbox" / "lesson" / "status.json").read_text(encoding="utf-8"))
    assert status["state"] == "failed" and status["error"]["code"] == "BAD_JOB"
    assert status["error"]["message"].startswith("lesson/job.toml: field 'crf': ")
    assert [(v["input"], v["state"]) for v in status["videos"]] == [("anna.mp4", "not_started")]
    detail = run(heygemd_bin, "--config", str(cfg), "status", "lesson").stdout
    assert "anna.mp4  not_started" in detail
    kept = re.search(r"kept in (inbox/\.heygemd/archive/[0-9-]+/lesson/input/)", detail)
    assert kept, detail
    archived = tmp_path / kept.group(1)
    assert (archived / "job.toml").read_text() == "crf = 99\n"

    refused = run(heygemd_bin, "--config", str(cfg), "retry", "lesson", "--engine", "mouthwarp")
    assert refused.returncode == 1 and "[BAD_JOB] lesson/job.toml: field 'crf'" in refused.stderr, refused.stderr
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == [".heygemd"]

    (archived / "job.toml").write_text("crf = 30\n")
    retried = run(heygemd_bin, "--config", str(cfg), "retry", "lesson")
    assert retried.returncode == 0, retried.stderr
    assert "lesson: queued again as lesson-retry" in retried.stdout
    once = run(heygemd_bin, "--config", str(cfg), "once", timeout=180)
    assert once.returncode == 0, once.stderr[-3000:]
    done = json.loads((tmp_path / "outbox" / "lesson-retry" / "status.json").read_text(encoding="utf-8"))
    assert done["state"] == "done" and [v["state"] for v in done["videos"]] == ["done"], done


def test_presenters_add_list_remove_and_batch_renders_them(tmp_path: Path, heygemd_bin: Path) -> None:
    from heygemd.demo import speech_wav

    env = {
        "HEYGEMD_PATHS__INBOX": str(tmp_path / "inbox"),
        "HEYGEMD_PATHS__PRESENTERS": str(tmp_path / "presenters"),
        "HEYGEMD_ENGINE__NAME": "mouthwarp",
        "HEYGEMD_VIDEO__PRESET": "ultrafast",
    }
    proc = run(heygemd_bin, "presenters", env=env)
    assert proc.returncode == 0 and "the presenter library is empty" in proc.stdout
    video = presenter_video(tmp_path / "take 3.mp4", seconds=0.6, size=(320, 180))
    proc = run(heygemd_bin, "presenters", "add", str(video), "--name", "anna", "--face", "left", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "anna: added to the library (anna.mp4)" in proc.stdout
    assert "Nothing is rendering: jobs wait until `heygemd run` starts" in proc.stdout, "who would prepare it?"
    assert (tmp_path / "presenters" / "anna.toml").read_text() == 'face = "left"\n'
    assert video.is_file()  # copied, never moved
    proc = run(heygemd_bin, "presenters", "add", str(video), "--name", "ANNA", env=env)
    assert proc.returncode == 1 and "[PRESENTER_EXISTS]" in proc.stderr and "what to do:" in proc.stderr
    (tmp_path / "presenters" / "bob.mp4").symlink_to(video)

    table = run(heygemd_bin, "presenters", env=env).stdout.splitlines()
    assert table[0].split() == ["NAME", "STATE", "DURATION", "SIZE", "FACE", "ENGINES", "NOTE"]
    assert table[1].split()[:2] == ["anna", "preparing"] and "the daemon has not looked at it yet" in table[1]
    assert table[2].split()[:2] == ["bob", "failed"] and "[UNSAFE_PATH] presenters/bob.mp4" in table[2]
    assert any(line.startswith("bob: what to do: ") and len(line) > 30 for line in table), table  # the error's hint
    assert "Nothing is rendering" in table[-1], table  # anna waits for a daemon that is not there

    audio = speech_wav(tmp_path / "hi.wav", sentences=("Hi.",), pause_seconds=0.1, lead_seconds=0.1)
    batch = ["batch", "--audio", str(audio), "--presenters", "anna,bob,zoe", "--out", str(tmp_path / "out")]
    proc = run(heygemd_bin, *batch, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # two of three fail, each with its reason
    assert "ok      anna.mp4 -> " in proc.stdout and "[UNSAFE_PATH]" in proc.stdout
    assert "FAILED  zoe: [NO_SUCH_PRESENTER] no presenter 'zoe' in the library presenters/" in proc.stdout
    assert "1 of 3 videos done, 2 failed" in proc.stdout
    assert [p.name for p in (tmp_path / "out").glob("*.mp4")] == ["anna.mp4"]
    assert run(heygemd_bin, "batch", "--audio", str(audio), "--out", str(tmp_path / "x"), env=env).returncode == 2

    proc = run(heygemd_bin, "presenters", "remove", "anna", env=env)
    assert proc.returncode == 0 and sorted(os.listdir(tmp_path / "presenters")) == ["bob.mp4"]
    proc = run(heygemd_bin, "presenters", "remove", "anna", env=env)
    assert proc.returncode == 1 and "[NO_SUCH_PRESENTER]" in proc.stderr


def test_status_of_a_job_says_which_videos_are_library_presenters_and_what_was_cached() -> None:
    from heygemd.status_view import format_status_detail

    status = JobStatus(
        job_id="lesson",
        job_name="lesson",
        state="done",
        videos=[
            VideoStatus(input="anna.mp4", state="done", presenter="anna", cached={"faces": True, "presenter": True}),
            VideoStatus(input="own.mp4", state="done", cached={"faces": False}),
        ],
    )
    rows = format_status_detail(status).splitlines()
    header = next(line for line in rows if line.startswith("VIDEO"))
    assert header.split()[-2:] == ["PRESENTER", "CACHED"]
    assert next(line for line in rows if line.startswith("anna.mp4")).split()[-2:] == ["anna", "face,prep"]
    assert next(line for line in rows if line.startswith("own.mp4")).split()[-2:] == ["-", "-"]
    document = json.loads(status.model_dump_json())
    assert [(v["face_track"], v["engine_prep"]) for v in document["videos"]] == [
        ("cached", "cached"),
        ("computed", None),
    ]
