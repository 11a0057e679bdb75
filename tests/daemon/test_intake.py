"""Intake: name rules (names), inbox scan and readiness with an injectable clock (readiness), real watchdog observers
and observer choice (watching), claims and leases (claims)."""

from __future__ import annotations

import dataclasses
import errno
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import structlog.testing
from watchdog.events import FileCreatedEvent, FileMovedEvent

from heygemd.daemon import readiness, watching
from heygemd.daemon.claims import (
    ClaimedJob,
    claim,
    claimed_jobs,
    held_by,
    held_elsewhere,
    process_identity,
    read_claim,
    remove_stale_reservations,
    renew_lease,
    take_over,
)
from heygemd.daemon.readiness import Candidate, ReadinessTracker, ReadyReason, scan_inbox, take_snapshot
from heygemd.daemon.watching import InboxWatcher, choose_observer, find_mount, parse_mountinfo
from heygemd.errors import ConfigError
from heygemd.names import NameKind, classify_name

WAIT = 10.0  # generous deadline for conditions; tests finish as soon as the condition holds


class FakeClock:
    """Monotonic seconds that only move when the test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_job(inbox: Path, name: str = "job", files: tuple[str, ...] = ("voice.wav", "a.mp4")) -> Candidate:
    for f in files:
        write(inbox / name / f, b"data-" + f.encode())
    return Candidate(name=name, path=inbox / name)


# ------------------------------------------------------------------------------------------ name rules


@pytest.mark.parametrize(
    "name",
    [
        "clip.mp4.part",
        "a.PARTIAL",
        "v.mp4.abc123.partial",
        "x.tmp",
        "dl.crdownload",
        ".syncthing.voice.wav.tmp",
        "~syncthing~voice.wav.tmp",
        ".~lock.notes.odt#",
        "~$script.docx",
    ],
)
def test_in_flight_names(name: str) -> None:
    assert classify_name(name) is NameKind.IN_FLIGHT


@pytest.mark.parametrize(
    "name", [".DS_Store", "._clip.mp4", "Thumbs.db", "THUMBS.DB", "desktop.ini", ".hidden", ".ready"]
)
def test_junk_names(name: str) -> None:
    assert classify_name(name) is NameKind.JUNK


@pytest.mark.parametrize("name", ["@eaDir", "__MACOSX", "$RECYCLE.BIN", ".Trashes"])
def test_junk_dirs(name: str) -> None:
    assert classify_name(name, is_dir=True) is NameKind.JUNK


@pytest.mark.parametrize("name", ["voice.wav", "演讲 视频.mp4", "my job", "template.toml", "partial_take.mp4"])
def test_normal_names(name: str) -> None:
    assert classify_name(name) is NameKind.NORMAL


# ------------------------------------------------------------------------------------------ scanning


def test_scan_inbox_lists_job_folders_only(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    state = inbox / ".heygemd"
    for d in ["b job", "a", "中文任务", "@eaDir", "__MACOSX", ".hidden", "upload.partial", "statedir"]:
        (inbox / d).mkdir(parents=True)
    state.mkdir()
    write(inbox / "loose.mp4")
    (inbox / "link").symlink_to(inbox / "a")
    names = [c.name for c in scan_inbox(inbox, state)]
    assert names == sorted(["a", "b job", "中文任务", "statedir"])
    # a state dir that is not a dot dir is skipped too
    assert "statedir" not in [c.name for c in scan_inbox(inbox, inbox / "statedir")]


def test_scan_inbox_reports_loose_files_but_not_a_readme_explaining_the_inbox(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "lesson").mkdir(parents=True)
    for name in ["notes.txt", "talk.mp4", "README.md", "readme.txt", "ReadMe", ".DS_Store"]:
        write(inbox / name)
    loose: list[str] = []
    assert [c.name for c in scan_inbox(inbox, on_loose=loose.append)] == ["lesson"]
    assert sorted(loose) == ["notes.txt", "talk.mp4"], "a README (the repository's inbox has one) is no stray file"


def test_scan_missing_inbox_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan_inbox(tmp_path / "not-mounted")


# ------------------------------------------------------------------------------------------ readiness


def test_settle_timer_and_reset_on_change(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = ReadinessTracker(settle_seconds=60, clock=clock)
    cand = make_job(tmp_path)
    r = tracker.observe(cand)
    assert r.reason is ReadyReason.SETTLING and r.wait_s == pytest.approx(60)
    clock.advance(59)
    assert not tracker.observe(cand).ready
    assert tracker.next_deadline() == pytest.approx(1)
    # the file grows: the timer restarts
    write(cand.path / "a.mp4", b"more data than before")
    clock.advance(2)
    r = tracker.observe(cand)
    assert r.reason is ReadyReason.SETTLING and r.wait_s == pytest.approx(60)
    clock.advance(59.5)
    assert not tracker.observe(cand).ready
    clock.advance(0.5)
    assert tracker.observe(cand).reason is ReadyReason.SETTLED


def test_mtime_change_alone_resets_timer(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = ReadinessTracker(settle_seconds=10, clock=clock)
    cand = make_job(tmp_path)
    tracker.observe(cand)
    clock.advance(9)
    st = (cand.path / "a.mp4").stat()
    os.utime(cand.path / "a.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    tracker.observe(cand)
    clock.advance(9)
    assert not tracker.observe(cand).ready
    clock.advance(1)
    assert tracker.observe(cand).ready


def test_new_file_in_subfolder_resets_timer(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = ReadinessTracker(settle_seconds=10, clock=clock)
    cand = make_job(tmp_path)
    tracker.observe(cand)
    clock.advance(9)
    write(cand.path / "extra" / "b.mp4")
    clock.advance(1)
    assert tracker.observe(cand).reason is ReadyReason.SETTLING


def test_ready_marker_makes_ready_at_once(tmp_path: Path) -> None:
    tracker = ReadinessTracker(settle_seconds=3600, clock=FakeClock())
    cand = make_job(tmp_path)
    assert not tracker.observe(cand).ready
    write(cand.path / ".ready", b"")
    assert tracker.observe(cand).reason is ReadyReason.MARKER


def test_custom_marker_name(tmp_path: Path) -> None:
    tracker = ReadinessTracker(settle_seconds=3600, ready_marker="READY.txt", clock=FakeClock())
    cand = make_job(tmp_path, files=("voice.wav", "a.mp4", "READY.txt"))
    assert tracker.observe(cand).reason is ReadyReason.MARKER


def test_in_flight_file_blocks_even_with_marker(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = ReadinessTracker(settle_seconds=5, clock=clock)
    cand = make_job(tmp_path, files=("voice.wav", "b.mp4.part", ".ready"))
    r = tracker.observe(cand)
    assert r.reason is ReadyReason.IN_FLIGHT and r.in_flight == ("b.mp4.part",)
    clock.advance(1000)
    assert tracker.observe(cand).reason is ReadyReason.IN_FLIGHT
    assert tracker.next_deadline() is None  # nothing is settling: no busy wake-ups
    # the producer finishes: renames b.mp4.part -> b.mp4
    os.rename(cand.path / "b.mp4.part", cand.path / "b.mp4")
    assert tracker.observe(cand).reason is ReadyReason.MARKER


def test_in_flight_rename_restarts_settle(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = ReadinessTracker(settle_seconds=5, clock=clock)
    cand = make_job(tmp_path, files=("voice.wav", "a.mp4", "nested/b.mp4.crdownload"))
    tracker.observe(cand)
    clock.advance(100)
    assert tracker.observe(cand).in_flight == ("nested/b.mp4.crdownload",)
    os.rename(cand.path / "nested/b.mp4.crdownload", cand.path / "nested/b.mp4")
    assert tracker.observe(cand).reason is ReadyReason.SETTLING
    clock.advance(5)
    assert tracker.observe(cand).ready


def test_junk_files_do_not_count(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = ReadinessTracker(settle_seconds=10, clock=clock)
    cand = make_job(tmp_path)
    tracker.observe(cand)
    clock.advance(9)
    # Finder / Explorer clutter appearing late neither resets the timer nor blocks
    write(cand.path / ".DS_Store")
    write(cand.path / "._a.mp4")
    write(cand.path / "Thumbs.db")
    write(cand.path / "@eaDir" / "a.mp4" / "SYNOFILE_THUMB_M.jpg")
    clock.advance(1)
    assert tracker.observe(cand).reason is ReadyReason.SETTLED


def test_folder_with_only_junk_or_nothing_is_never_ready(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = ReadinessTracker(settle_seconds=0, clock=clock)
    empty = Candidate("empty", tmp_path / "empty")
    empty.path.mkdir()
    junk = make_job(tmp_path, "junk", files=(".DS_Store", "Thumbs.db", ".ready", "sub/desktop.ini"))
    for _ in range(3):
        clock.advance(10_000)
        assert tracker.observe(empty).reason is ReadyReason.EMPTY
        assert tracker.observe(junk).reason is ReadyReason.EMPTY


def test_gone_folder(tmp_path: Path) -> None:
    tracker = ReadinessTracker(settle_seconds=0, clock=FakeClock())
    cand = make_job(tmp_path)
    tracker.observe(cand)
    shutil.rmtree(cand.path)
    assert tracker.observe(cand).reason is ReadyReason.GONE


def test_snapshot_contents(tmp_path: Path) -> None:
    cand = make_job(tmp_path, files=("voice.wav", "sub/a.mp4", "x.part", ".ready", ".DS_Store"))
    snap = take_snapshot(cand.path)
    assert [e[0] for e in snap.entries] == ["sub/", "sub/a.mp4", "voice.wav"]
    assert snap.in_flight == ("x.part",) and snap.has_marker and snap.has_files
    assert {e[0]: e[1] for e in snap.entries}["voice.wav"] == len(b"data-voice.wav")


def test_retain_forgets_removed_jobs(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = ReadinessTracker(settle_seconds=10, clock=clock)
    a, b = make_job(tmp_path, "a"), make_job(tmp_path, "b")
    tracker.observe(a)
    tracker.observe(b)
    clock.advance(10)
    tracker.retain(["a"])
    assert tracker.observe(a).ready
    assert not tracker.observe(b).ready  # b starts over


# ------------------------------------------------------------------------------------------ observer choice

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 27 0:45 / /mnt/nas rw,relatime shared:20 - nfs4 nas:/export/heygem rw,vers=4.2
41 27 0:46 / /mnt/smb\\040share rw,relatime - cifs //nas/video rw,vers=3.1.1
42 40 252:1 / /mnt/nas/local rw,relatime - xfs /dev/vdb rw
43 27 0:47 / /mnt/rclone rw - fuse.rclone gdrive: rw
"""


