"""Claims and leases: taking a ready job out of the inbox (an atomic rename, never a copy), the claims a restart
resumes, and who owns a claim (host and pid, with a lease renewed as the job progresses), so two daemons
sharing an inbox, or a restart, never process a job twice.

Claimed jobs live in ``<state>/claimed/<job-id>/`` as ``claim.json`` plus ``input/`` (the user's folder,
renamed there whole); :func:`claimed_jobs` lists what a restart must resume.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import structlog
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from heygemd.daemon.notes import drop_note, nas_submitter, read_note
from heygemd.daemon.presenter_links import Linker
from heygemd.daemon.readiness import Candidate
from heygemd.daemon.status import JobStatus, utc_now
from heygemd.errors import ConfigError, HeygemdError
from heygemd.fsutil import atomic_write_bytes, fsync_dir, read_regular, remove_tree
from heygemd.layout import claim_file, claim_folders, claims_root, inputs, job_folder, state_of
from heygemd.names import numbered

log = structlog.get_logger("heygemd.claims")

CLAIM_FILE_MAX_BYTES = 64 * 1024
"""claim.json is a few hundred bytes; a larger one is not heygemd's and is not read (the claim is rebuilt)."""


class ClaimRecord(BaseModel):
    """``claim.json``: who took which inbox folder when, so a restart knows the job's identity and order."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    job_id: str
    name: str
    claimed_at: AwareDatetime
    host: str
    pid: int
    process: str | None = None
    """The owner process beyond its pid (:func:`process_identity`), so a pid reused by another process after the
    owner died does not hold the claim. Absent in claims written by older versions: then the pid alone decides."""
    submitted_by: str | None = None
    """Who submitted the job (:mod:`heygemd.daemon.notes`): an account (``web alice``), the CLI, or ``nas
    <owner>`` for a folder copied into the inbox. Absent in claims written by older versions."""
    priority: int | None = None
    """The job's priority when an editor changed it (None: job.toml's, else normal)."""


@dataclass(frozen=True)
class ClaimedJob:
    """A job taken out of the inbox.

    path: ``<state>/claimed/<job_id>`` (holds claim.json); folder: ``path/input``, the user's job folder
    (pass it to ``load_job``); name: the folder's original name; claimed_at: UTC; host, pid and process: its
    owner; submitted_by and priority: who submitted it, its changed priority (see :class:`ClaimRecord`).
    """

    job_id: str
    name: str
    path: Path
    claimed_at: datetime
    host: str
    pid: int
    process: str | None = None
    submitted_by: str | None = None
    priority: int | None = None

    @property
    def folder(self) -> Path:
        return inputs(self.path)

    @property
    def state_dir(self) -> Path:
        return state_of(self.path)


def _reserve(claimed_root: Path, name: str, outbox: Path | None) -> tuple[str, Path]:
    """Atomically create ``claimed/<id>`` for the first free id among name, name-2, name-3...

    An id is taken when ``claimed/<id>`` exists (mkdir fails: that is the atomic reservation, also between
    processes) or ``outbox/<id>`` exists (an earlier job's results, never overwritten).
    """
    n = 0
    while True:
        n += 1
        job_id = numbered(name, n, keep_suffix=False)
        if outbox is not None and job_folder(outbox, job_id).exists():
            continue
        try:
            (claimed_root / job_id).mkdir()
        except FileExistsError:
            continue
        return job_id, claimed_root / job_id


def _release(reservation: Path) -> None:
    claim_file(reservation).unlink(missing_ok=True)
    reservation.rmdir()


def claim(
    candidate: Candidate,
    state_dir: Path,
    *,
    outbox: Path | None = None,
    now: Callable[[], datetime] = utc_now,
    presenters: Linker | None = None,
) -> ClaimedJob | None:
    """Take ``candidate`` out of the inbox by renaming it to ``<state>/claimed/<job-id>/input``.

    Steps: reserve a unique job id (mkdir), write claim.json there (atomic), rename the folder (atomic,
    never a copy), then, with ``presenters``, link the library presenters its job.toml names into it
    (:mod:`heygemd.daemon.presenter_links`; a failure there is logged and the worker tries again when the job
    starts: the job is claimed either way). Returns None when the folder is gone, i.e. another process claimed it
    first; of several racers exactly one wins. Raises ConfigError when the state dir is on another filesystem
    (EXDEV); any other rename error (e.g. EACCES on SMB while a client holds a file in the folder open) is raised
    as is, after releasing the reservation: the folder stays in the inbox and a later scan tries again.
    """
    claimed_root = claims_root(state_dir)
    note = read_note(state_dir, candidate.name, candidate.path)
    submitted_by = note.submitted_by if note is not None and note.submitted_by else nas_submitter(candidate.path)
    job_id, reservation = _reserve(claimed_root, candidate.name, Path(outbox) if outbox is not None else None)
    record = _owned_by_me(job_id, candidate.name, now()).model_copy(
        update={"submitted_by": submitted_by, "priority": note.priority if note is not None else None}
    )
    try:
        write_claim_record(reservation, record)
        os.rename(candidate.path, inputs(reservation))
    except FileNotFoundError:
        _release(reservation)
        return None
    except OSError as exc:
        _release(reservation)
        if exc.errno == errno.EXDEV:
            raise ConfigError(
                f"cannot claim job by rename: {claimed_root} is on another filesystem than {candidate.path}",
                path=claimed_root,
                hint="Put paths.state on the inbox's share (the default <inbox>/.heygemd is); jobs are never copied.",
            ) from exc
        raise
    fsync_dir(claimed_root)
    fsync_dir(candidate.path.parent)
    drop_note(state_dir, candidate.name)
    claimed = _claimed_job(record, reservation)
    if presenters is not None:
        try:
            presenters(claimed.path)
        except (OSError, HeygemdError) as exc:
            log.warning(
                "job.presenters_not_linked",
                job_id=claimed.job_id,
                error=str(exc),
                hint="Linked when the job starts.",
            )
    return claimed


def first_status(claimed: ClaimedJob) -> JobStatus:
    """The status.json of a claimed job before it runs: its identity, when it was claimed, who submitted it."""
    return JobStatus(
        job_id=claimed.job_id,
        job_name=claimed.name,
        claimed=claimed.claimed_at,
        created=claimed.claimed_at,
        submitted_by=claimed.submitted_by,
    )


def _real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def read_claim_record(claim: Path) -> ClaimRecord:
    """The claim.json of the claim folder ``claim`` (also an archived one). FileNotFoundError, ValidationError, or
    a HeygemdError for a file that is not heygemd's (a link, a FIFO, too large: never followed nor waited on)."""
    return ClaimRecord.model_validate_json(read_regular(claim_file(claim), max_bytes=CLAIM_FILE_MAX_BYTES))


def write_claim_record(claim: Path, record: ClaimRecord) -> None:
    """Write the claim folder's claim.json (atomically)."""
    atomic_write_bytes(claim_file(claim), record.model_dump_json(indent=2).encode("utf-8"))


def read_claim(path: Path) -> ClaimedJob | None:
    """The claimed job at ``<state>/claimed/<id>``, or None when it is only a reservation (no ``input/`` folder, a
    link being none: a claim that lost its race or was cut short by a crash). A missing or unreadable claim.json
    (a link, a FIFO, too large, not a claim) is rebuilt from the folder name and its mtime, so a job is never lost
    over its bookkeeping."""
    path = Path(path)
    if not _real_dir(inputs(path)):
        return None
    try:
        rec = read_claim_record(path)
    except (FileNotFoundError, ValidationError, HeygemdError):
        mtime = os.lstat(path).st_mtime
        return ClaimedJob(path.name, path.name, path, datetime.fromtimestamp(mtime, timezone.utc), "", 0)
    return _claimed_job(rec, path)


def claimed_jobs(state_dir: Path) -> list[ClaimedJob]:
    """Every job claimed but not yet finished (not moved out of ``claimed/``), oldest claim first. Links there are
    never followed: only real folders are claims."""
    jobs = [job for p in claim_folders(state_dir) if (job := read_claim(p)) is not None]
    return sorted(jobs, key=lambda j: (j.claimed_at, j.job_id))


def remove_stale_reservations(state_dir: Path, *, older_than_s: float = 3600.0, now: float | None = None) -> list[Path]:
    """Delete reservations (``claimed/<id>`` without an ``input/`` folder) older than ``older_than_s``: left by a
    crash between reserving and renaming. Young ones are left alone, another process may be mid-claim. Links in
    ``claimed/`` are not heygemd's and are left alone, never followed."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    for p in claim_folders(state_dir):
        if not _real_dir(inputs(p)) and now - os.lstat(p).st_mtime >= older_than_s:
            remove_tree(p)
            removed.append(p)
    return removed


# ---------------------------------------------------------------------------------------------- ownership

LEASE_SECONDS = 600.0
"""A claim held by a process on another machine is taken over only when its claim.json has not been touched
(``renew_lease``) for this long: that daemon is gone. On this machine, whether its process is alive decides."""


def renew_lease(claimed: ClaimedJob) -> None:
    """Touch claim.json: "the job is being worked on", for daemons on other machines sharing the inbox."""
    os.utime(claim_file(claimed.path))


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def process_identity(pid: int) -> str | None:
    """``<boot id>:<start time>`` of process ``pid`` on this machine (the start time in clock ticks since boot,
    field 22 of ``/proc/<pid>/stat``): the same for as long as that process lives, another for whichever process
    gets its pid next, also after a reboot. None when it cannot be read (no such process, no /proc)."""
    try:
        boot = BOOT_ID.read_text(encoding="ascii").strip()
        stat_line = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields = stat_line.rpartition(")")[2].split()  # after the command name, which may hold spaces and ")"
    return f"{boot}:{fields[19]}" if len(fields) > 19 else None


def _owned_by_me(job_id: str, name: str, claimed_at: datetime) -> ClaimRecord:
    pid = os.getpid()
    return ClaimRecord(
        job_id=job_id,
        name=name,
        claimed_at=claimed_at,
        host=socket.gethostname(),
        pid=pid,
        process=process_identity(pid),
    )


def _claimed_job(record: ClaimRecord, path: Path) -> ClaimedJob:
    return ClaimedJob(
        record.job_id,
        record.name,
        path,
        record.claimed_at,
        record.host,
        record.pid,
        record.process,
        record.submitted_by,
        record.priority,
    )


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def alive_here(pid: int, process: str | None) -> bool:
    """Whether process ``pid`` of this machine is alive and, where its :func:`process_identity` was recorded
    (``process``), still that process: a pid another process got after the first one died is not it."""
    if not _pid_alive(pid):
        return False
    return process is None or process_identity(pid) == process


def held_by(claimed: ClaimedJob, *, now: float | None = None, lease_seconds: float = LEASE_SECONDS) -> str | None:
    """Why another live process (here or on another machine) is working on ``claimed`` right now, or None when
    none is. On this machine: its pid is alive and, where the claim recorded it, is still the same process (a
    pid reused by another process holds nothing). On another: claim.json was touched less than
    ``lease_seconds`` ago."""
    if claimed.host == socket.gethostname():
        if claimed.pid == os.getpid() or not alive_here(claimed.pid, claimed.process):
            return None
        return f"process {claimed.pid} on this host is alive"
    if not claimed.host:  # claim.json was lost: nobody can be identified as its owner
        return None
    try:
        touched = claim_file(claimed.path).stat().st_mtime
    except FileNotFoundError:
        return None
    age = (time.time() if now is None else now) - touched
    if age >= lease_seconds:
        return None
    return f"{claimed.host} renewed its lease {age:.0f} s ago (it is taken over after {lease_seconds:.0f} s)"


def held_elsewhere(claimed: ClaimedJob, *, now: float | None = None, lease_seconds: float = LEASE_SECONDS) -> bool:
    """Whether another live process (here or on another machine) is working on ``claimed`` right now
    (:func:`held_by` says why)."""
    return held_by(claimed, now=now, lease_seconds=lease_seconds) is not None


def take_over(claimed: ClaimedJob) -> ClaimedJob:
    """Record this process as the owner of ``claimed`` (same id, name, claim time, submitter and priority) before
    resuming it."""
    record = _owned_by_me(claimed.job_id, claimed.name, claimed.claimed_at).model_copy(
        update={"submitted_by": claimed.submitted_by, "priority": claimed.priority}
    )
    write_claim_record(claimed.path, record)
    return _claimed_job(record, claimed.path)


def unowned_record(claimed: ClaimedJob) -> ClaimRecord:
    """``claimed``'s claim.json with no owner (a farm's queued job): its identity, submitter and priority."""
    return ClaimRecord(
        job_id=claimed.job_id,
        name=claimed.name,
        claimed_at=claimed.claimed_at,
        host="",
        pid=0,
        submitted_by=claimed.submitted_by,
        priority=claimed.priority,
    )
