"""The daemon's warm engines: one per engine a job asks for, memory released after jobs, unloaded when idle."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from heygemd.daemon.lifecycle import Sessions
from heygemd.errors import EngineNotInstalled
from heygemd.settings import EngineSettings, PathsSettings, Settings


def settings(tmp_path: Path, idle: float) -> Settings:
    return Settings(
        paths=PathsSettings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox", models=tmp_path / "models"),
        engine=EngineSettings(name="mouthwarp", idle_unload_seconds=idle),
    )


def test_default_engine_unloads_only_after_the_idle_time(tmp_path: Path) -> None:
    sessions = Sessions(settings(tmp_path, idle=60))
    session = sessions.get(None)
    assert session is sessions.default and session.engine.name == "mouthwarp" and session.loaded
    sessions.unload_if_idle()
    assert session.loaded  # used just now
    sessions.last_used = time.monotonic() - 61
    sessions.unload_if_idle()
    assert not session.loaded
    assert sessions.get("auto").engine.name == "mouthwarp"  # loads again on demand


def test_idle_time_counts_from_the_end_of_the_last_job(tmp_path: Path) -> None:
    sessions = Sessions(settings(tmp_path, idle=60))
    session = sessions.get(None)
    session.warm_up()
    sessions.last_used = time.monotonic() - 600  # the job started ten minutes ago...
    sessions.after_job()  # ...and ends now
    sessions.unload_if_idle()
    assert session.loaded


def test_idle_time_zero_keeps_the_engine(tmp_path: Path) -> None:
    sessions = Sessions(settings(tmp_path, idle=0))
    sessions.get(None).warm_up()
    sessions.last_used = time.monotonic() - 10_000
    sessions.unload_if_idle()
    assert sessions.default.loaded


def test_a_job_toml_engine_gets_its_own_session_dropped_after_the_job(tmp_path: Path) -> None:
    sessions = Sessions(settings(tmp_path, idle=60))
    assert sessions.get("mouthwarp") is sessions.default  # the same engine: no second model
    (tmp_path / "models").mkdir()
    with pytest.raises(EngineNotInstalled, match=r"engine 'wav2lip' is not installed: models/ lacks wav2lip_gan.pth"):
        sessions.get("wav2lip")
    (tmp_path / "models" / "wav2lip_gan.pth").write_bytes(b"loaded only by the first render")
    other = sessions.get("wav2lip")
    assert other is not sessions.default and other.engine_name == "wav2lip"
    assert sessions.get("wav2lip") is other
    sessions.after_job()
    assert sessions.get("wav2lip") is not other  # unloaded and forgotten after the job


class _EventStorm:
    """Stands in for InboxWatcher.wait: ``storm`` calls report a change, then the inbox is quiet."""

    def __init__(self, storm: int):
        self.storm = storm
        self.calls = 0

    def wait(self, timeout: float | None) -> bool:
        self.calls += 1
        return self.calls <= self.storm


class _Beats:
    def __init__(self) -> None:
        self.count = 0

    def beat(self, text: str = "") -> None:
        self.count += 1


def test_a_burst_of_inbox_events_ends_in_one_wake_up() -> None:
    from heygemd.daemon.lifecycle import StopFlag
    from heygemd.daemon.service import wait_for_change

    storm = _EventStorm(storm=50)  # a copy: many events in a row
    beats = _Beats()
    wait_for_change(storm, StopFlag(), beats, seconds=30)  # type: ignore[arg-type]
    assert storm.calls == 51  # drained the burst, returned at the first quiet spell: one rescan for 50 events
    assert beats.count >= 1  # the watchdog is fed while waiting


def test_a_stop_request_ends_the_wait() -> None:
    from heygemd.daemon.lifecycle import StopFlag
    from heygemd.daemon.service import wait_for_change

    stop = StopFlag()
    stop.event.set()
    quiet = _EventStorm(storm=0)
    wait_for_change(quiet, stop, _Beats(), seconds=3600)  # type: ignore[arg-type]
    assert quiet.calls == 0


STOP_SCRIPT = """
import sys, time
from pathlib import Path
from heygemd.daemon.lifecycle import StopFlag, until_stopped
from heygemd.daemon.systemd import Notifier

stop = StopFlag()
stop.install()
seen = Path(sys.argv[1])

def serve() -> int:
    print("serving", flush=True)
    while True:  # a job between two of its batches: it has not looked at the flag yet
        if stop() and not seen.exists():
            seen.write_text("the first signal is handled")
        time.sleep(0.01)

sys.exit(until_stopped(serve, Notifier("")))
"""


def test_the_second_stop_signal_stops_at_once_with_status_1(tmp_path: Path) -> None:
    """One rule for every process (``heygemd run``, ``once``, the intake, ``heygemd worker``): the first signal sets
    the flag, the second stops now (StopNow) and the process exits 1."""
    import os
    import signal
    import subprocess
    import sys

    from tests.daemon.daemon_process import wait_until

    seen = tmp_path / "seen"
    proc = subprocess.Popen(
        [sys.executable, "-c", STOP_SCRIPT, str(seen)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "serving\n"
        proc.send_signal(signal.SIGTERM)
        wait_until(seen.exists, 30, "the first signal to set the flag")
        assert proc.poll() is None, "the first signal only sets the flag"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 1
        assert "daemon.stopped_now" in proc.stdout.read()
    finally:
        proc.kill()
        proc.wait()