def test_parse_mountinfo_unescapes() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert [m.mount_point for m in mounts][:4] == ["/proc", "/", "/mnt/nas", "/mnt/smb share"]
    assert mounts[2].fstype == "nfs4" and mounts[2].source == "nas:/export/heygem"


@pytest.mark.parametrize(
    ("path", "kind", "fstype"),
    [
        ("/mnt/nas/heygem/inbox", "polling", "nfs4"),
        ("/mnt/nas", "polling", "nfs4"),
        ("/mnt/smb share/inbox", "polling", "cifs"),
        ("/mnt/rclone/in", "polling", "fuse.rclone"),
        ("/mnt/nas/local/inbox", "inotify", "xfs"),
        ("/srv/heygem/inbox", "inotify", "ext4"),
        ("/mnt/nasty", "inotify", "ext4"),  # a prefix of the name is not a parent
    ],
)
def test_auto_choice_from_mountinfo(path: str, kind: str, fstype: str) -> None:
    choice = choose_observer(Path(path), "auto", mountinfo=MOUNTINFO)
    assert (choice.kind, choice.fstype) == (kind, fstype)
    assert fstype in choice.reason


def test_explicit_setting_wins_and_unreadable_table_polls() -> None:
    assert choose_observer(Path("/mnt/nas/x"), "inotify", mountinfo=MOUNTINFO).kind == "inotify"
    assert choose_observer(Path("/srv/x"), "polling", mountinfo=MOUNTINFO).kind == "polling"
    assert choose_observer(Path("/srv/x"), "auto", mountinfo="").kind == "polling"


