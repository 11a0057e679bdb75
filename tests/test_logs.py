"""heygemd.logs: sink selection, the journald native protocol, JSON and console sinks, per-job job.log."""

from __future__ import annotations

import errno
import importlib.util
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import structlog

from heygemd.logs import (
    MESSAGE_IDS,
    JournaldLogger,
    configure_logging,
    connected_to_journal,
    job_log,
    journal_field_name,
    select_sink,
)
from heygemd.settings import LoggingSettings


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Each test starts and ends with structlog's defaults and no bound context."""
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def _configure(fmt: str, level: str = "debug") -> io.StringIO:
    stream = io.StringIO()
    assert configure_logging(LoggingSettings(format=fmt, level=level), stream=stream) == fmt
    return stream


# --- the native journal protocol ------------------------------------------------------------------------


def parse_native(datagram: bytes) -> dict[str, str]:
    """Parse one native-protocol datagram: ``KEY=value\\n``, or ``KEY\\n<u64 LE size><value>\\n``."""
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(datagram):
        end = datagram.index(b"\n", pos)
        line = datagram[pos:end]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            pos = end + 1
        else:
            key = line
            size = int.from_bytes(datagram[end + 1 : end + 9], "little")
            value = datagram[end + 9 : end + 9 + size]
            assert datagram[end + 9 + size : end + 10 + size] == b"\n", "binary field not newline-terminated"
            pos = end + 10 + size
        assert key.decode() not in fields, f"duplicate field {key!r}"
        fields[key.decode()] = value.decode()
    return fields


def test_parse_native_reads_both_forms() -> None:
    """The test's own parser understands the plain and the length-prefixed (multi-line) field forms."""
    data = b"A=1\nMESSAGE\n" + (7).to_bytes(8, "little") + b"x\ny\nz=w\nB=two=2\n"
    assert parse_native(data) == {"A": "1", "MESSAGE": "x\ny\nz=w", "B": "two=2"}


_CHILD = r"""
import sys
from pathlib import Path
import structlog
from heygemd.logs import configure_logging, job_log
from heygemd.settings import LoggingSettings

print(configure_logging(LoggingSettings(format=sys.argv[1], level="debug")), flush=True)
log = structlog.get_logger()
with structlog.contextvars.bound_contextvars(job_id="lesson-01"), job_log(Path(sys.argv[2])):
    log.info("video.done", video="a.mp4", seconds=3.2, **{"frame-count": 7})
    log.debug("frames.read", note="line one\nline two")
    try:
        raise ValueError("bad frame")
    except ValueError:
        log.exception("video.failed", video="b.mp4")
log.warning("disk.low", free_gb=1.5)
"""


def _namespace_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    if importlib.util.find_spec("systemd") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


needs_namespace = pytest.mark.skipif(
    not _namespace_works(),
    reason="needs systemd-python and `unshare --user --mount` (to redirect /run/systemd/journal/socket)",
)


