"""Reading jobs for the pages and the API: every job (one is looked up by ``heygemd.control``), one job's files,
and what the machine is doing.

Every name that comes from a request is checked here: a job id is a plain folder name directly in the outbox
(or inbox, or claim folder), a file name a plain regular file directly in that job's outbox folder; symlinks
are never followed, so nothing outside the inbox and outbox is ever read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from heygemd.control import Control
from heygemd.daemon.claims import ClaimedJob, claimed_jobs
from heygemd.daemon.readiness import scan_inbox
from heygemd.daemon.status import JobStatus, read_status
from heygemd.daemon.waiting import read_waiting_jobs
from heygemd.errors import HeygemdError, JobNotFound
from heygemd.fsutil import contained, is_real_dir, is_real_file, open_regular
from heygemd.layout import LOG_FILE, claim_folder, job_folder, status_file
from heygemd.names import plain_name
from heygemd.settings import Settings
from heygemd.web.problems import NotFound


@dataclass(frozen=True)
class Machine:
    """What the header of every page says: the active engine, whether the worker has a job, how many renderers are
    running (none: jobs wait until one starts), the files ignored in the inbox, and whether the intake takes jobs
    (``waits_for``: ``paused by ...``, ``waits for 20:00``; None while it does)."""

    engine: str
    busy: bool
    current: str | None
    queued: int
    workers: int
    farm: bool
    ignored: tuple[str, ...] = ()
    """Files directly in the inbox: no job takes them (they belong in a job folder)."""
    paused: bool = False
    waits_for: str | None = None
    hours: str = "always"


class Catalog:
    """The jobs as the inbox, the claim folder and the outbox show them."""

    def __init__(self, settings: Settings, control: Control | None = None) -> None:
        self.settings = settings
        self.control = control if control is not None else Control(settings)
        self.inbox = settings.paths.inbox
        self.outbox = settings.paths.outbox
        self.state = settings.paths.state_dir

    # -- one job

    def job_dir(self, job_id: str) -> Path:
        """The job's outbox folder (NotFound when the id is not a plain folder there)."""
        try:
            return self.control.job_dir(job_id)
        except JobNotFound as exc:
            raise NotFound(exc.message) from None

    def status(self, job_id: str) -> JobStatus:
        """The job's status.json, or a ``queued`` status made from its folder while it waits in the inbox."""
        try:
            return self.control.lookup(job_id)
        except JobNotFound as exc:
            raise NotFound(exc.message) from None

    def file(self, job_id: str, name: str) -> Path:
        """A file of the job's outbox folder, for download (NotFound unless a plain regular file there)."""
        folder = self.job_dir(job_id)
        path = folder / name
        if not plain_name(name) or not is_real_file(path) or not contained(path, folder):
            raise NotFound(f"no file {name!r} in job {job_id!r}")
        return path

    def files(self, job_id: str) -> list[Path]:
        """Every plain regular file of the job's outbox folder (outputs, posters, status.json, job.log), by name."""
        folder = self.job_dir(job_id)
        return [folder / n for n in sorted(os.listdir(folder)) if plain_name(n) and is_real_file(folder / n)]

    def log_text(self, job_id: str, limit: int = 200_000) -> str:
        """The end of the job's job.log ('' when there is none yet)."""
        try:
            path = self.file(job_id, LOG_FILE)
            fh = os.fdopen(open_regular(path), "rb")  # a link or FIFO swapped in since the check is not read
        except (NotFound, FileNotFoundError, HeygemdError):
            return ""
        with fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace")

    # -- every job

    def all_statuses(self) -> list[JobStatus]:
        """Every job, newest first: finished and running ones from the outbox, waiting ones from the claim
        folder and the inbox."""
        found: dict[str, JobStatus] = {}
        try:
            entries = sorted(os.listdir(self.outbox))
        except FileNotFoundError:
            entries = []
        for name in entries:
            path = status_file(job_folder(self.outbox, name))
            if plain_name(name, is_dir=True) and is_real_dir(path.parent) and is_real_file(path):
                try:
                    found[name] = self.control.with_request(read_status(path))
                except (OSError, ValueError):  # being replaced on a share, or foreign: left out of the list
                    continue
        for job in claimed_jobs(self.state):
            if job.job_id not in found:
                found[job.job_id] = self.control.queued(job.job_id, job.name, job.folder, job.claimed_at, job.path)
        try:
            candidates = scan_inbox(self.inbox, self.state)
        except FileNotFoundError:
            candidates = []
        waiting = read_waiting_jobs(self.state)
        for cand in candidates:
            if cand.name not in found:
                found[cand.name] = self.control.queued(
                    cand.name, cand.name, cand.path, _mtime(cand.path), waiting=waiting
                )
        return sorted(found.values(), key=sort_key, reverse=True)

    def page(self, page: int, page_size: int) -> tuple[list[JobStatus], int]:
        """One page (1-based) of jobs, newest first, and the total number of jobs."""
        statuses = self.all_statuses()
        start = (max(1, page) - 1) * page_size
        return statuses[start : start + page_size], len(statuses)

    def signatures(self, job_id: str | None = None) -> dict[str, tuple[int, int]]:
        """A cheap fingerprint per job (status.json mtime and size; inbox/claim folders by mtime) to notice changes."""
        sigs: dict[str, tuple[int, int]] = {}

        def add(name: str, path: Path) -> None:
            try:
                st = os.lstat(path)
            except OSError:
                return
            sigs.setdefault(name, (st.st_mtime_ns, st.st_size))

        if job_id is not None:
            if not plain_name(job_id, is_dir=True):
                return sigs
            add(job_id, status_file(job_folder(self.outbox, job_id)))
            add(job_id, claim_folder(self.state, job_id))
            add(job_id, self.inbox / job_id)
            return sigs
        try:
            for name in os.listdir(self.outbox):
                if plain_name(name, is_dir=True):
                    add(name, status_file(job_folder(self.outbox, name)))
        except FileNotFoundError:
            pass
        for job in claimed_jobs(self.state):
            add(job.job_id, job.path)
        try:
            for cand in scan_inbox(self.inbox, self.state):
                add(cand.name, cand.path)
        except FileNotFoundError:
            pass
        return sigs

    def machine(self) -> Machine:
        claimed: list[ClaimedJob] = claimed_jobs(self.state)
        loose: list[str] = []
        try:
            queued = len(scan_inbox(self.inbox, self.state, on_loose=loose.append))
        except FileNotFoundError:
            queued = 0
        intake = self.control.intake()
        return Machine(
            engine=self.control.engine_name(),
            busy=bool(claimed),
            current=claimed[0].job_id if claimed else None,
            queued=queued,
            workers=len(self.control.renderers()),
            farm=bool(self.settings.queue.broker),
            ignored=tuple(sorted(loose)),
            paused=intake.paused is not None,
            waits_for=intake.waits_for,
            hours=str(intake.hours),
        )


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(os.lstat(path).st_mtime, timezone.utc)


def sort_key(status: JobStatus) -> tuple[datetime, str]:
    when = status.claimed or status.created or status.updated or datetime.min.replace(tzinfo=timezone.utc)
    return when, status.job_id