def test_find_mount_later_mount_on_same_point_wins() -> None:
    text = MOUNTINFO + "50 27 0:60 / /mnt/nas rw - ext4 /dev/vdc rw\n"
    assert find_mount(Path("/mnt/nas/x"), parse_mountinfo(text)).fstype == "ext4"


def test_auto_choice_on_real_tmp_dir(tmp_path: Path) -> None:
    choice = choose_observer(tmp_path)
    if shutil.which("findmnt") is None:
        pytest.skip("findmnt not installed")
    expected = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE", "--target", str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert choice.fstype == expected
    assert choice.kind == ("polling" if watching.is_network_fstype(expected) else "inotify")


# ------------------------------------------------------------------------------------------ watching


@pytest.mark.parametrize("kind", ["inotify", "polling"])
def test_watcher_signals_new_job_and_file(tmp_path: Path, kind: str) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "existing").mkdir(parents=True)
    with InboxWatcher(inbox, observer=kind, poll_interval=0.05) as watcher:
        assert watcher.kind == kind and watcher.running
        watcher.changed.clear()
        write(inbox / "new job" / "voice.wav")
        assert watcher.wait(WAIT), "no signal for a new job folder"
        write(inbox / "existing" / "clip.mp4")  # a file deep in an existing job also signals
        assert watcher.wait(WAIT), "no signal for a file inside a job"
    assert not watcher.running