@pytest.fixture(name="fake_run")
def _fake_run() -> Iterator[Path]:
    """A short directory that a child process sees as /run (AF_UNIX paths are limited to 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="hgj-") as tmp:
        (Path(tmp) / "systemd" / "journal").mkdir(parents=True)
        yield Path(tmp)


def _run_child(fake_run: Path, fmt: str, job_log_path: Path, stderr: int | io.IOBase, env: dict[str, str]):
    """Run _CHILD in a new user+mount namespace where ``fake_run`` is mounted over /run.

    libsystemd always sends to /run/systemd/journal/socket (no override exists), so this is how the real
    sender is made to talk to the test's socket.
    """
    command = [
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "sh",
        "-c",
        'mount --bind "$0" /run && exec "$@"',
        str(fake_run),
        sys.executable,
        "-c",
        _CHILD,
        fmt,
        str(job_log_path),
    ]
    return subprocess.run(command, stdout=subprocess.PIPE, stderr=stderr, env=env, text=True, timeout=60)


@needs_namespace
def test_journald_native_fields(fake_run: Path, tmp_path: Path) -> None:
    """Under systemd (stderr is $JOURNAL_STREAM), events reach the journal socket as native structured fields."""
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(fake_run / "systemd" / "journal" / "socket"))
    receiver.settimeout(10)
    stderr_path = tmp_path / "stderr.txt"
    with receiver, stderr_path.open("w") as stderr:
        info = os.fstat(stderr.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        child = _run_child(fake_run, "auto", tmp_path / "out" / "job.log", stderr, env)
        assert child.returncode == 0, stderr_path.read_text()
        entries = [parse_native(receiver.recv(1 << 20)) for _ in range(4)]

    assert child.stdout.strip() == "journald"
    done, frames, failed, disk = entries
    assert done["MESSAGE"] == "video.done video=a.mp4 seconds=3.2 frame-count=7 job_id=lesson-01"
    assert done["EVENT"] == "video.done"
    assert done["JOB_ID"] == "lesson-01"
    assert done["VIDEO"] == "a.mp4"
    assert done["SECONDS"] == "3.2"
    assert done["FRAME_COUNT"] == "7"
    assert done["PRIORITY"] == "6"
    assert done["SYSLOG_IDENTIFIER"] == "heygemd"
    assert done["MESSAGE_ID"] == MESSAGE_IDS["video.done"].hex
    assert done["CODE_FUNC"] == "<module>" and done["CODE_LINE"] == "11"
    assert int(done["TID"]) > 0
    assert frames["PRIORITY"] == "7"
    assert frames["NOTE"] == "line one\nline two"  # sent in the length-prefixed form
    assert "MESSAGE_ID" not in frames
    assert failed["PRIORITY"] == "3"
    assert failed["MESSAGE_ID"] == MESSAGE_IDS["video.failed"].hex
    assert failed["MESSAGE"].startswith("video.failed video=b.mp4 job_id=lesson-01\nTraceback")
    assert failed["MESSAGE"].rstrip().endswith("ValueError: bad frame")
    assert disk["PRIORITY"] == "4" and disk["FREE_GB"] == "1.5" and "JOB_ID" not in disk
    assert not any(name != name.upper() for entry in entries for name in entry)
    assert stderr_path.read_text() == ""  # nothing went to the stderr stream
    lines = (tmp_path / "out" / "job.log").read_text().splitlines()
    assert [line.split()[2] for line in lines if not line.startswith(" ")] == [
        "video.done",
        "frames.read",
        "video.failed",
    ]


@needs_namespace
def test_journald_without_socket_falls_back_to_json(fake_run: Path, tmp_path: Path) -> None:
    """An explicit journald format without a journal socket logs JSON to stderr, first saying why."""
    child = _run_child(fake_run, "journald", tmp_path / "job.log", subprocess.PIPE, dict(os.environ))
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "json"
    records = [json.loads(line) for line in child.stderr.splitlines()]
    assert records[0]["event"] == "logging.journald_unavailable"
    assert "/run/systemd/journal/socket" in records[0]["reason"]
    assert [r["event"] for r in records[1:]] == ["video.done", "frames.read", "video.failed", "disk.low"]


def test_journald_logger_keeps_entry_when_journal_refuses() -> None:
    """When sending to the journal fails, the entry goes to the fallback stream as JSON with the error."""

    def refuse(*lines: str) -> None:
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")

    fallback = io.StringIO()
    JournaldLogger(refuse, fallback=fallback).info(MESSAGE="video.done", JOB_ID="lesson-01")
    record = json.loads(fallback.getvalue())
    assert record["JOB_ID"] == "lesson-01"
    assert "Connection refused" in record["JOURNAL_ERROR"]


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("job_id", "JOB_ID"),
        ("video", "VIDEO"),
        ("frame-count", "FRAME_COUNT"),
        ("_private", "PRIVATE"),
        ("3d", "F_3D"),
        ("x" * 80, "X" * 64),
    ],
)
def test_journal_field_name(key: str, field: str) -> None:
    """Event keys become valid journal field names (journald drops lower-case and '_'-prefixed ones)."""
    assert journal_field_name(key) == field


# --- sink selection ---------------------------------------------------------------------------------------


def test_auto_selects_journald_when_stream_is_journal_stream(tmp_path: Path) -> None:
    """$JOURNAL_STREAM naming the stream's device:inode means the journal."""
    with (tmp_path / "stderr").open("w") as stream:
        info = os.fstat(stream.fileno())
        assert select_sink("auto", stream, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}) == "journald"
        assert connected_to_journal(stream, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"})


@pytest.mark.parametrize("value", [None, "", "garbage", "1:2"])
def test_auto_selects_json_when_stream_is_not_the_journal(tmp_path: Path, value: str | None) -> None:
    """An unset, malformed or inherited (other inode) $JOURNAL_STREAM on a non-terminal means JSON."""
    environ = {} if value is None else {"JOURNAL_STREAM": value}
    with (tmp_path / "stderr").open("w") as stream:
        assert select_sink("auto", stream, environ) == "json"


def test_auto_selects_console_on_a_terminal() -> None:
    """A TTY gets the console renderer, even with an inherited $JOURNAL_STREAM."""
    leader, follower = os.openpty()
    with os.fdopen(leader, "rb"), os.fdopen(follower, "w") as terminal:
        assert select_sink("auto", terminal, {"JOURNAL_STREAM": "1:2"}) == "console"


def test_stream_without_file_descriptor_is_not_the_journal() -> None:
    """A StringIO has no fd, so it cannot be the journal stream."""
    assert not connected_to_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})
    assert select_sink("auto", io.StringIO(), {}) == "json"


# --- JSON and console sinks ---------------------------------------------------------------------------------


def test_a_librarys_warning_is_a_json_event_not_a_plain_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """watchdog, apprise and others warn through Python's warnings: in the journal or the JSON lines that must be
    one more event, or a reader that parses every line breaks."""
    import warnings

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after the test
    stream = _configure("json")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("Callback with id 'x' already exists", RuntimeWarning, stacklevel=1)
    (line,) = stream.getvalue().splitlines()
    event = json.loads(line)
    assert (event["event"], event["level"], event["category"]) == ("python.warning", "warning", "RuntimeWarning")
    assert event["warning"] == "Callback with id 'x' already exists" and "test_logs.py:" in event["where"]


