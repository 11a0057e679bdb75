"""Who is rendering: a renderer's heartbeat record is there from the start of its heartbeat to its end, counts
while its process lives and beats, and a killed renderer's record is left out (and removed at the next start)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from heygemd.daemon.lifecycle import Heartbeat
from heygemd.daemon.presence import (
    MISSED_BEATS,
    PresenceFile,
    Renderer,
    live_renderers,
    remove_dead_records,
    this_process,
)
from heygemd.daemon.status import utc_now
from heygemd.daemon.systemd import Notifier


def presence(state: Path, engines: tuple[str, ...] = ("mouthwarp",)) -> PresenceFile:
    started = utc_now()
    return PresenceFile(state, lambda: this_process("daemon", "heygemd run", engines, started))


def test_the_heartbeat_writes_the_record_at_its_start_and_removes_it_at_its_end(tmp_path: Path) -> None:
    state = tmp_path / "state"
    record = presence(state, ("musetalk", "mouthwarp"))
    assert live_renderers(state) == []
    with Heartbeat(Notifier(""), None, presence=record):
        (renderer,) = live_renderers(state)
        assert (renderer.kind, renderer.name, renderer.pid) == ("daemon", "heygemd run", os.getpid())
        assert renderer.engines == ("musetalk", "mouthwarp") and renderer.process is not None
        assert record.path == state / "renderers" / f"{renderer.host}-{os.getpid()}.json"
    assert live_renderers(state) == [] and not record.path.exists()


def test_a_killed_renderers_record_does_not_count_and_goes_at_the_next_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    presence(state).announce()  # this process: alive
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from tests.daemon.test_presence import presence; "
            "presence(Path(sys.argv[1]), ('wav2lip',)).announce(); print('written', flush=True); sys.stdin.read()",
            str(state),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "written\n"
        assert sorted(r.engines for r in live_renderers(state)) == [("mouthwarp",), ("wav2lip",)]
    finally:
        child.kill()
        child.wait()
    assert [r.engines for r in live_renderers(state)] == [("mouthwarp",)]
    assert len(list((state / "renderers").iterdir())) == 2  # a SIGKILL leaves its record behind...
    assert remove_dead_records(state) == [state / "renderers" / f"{live_renderers(state)[0].host}-{child.pid}.json"]
    assert [r.pid for r in live_renderers(state)] == [os.getpid()]  # ...which the next start removes


def test_a_record_of_another_host_counts_while_it_beats(tmp_path: Path) -> None:
    state = tmp_path / "state"
    record = presence(state)
    record.announce()
    mine = Renderer.model_validate_json(record.path.read_bytes())
    elsewhere = mine.model_copy(update={"host": "gpu-2", "pid": 4242, "process": None})
    (state / "renderers" / "gpu-2-4242.json").write_text(elsewhere.model_dump_json())
    assert [r.host for r in live_renderers(state)] == ["gpu-2", mine.host]
    late = mine.beat + timedelta(seconds=MISSED_BEATS * mine.interval_s + 1)
    assert live_renderers(state, now=late - timedelta(seconds=2)) != []
    assert [r.host for r in live_renderers(state, now=late) if r.host == "gpu-2"] == []


def test_what_is_not_a_record_is_never_read_through(tmp_path: Path) -> None:
    state = tmp_path / "state"
    presence(state).announce()
    outside = tmp_path / "outside.json"
    outside.write_text(Renderer.model_validate_json(presence(state).path.read_bytes()).model_dump_json())
    (state / "renderers" / "linked-1.json").symlink_to(outside)
    (state / "renderers" / "broken-2.json").write_text("{not json")
    assert [r.pid for r in live_renderers(state)] == [os.getpid()]
    assert outside.is_file()