@pytest.mark.parametrize("kind", ["inotify", "polling"])
def test_watcher_signals_a_presenter_copied_into_the_library_but_nothing_below(tmp_path: Path, kind: str) -> None:
    inbox, library = tmp_path / "inbox", tmp_path / "presenters"
    inbox.mkdir()
    (library / "sub").mkdir(parents=True)
    with InboxWatcher(inbox, observer=kind, poll_interval=0.05, also=(library,)) as watcher:
        watcher.changed.clear()
        write(library / "anna.mp4")
        assert watcher.wait(WAIT), "no signal for a presenter copied into the library"
        deadline = time.monotonic() + WAIT
        while watcher.wait(0.5):  # the copy's last events (modified, closed)
            assert time.monotonic() < deadline, "the signals never stopped"
        write(library / "sub" / "deep.mp4")  # a sub-folder of the library is no presenter: not watched
        assert not watcher.wait(0.5)


def test_watcher_observer_types(tmp_path: Path) -> None:
    from watchdog.observers.polling import PollingObserverVFS

    with InboxWatcher(tmp_path, observer="polling", poll_interval=0.05) as w:
        assert isinstance(w._observer, PollingObserverVFS)
    with InboxWatcher(tmp_path, observer="inotify") as w:
        assert type(w._observer).__name__ == "InotifyObserver"