def test_json_sink_writes_parseable_lines_with_bound_keys() -> None:
    """Each event is one JSON object with the bound and the call's keys, level and an ISO timestamp."""
    stream = _configure("json")
    log = structlog.get_logger()
    with structlog.contextvars.bound_contextvars(job_id="lesson-01"):
        log.info("video.done", video="a.mp4", seconds=3.2, output=Path("/out/a.mp4"))
        try:
            raise ValueError("bad frame")
        except ValueError:
            log.exception("video.failed", video="b.mp4")
    done, failed = (json.loads(line) for line in stream.getvalue().splitlines())
    assert done["event"] == "video.done" and done["level"] == "info"
    assert (done["job_id"], done["video"], done["seconds"], done["output"]) == ("lesson-01", "a.mp4", 3.2, "/out/a.mp4")
    assert datetime.fromisoformat(done["timestamp"]).tzinfo is not None
    assert failed["level"] == "error" and "ValueError: bad frame" in failed["exception"]


def test_level_filters_lower_events() -> None:
    """Events below the configured level are not written."""
    stream = _configure("json", level="warning")
    structlog.get_logger().info("video.done")
    structlog.get_logger().warning("disk.low")
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["disk.low"]


def test_console_sink_is_readable_text() -> None:
    """The console sink writes a plain (no colour off a terminal) line with the event and key=value pairs."""
    stream = _configure("console")
    structlog.get_logger().info("video.done", job_id="lesson-01", video="a.mp4")
    text = stream.getvalue()
    assert "video.done" in text and "job_id=lesson-01" in text and "video=a.mp4" in text and "info" in text
    assert "\x1b[" not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


# --- job.log ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_job_log_holds_readable_lines_flushed_per_line(tmp_path: Path, fmt: str) -> None:
    """Inside job_log every event is appended to job.log and readable before the context ends."""
    main = _configure(fmt)
    path = tmp_path / "outbox" / "lesson-01" / "job.log"
    log = structlog.get_logger()
    with structlog.contextvars.bound_contextvars(job_id="lesson-01"), job_log(path):
        log.info("video.done", video="a.mp4", note="two words")
        assert path.read_text().endswith('video.done video=a.mp4 note="two words"\n')
        try:
            raise ValueError("bad frame")
        except ValueError:
            log.exception("video.failed", video="b.mp4")
    log.info("daemon.idle")
    lines = path.read_text().splitlines()
    stamp, level, event = lines[0].split()[:3]
    assert datetime.fromisoformat(stamp).tzinfo is not None and (level, event) == ("info", "video.done")
    assert lines[1].split()[1:4] == ["error", "video.failed", "video=b.mp4"]
    assert lines[-1] == "    ValueError: bad frame"
    assert "daemon.idle" not in path.read_text()
    assert "daemon.idle" in main.getvalue() and "video.done" in main.getvalue()


def test_job_log_writes_only_its_own_jobs_lines(tmp_path: Path) -> None:
    """Two jobs logging at the same time from two threads each get only their own events."""
    _configure("json")
    both_inside = threading.Barrier(2, timeout=10)
    both_logged = threading.Barrier(2, timeout=10)

    def run_job(job_id: str) -> None:
        log = structlog.get_logger()
        with structlog.contextvars.bound_contextvars(job_id=job_id), job_log(tmp_path / job_id / "job.log"):
            both_inside.wait()
            log.info("video.done", video=f"{job_id}.mp4")
            log.info("stray", job_id="someone-else")
            both_logged.wait()

    threads = [threading.Thread(target=run_job, args=(job,)) for job in ("job-a", "job-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for job in ("job-a", "job-b"):
        lines = (tmp_path / job / "job.log").read_text().splitlines()
        assert len(lines) == 1 and lines[0].endswith(f"video.done video={job}.mp4")


def test_job_log_follows_copied_context_into_threads(tmp_path: Path) -> None:
    """A helper thread run in a copy of the job's context writes to the job's log."""
    import contextvars

    _configure("json")
    path = tmp_path / "job.log"
    with structlog.contextvars.bound_contextvars(job_id="lesson-01"), job_log(path):
        context = contextvars.copy_context()
        helper = threading.Thread(target=context.run, args=(structlog.get_logger().info, "ffmpeg.stderr"))
        helper.start()
        helper.join()
    assert "ffmpeg.stderr" in path.read_text()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_job_log_write_failure_is_reported_once_and_not_raised() -> None:
    """A job.log that cannot be written (disk full) stops, says so once in the main log, and never raises."""
    main = _configure("json")
    log = structlog.get_logger()
    with job_log(Path("/dev/full")):
        log.info("video.done")
        log.info("video.done")
    events = [json.loads(line)["event"] for line in main.getvalue().splitlines()]
    assert events == ["job_log.write_failed", "video.done", "video.done"]