def test_watcher_missing_inbox(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        InboxWatcher(tmp_path / "missing", observer="inotify").start()


def test_watcher_ignores_state_dir_events(tmp_path: Path) -> None:
    state = tmp_path / ".heygemd"
    changed = threading.Event()
    handler = watching._Signal(changed, str(state))
    handler.on_any_event(FileCreatedEvent(str(state / "cache" / "x.npz")))
    handler.on_any_event(FileCreatedEvent(str(state)))
    assert not changed.is_set()
    handler.on_any_event(FileMovedEvent(str(tmp_path / "job"), str(state / "claimed" / "job" / "input")))
    assert changed.is_set()  # a move out of the inbox counts
    changed.clear()
    handler.on_any_event(FileCreatedEvent(str(tmp_path / ".heygemd-other" / "x")))
    assert changed.is_set()


def test_polling_walk_skips_state_and_junk_dirs(tmp_path: Path) -> None:
    state = tmp_path / "state"
    for d in ["state/archive", "job", "@eaDir", ".Trashes"]:
        (tmp_path / d).mkdir(parents=True)
    w = InboxWatcher(tmp_path, state_dir=state, observer="polling")
    assert sorted(e.name for e in w._scandir(str(tmp_path))) == ["job"]


@pytest.mark.parametrize("kind", ["inotify", "polling"])
def test_a_job_nested_1100_deep_is_watched_only_to_its_top_level(tmp_path: Path, kind: str, nested) -> None:
    inbox = tmp_path / "inbox"
    nested(inbox / "job" / "sub", 1100)
    with InboxWatcher(inbox, observer=kind, poll_interval=0.05) as watcher:
        assert watcher.kind == kind and watcher.running
        watcher.changed.clear()
        write(inbox / "job" / ".ready")
        assert watcher.wait(WAIT), "no signal for a file in a job's folder"
        write(inbox / "later" / "voice.wav")
        assert watcher.wait(WAIT), "no signal for a new job"
        write(inbox / "later" / ".ready")
        assert watcher.wait(WAIT), "no signal for a file in a job that arrived while watching"
    w = InboxWatcher(inbox, observer="polling")
    assert [e.name for e in w._scandir(str(inbox / "job"))] == [".ready"]  # polling lists no folder below a job


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "inotify watch limit reached"), RecursionError()])
def test_an_observer_that_fails_to_start_falls_back_to_polling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    from watchdog.observers.inotify import InotifyObserver

    def refuse(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(InotifyObserver, "schedule", refuse)  # what the kernel (or a deep tree) answers
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with InboxWatcher(inbox, observer="inotify", poll_interval=0.05) as watcher:
        assert watcher.kind == "polling" and "polling instead" in watcher.choice.reason
        write(inbox / "job" / "voice.wav")
        assert watcher.wait(WAIT)


def test_a_folder_nested_1100_deep_is_snapshotted_within_the_caps(tmp_path: Path, nested) -> None:
    job = make_job(tmp_path / "inbox")
    nested(job.path / "sub", 1100)
    snap = take_snapshot(job.path)
    assert not snap.gone and snap.has_files
    assert max(rel.count("/") for rel, _, _ in snap.entries) <= readiness.MAX_WALK_DEPTH
    for i in range(30):
        write(job.path / "many" / f"f{i:02}.txt")
    capped = take_snapshot(job.path, max_entries=20)
    assert len(capped.entries) == 20 and {"a.mp4", "voice.wav"} <= {rel for rel, _, _ in capped.entries}
    assert capped == take_snapshot(job.path, max_entries=20)  # the same names each time: the job can settle


def test_an_unreadable_inbox_stops_no_step_and_is_logged_once(tmp_path: Path) -> None:
    from heygemd.daemon.service import Service
    from heygemd.settings import PathsSettings, Settings

    settings = Settings(paths=PathsSettings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox"))
    (tmp_path / "inbox").write_bytes(b"a file where the inbox should be")
    service = Service(settings, lambda _c: pytest.fail("nothing to run"), completeness=None)
    with structlog.testing.capture_logs() as logs:
        assert [service.step(now).action for now in (0.0, 1.0)] == ["idle", "idle"]
    assert [e["event"] for e in logs if e["event"].startswith("inbox.")] == ["inbox.unreadable"]


# ------------------------------------------------------------------------------------------ claiming


def fixed_now(*stamps: datetime):
    it = iter(stamps)
    return lambda: next(it)


def test_claim_is_a_rename(tmp_path: Path) -> None:
    inbox, state = tmp_path / "inbox", tmp_path / "inbox" / ".heygemd"
    cand = make_job(inbox, "我的 任务")
    ino = cand.path.stat().st_ino
    job = claim(cand, state)
    assert job is not None and job.job_id == "我的 任务" and job.name == "我的 任务"
    assert not cand.path.exists()
    assert job.folder == state / "claimed" / "我的 任务" / "input"
    assert job.folder.stat().st_ino == ino  # the same directory, moved, not copied
    assert sorted(p.name for p in job.folder.iterdir()) == ["a.mp4", "voice.wav"]
    rec = read_claim(job.path)
    assert rec == job and job.claimed_at.tzinfo is not None
    assert [p.name for p in job.path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_duplicate_names_get_distinct_ids(tmp_path: Path) -> None:
    inbox, state, outbox = tmp_path / "inbox", tmp_path / "state", tmp_path / "outbox"
    state.mkdir()
    (outbox / "talk").mkdir(parents=True)  # results of an earlier job named "talk"
    ids = []
    for n in range(3):
        cand = make_job(inbox, "talk", files=(f"v{n}.wav", "a.mp4"))
        job = claim(cand, state, outbox=outbox)
        assert job is not None
        ids.append(job.job_id)
    assert ids == ["talk-2", "talk-3", "talk-4"]
    assert (state / "claimed" / "talk-3" / "input" / "v1.wav").is_file()


def test_thread_race_has_one_winner(tmp_path: Path) -> None:
    state = tmp_path / "state"
    for round_ in range(5):
        cand = make_job(tmp_path / "inbox", f"job{round_}")
        barrier = threading.Barrier(6)
        results: list[object] = []
        lock = threading.Lock()

        def racer(
            barrier: threading.Barrier = barrier,
            cand: Candidate = cand,
            lock: threading.Lock = lock,
            results: list[object] = results,
        ) -> None:
            barrier.wait(WAIT)
            r = claim(cand, state)
            with lock:
                results.append(r)

        threads = [threading.Thread(target=racer) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        winners = [r for r in results if r is not None]
        assert len(results) == 6 and len(winners) == 1
    # losers released their reservations: only the five winners remain
    assert len(list((state / "claimed").iterdir())) == 5
    assert len(claimed_jobs(state)) == 5


def _claim_in_process(inbox: str, state: str, barrier, queue) -> None:  # noqa: ANN001 - multiprocessing objects
    barrier.wait(WAIT)
    job = claim(Candidate("job", Path(inbox) / "job"), Path(state))
    queue.put(None if job is None else (job.job_id, job.pid))


def test_process_race_has_one_winner(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    cand = make_job(tmp_path / "inbox")
    state = tmp_path / "state"
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    args = (str(tmp_path / "inbox"), str(state), barrier, queue)
    procs = [ctx.Process(target=_claim_in_process, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=WAIT) for _ in procs]
    for p in procs:
        p.join(WAIT)
        assert p.exitcode == 0
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and winners[0][1] in {p.pid for p in procs}
    assert not cand.path.exists()
    assert [j.job_id for j in claimed_jobs(state)] == [winners[0][0]]


def test_claimed_jobs_in_claim_order_after_restart(tmp_path: Path) -> None:
    inbox, state = tmp_path / "inbox", tmp_path / "state"
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
    order = [("zeta", t0), ("alpha", t0 + timedelta(seconds=1)), ("mid", t0 + timedelta(seconds=2))]
    for name, when in order:
        assert claim(make_job(inbox, name), state, now=fixed_now(when)) is not None
    (state / "claimed" / "crashed-reservation").mkdir()  # mkdir happened, rename did not
    jobs = claimed_jobs(state)  # what a fresh process sees
    assert [(j.job_id, j.claimed_at) for j in jobs] == order
    assert all(j.folder.is_dir() for j in jobs)


def test_unreadable_claim_json_still_resumes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    job = claim(make_job(tmp_path / "inbox"), state)
    (job.path / "claim.json").write_text("{not json")
    again = claimed_jobs(state)
    assert [j.job_id for j in again] == ["job"] and again[0].folder == job.folder


def test_remove_stale_reservations(tmp_path: Path) -> None:
    state = tmp_path / "state"
    job = claim(make_job(tmp_path / "inbox"), state)
    stale = state / "claimed" / "stale"
    stale.mkdir()
    (stale / "claim.json").write_text("{}")
    now = stale.stat().st_mtime
    assert remove_stale_reservations(state, older_than_s=60, now=now + 1) == []  # young: maybe mid-claim
    assert remove_stale_reservations(state, older_than_s=60, now=now + 61) == [stale]
    assert job.path.is_dir() and not stale.exists()


def test_claim_of_vanished_folder_returns_none(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert claim(Candidate("ghost", tmp_path / "inbox" / "ghost"), state) is None
    assert list((state / "claimed").iterdir()) == []


def test_claim_across_filesystems_is_a_config_error(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)) or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a second writable filesystem at /dev/shm")
    made = subprocess.run(["mktemp", "-d", "-p", str(shm)], capture_output=True, text=True, check=True)
    state = Path(made.stdout.strip())
    try:
        cand = make_job(tmp_path / "inbox")
        with pytest.raises(ConfigError, match="another filesystem"):
            claim(cand, state)
        assert cand.path.is_dir()  # nothing was copied or moved
        assert list((state / "claimed").iterdir()) == []
    finally:
        shutil.rmtree(state)


# ---------------------------------------------------------------------------------------------- ownership


def _claimed(tmp_path: Path, name: str = "job") -> ClaimedJob:
    folder = tmp_path / "inbox" / name
    folder.mkdir(parents=True)
    (folder / "a.wav").write_bytes(b"x")
    claimed = claim(Candidate(name, folder), tmp_path / "inbox" / ".heygemd")
    assert claimed is not None
    return claimed


def test_a_claim_of_a_live_process_on_this_host_is_held_elsewhere(tmp_path: Path) -> None:
    claimed = _claimed(tmp_path)
    assert not held_elsewhere(claimed)  # our own claim
    child = subprocess.Popen(["sleep", "30"])
    try:
        other = dataclasses.replace(claimed, pid=child.pid, process=process_identity(child.pid))
        assert held_elsewhere(other)
    finally:
        child.kill()
        child.wait()
    assert not held_elsewhere(other)  # it died: free to resume


def _claimed_by(claimed: ClaimedJob, pid: int, process: str | None) -> ClaimedJob:
    """``claimed`` as a claim.json written by process ``pid`` (``process``: its identity; None: an older heygemd
    that did not record one) says it, read back as a restart reads it."""
    record = json.loads((claimed.path / "claim.json").read_bytes())
    record.update(pid=pid, host=socket.gethostname())
    record.pop("process", None)
    if process is not None:
        record["process"] = process
    (claimed.path / "claim.json").write_text(json.dumps(record))
    again = read_claim(claimed.path)
    assert again is not None
    return again


def test_a_pid_now_used_by_another_process_does_not_hold_the_claim(tmp_path: Path) -> None:
    claimed = _claimed(tmp_path)
    child = subprocess.Popen(["sleep", "30"])
    try:
        owner = process_identity(child.pid)
        assert owner is not None
        assert held_by(_claimed_by(claimed, child.pid, owner)) == f"process {child.pid} on this host is alive"
        boot, started = owner.rsplit(":", 1)
        reused = _claimed_by(claimed, child.pid, f"{boot}:{int(started) - 1}")  # the owner died, its pid went on
        assert not held_elsewhere(reused) and held_by(reused) is None
        assert held_elsewhere(_claimed_by(claimed, child.pid, None))  # an older claim.json: the pid decides
    finally:
        child.kill()
        child.wait()


def test_a_skipped_claim_is_logged_once_with_why(tmp_path: Path) -> None:
    from heygemd.daemon.service import Service
    from heygemd.settings import PathsSettings, Settings

    settings = Settings(paths=PathsSettings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox"))
    claimed = _claimed(tmp_path)
    child = subprocess.Popen(["sleep", "30"])
    try:
        _claimed_by(claimed, child.pid, process_identity(child.pid))
        service = Service(settings, lambda _c: pytest.fail("held by another process"), completeness=None)
        with structlog.testing.capture_logs() as logs:
            assert [service.step(now).action for now in (0.0, 1.0, 2.0)] == ["idle"] * 3
    finally:
        child.kill()
        child.wait()
    held = [e for e in logs if e["event"] == "job.held_elsewhere"]
    assert [(e["job_id"], e["why"]) for e in held] == [("job", f"process {child.pid} on this host is alive")]


def test_a_claim_from_another_host_is_held_while_its_lease_is_fresh(tmp_path: Path) -> None:
    claimed = dataclasses.replace(_claimed(tmp_path), host="render-box-2", pid=4242)
    touched = (claimed.path / "claim.json").stat().st_mtime
    assert held_elsewhere(claimed, now=touched + 10)
    assert not held_elsewhere(claimed, now=touched + 3600)
    renew_lease(claimed)
    assert (claimed.path / "claim.json").stat().st_mtime >= touched


def test_take_over_records_the_new_owner_and_keeps_the_identity(tmp_path: Path) -> None:
    original = _claimed(tmp_path)
    stale = dataclasses.replace(original, host="gone-host", pid=1)
    mine = take_over(stale)
    again = read_claim(original.path)
    assert again is not None
    assert (again.host, again.pid) == (socket.gethostname(), os.getpid())
    assert (again.job_id, again.name, again.claimed_at) == (original.job_id, original.name, original.claimed_at)
    assert mine == again


def test_a_folder_name_that_is_not_utf8_is_skipped(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    os.mkdir(os.path.join(os.fsencode(inbox), b"cl\xe9 lesson"))
    (inbox / "good").mkdir()
    with structlog.testing.capture_logs() as logs:
        assert [c.name for c in scan_inbox(inbox)] == ["good"]  # the web catalog scans 4 times a second
    assert logs == []
    found: list[str] = []
    scan_inbox(inbox, on_bad_name=found.append)
    assert found == [os.fsdecode(b"cl\xe9 lesson")]


def test_the_daemon_logs_a_bad_folder_name_once_and_again_only_when_it_comes_back(tmp_path: Path) -> None:
    from heygemd.daemon.service import Service
    from heygemd.settings import PathsSettings, Settings

    settings = Settings(paths=PathsSettings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox"))
    bad = os.path.join(os.fsencode(tmp_path / "inbox"), b"cl\xe9 lesson")
    os.makedirs(bad)
    service = Service(settings, lambda _c: pytest.fail("nothing to run"), completeness=None)
    with structlog.testing.capture_logs() as logs:
        for now in range(5):
            service.step(float(now))
        os.rmdir(bad)
        service.step(5.0)
        os.mkdir(bad)
        service.step(6.0)
    named = [e for e in logs if e["event"] == "inbox.bad_name"]
    assert [e["folder"] for e in named] == ["cl\ufffd lesson", "cl\ufffd lesson"], named


# ---------------------------------------------------------------------------------------------- a hostile state folder


def test_links_planted_in_claimed_are_never_resumed_nor_removed_through(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    state = inbox / ".heygemd"
    job = claim(make_job(inbox), state)
    assert job is not None
    outside = tmp_path / "outside"
    write(outside / "job-like" / "input" / "voice.wav")  # would be "resumed" through a link
    write(outside / "plain" / "keep.txt")  # would be a stale reservation through a link
    os.utime(outside / "plain", (0, 0))
    (state / "claimed" / "resumable").symlink_to(outside / "job-like")
    (state / "claimed" / "stale").symlink_to(outside / "plain")
    os.utime(state / "claimed" / "stale", (0, 0), follow_symlinks=False)
    inner = state / "claimed" / "inner-link"  # a real claim folder whose input/ is a link
    inner.mkdir()
    (inner / "input").symlink_to(outside / "job-like" / "input")
    os.utime(inner, (0, 0))

    assert [j.job_id for j in claimed_jobs(state)] == ["job"]
    assert remove_stale_reservations(state, older_than_s=60) == [inner]  # the reservation goes, its link only
    assert (outside / "plain" / "keep.txt").is_file() and (outside / "job-like" / "input" / "voice.wav").is_file()
    assert (state / "claimed" / "resumable").is_symlink() and (state / "claimed" / "stale").is_symlink()


def test_a_claim_json_that_is_a_fifo_is_rebuilt_from_the_folder_without_blocking(tmp_path: Path) -> None:
    state = tmp_path / "state"
    job = claim(make_job(tmp_path / "inbox"), state)
    assert job is not None
    (job.path / "claim.json").unlink()
    os.mkfifo(job.path / "claim.json")
    again = claimed_jobs(state)
    assert [(j.job_id, j.host, j.pid) for j in again] == [("job", "", 0)]


def test_a_linked_claimed_folder_is_refused_and_the_job_stays_in_the_inbox(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    state = inbox / ".heygemd"
    state.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (state / "claimed").symlink_to(outside)
    cand = make_job(inbox)
    with pytest.raises(ConfigError, match="claimed: is a symbolic link"):
        claim(cand, state)
    assert cand.path.is_dir() and list(outside.iterdir()) == []
    assert claimed_jobs(state) == []
