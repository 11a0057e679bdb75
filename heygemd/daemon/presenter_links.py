"""The library presenters a job names (job.toml ``presenters``), put into the job when it is claimed.

Each named presenter's file is hard-linked into the claimed job's ``input/`` (copied where the file system, or the
file's permissions, refuse a link), so a presenter renamed, deleted or added to the library while the job waits or
renders changes nothing, a restart after SIGKILL resumes with the same files, and the archive keeps what was
rendered for a retry. What each name became is recorded in the claim folder's ``library.json``
(:class:`PresenterLinks`): the file linked (its size and modification time too) and the presenter's options as they
were, or the error its video fails with: NO_SUCH_PRESENTER (listing the presenters there are), or the presenter's
own (a link, a failed preparation, a bad toml).

A hard link is the library's file itself: a library file overwritten in place (truncated and written again, as a
copy "replacing" it over SMB does) changes the job's too. The worker compares the file it renders with the record
(:meth:`LinkedPresenter.check`) before the render and before its output is put in place; a changed one fails its
video with PRESENTER_CHANGED.

The step is idempotent, so it can run at the claim and again when the job starts (a claim cut short by a kill):
files are linked into ``linking/`` first, then the record is written, then they move into ``input/``; a record
found means the choice is made, and only its moves are finished.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from heygemd import layout
from heygemd.daemon.jobs import JOB_TOML, MAX_JOB_TOML_BYTES, load_options
from heygemd.daemon.library import (
    FileIdentity,
    LibraryFile,
    PresenterOptions,
    PresenterStatus,
    load_presenter_options,
    named,
    open_presenter_file,
    read_library_status,
    scan_library,
    shown,
    unknown_presenter,
)
from heygemd.daemon.status import ErrorStatus
from heygemd.errors import DiskFull, HeygemdError, NoSuchPresenter, PresenterChanged
from heygemd.fsutil import (
    NO_SPACE_ERRNOS,
    InputFile,
    atomic_write_bytes,
    fd_path,
    fsync_dir,
    own_dir,
    read_regular,
    remove_tree,
)
from heygemd.names import unique_name
from heygemd.settings import Settings

log = structlog.get_logger("heygemd.library")

MAX_LINKS_BYTES = 16 << 20


MTIME_SLACK_NS = 1_000_000_000
"""How far a linked file's modification time may differ from the record and still be the same: in a farm the claim
records it through one host's mount of the NAS and a worker reads it through its own, where the protocol may keep
less than nanoseconds (SMB 100 ns, SFTP whole seconds). What goes unseen is an overwrite keeping the size and
writing (or setting) a time within a second of the old one: a presenter is linked once its copy settled, so a later
write is later than that, and a copy that keeps its source's time and size is most likely the same file."""


class LinkedPresenter(BaseModel):
    """One presenter a job named."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="The presenter (the library's spelling when found, else as the job named it).")
    file: str | None = Field(None, description="Its file in the job's input/ (None: it could not be put there).")
    library_file: str | None = Field(None, description="The library file it came from, as users know it.")
    copied: bool = Field(False, description="Copied, not hard-linked (another file system, or not allowed).")
    identity: FileIdentity | None = Field(
        None, description="The library file (and its toml) as it was linked: its size and modification time then."
    )
    options: PresenterOptions = PresenterOptions()
    error: ErrorStatus | None = Field(None, description="What its video fails with.")

    def matches(self, info: os.stat_result) -> bool:
        """Whether ``info`` (of its file in the job) is the file as it was put there. A copy is the job's own: it
        always is. A hard link is the library's file: one overwritten in place since has another size or time.
        Times are compared to within a second (:data:`MTIME_SLACK_NS`)."""
        if self.copied or self.identity is None:  # a record made before identities were kept: nothing to compare
            return True
        return info.st_size == self.identity.size and abs(info.st_mtime_ns - self.identity.mtime_ns) < MTIME_SLACK_NS

    def check(self, video: InputFile) -> None:
        """Raise PresenterChanged, naming the library file, when ``video`` (its file in the job, open) is no longer
        the file linked at the claim (:meth:`matches`)."""
        info = os.fstat(video.fd)
        if self.matches(info):
            return
        assert self.identity is not None  # else it matches
        raise PresenterChanged(
            f"the presenter {self.name!r} was overwritten in the library after this job took it "
            f"({self.identity.size:,} bytes modified {_utc(self.identity.mtime_ns)} then, {info.st_size:,} bytes "
            f"modified {_utc(info.st_mtime_ns)} now); no video is made of a file that changed",
            path=self.library_file or self.name,
        )


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class PresenterLinks(BaseModel):
    """A claim folder's ``library.json``."""

    presenters: list[LinkedPresenter] = Field(default_factory=list)

    def of_file(self, file: str) -> LinkedPresenter | None:
        """The presenter whose file in ``input/`` is ``file`` (None: one of the job's own files)."""
        return next((p for p in self.presenters if p.file == file), None)

    @property
    def failed(self) -> list[LinkedPresenter]:
        """The presenters that could not be put into the job: their videos fail with their errors."""
        return [p for p in self.presenters if p.file is None]

    def shown_files(self) -> dict[str, str]:
        """Each linked file (its name in ``input/``) and the library file it came from, as users know it."""
        return {p.file: p.library_file for p in self.presenters if p.file and p.library_file}


def read_links(claim: Path) -> PresenterLinks | None:
    """The claim folder's record, or None when there is none (or it is not heygemd's: then it is made again)."""
    try:
        return PresenterLinks.model_validate_json(read_regular(layout.links_file(claim), max_bytes=MAX_LINKS_BYTES))
    except (OSError, HeygemdError, ValidationError, ValueError):
        return None


def named_presenters(folder: Path, *, max_toml_bytes: int = MAX_JOB_TOML_BYTES) -> list[str] | str | None:
    """What the job folder's job.toml names in ``presenters`` (None when nothing, or when job.toml cannot be read:
    the job then fails with that problem, as it would without presenters)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    toml = next((Path(folder) / n for n in sorted(names) if n.casefold() == JOB_TOML), None)
    if toml is None:
        return None
    try:
        return load_options(toml, max_bytes=max_toml_bytes).presenters
    except HeygemdError:
        return None


def link_presenters(
    claim: Path,
    library: Path | None,
    state_dir: Path,
    *,
    ready_marker: str = ".ready",
    max_toml_bytes: int = MAX_JOB_TOML_BYTES,
) -> PresenterLinks:
    """Put the presenters the claimed job (``claim``: ``<state>/claimed/<id>``) names into its ``input/`` and return
    the record (see the module docstring); the record already made, when there is one. DiskFull when a copy finds no
    room (the job pauses); another OSError (the library unreadable) passes through and the step is tried again."""
    done = read_links(claim)
    if done is not None:
        _move_in(claim, done)
        return done
    inputs = layout.inputs(claim)
    wanted = named_presenters(inputs, max_toml_bytes=max_toml_bytes)
    if not wanted:
        return PresenterLinks()
    try:
        files = scan_library(library, ready_marker=ready_marker) if library is not None else []
    except (FileNotFoundError, NotADirectoryError):
        files = []
    known = read_library_status(state_dir)
    remove_tree(layout.linking_dir(claim))
    staging = own_dir(claim, layout.LINKING_DIR)
    used = {name.casefold() for name in os.listdir(inputs)}
    linked: list[LinkedPresenter] = []
    for name, found in named(files, wanted):
        if found is None:
            linked.append(
                LinkedPresenter(name=name, error=ErrorStatus.from_info(unknown_presenter(name, files, library).info()))
            )
            continue
        assert library is not None  # found in it
        linked.append(_link_one(found, library, staging, used, known.entry(found.name)))
    record = PresenterLinks(presenters=linked)
    atomic_write_bytes(layout.links_file(claim), record.model_dump_json(indent=2).encode("utf-8"))
    _move_in(claim, record)
    for entry in linked:
        if entry.error is not None:
            log.warning("job.presenter_failed", claim=claim.name, presenter=entry.name, code=entry.error.code)
    return record


def _link_one(
    found: LibraryFile, library: Path, staging: Path, used: set[str], known: PresenterStatus | None
) -> LinkedPresenter:
    """Link (or copy) one presenter's file into ``staging``, or say why its video fails (``known``: its state in
    presenters.json: a preparation that failed for this very file fails the video the same way)."""
    where = str(shown(library, found.file))
    if found.problem is not None:
        return LinkedPresenter(name=found.name, library_file=where, error=ErrorStatus.from_info(found.problem))
    if known is not None and known.state == "failed" and known.error is not None and known.identity == found.identity:
        return LinkedPresenter(name=found.name, library_file=where, error=known.error)
    try:
        options = load_presenter_options(library, found)
        fd = open_presenter_file(library, found.file)  # in the library folder itself, never through a link to it
    except HeygemdError as exc:
        return LinkedPresenter(name=found.name, library_file=where, error=ErrorStatus.from_info(exc.info()))
    except FileNotFoundError:  # removed since the scan
        gone = NoSuchPresenter(f"the presenter {found.name!r} was removed from the library", path=Path(library.name))
        return LinkedPresenter(name=found.name, error=ErrorStatus.from_info(gone.info()))
    try:
        target = staging / unique_name(found.file, used)
        copied = _link_or_copy(fd, target, found.name)
        info = os.fstat(fd)  # the file linked, as it is now (the scan saw it a moment before)
    finally:
        os.close(fd)
    identity = found.identity.model_copy(update={"size": info.st_size, "mtime_ns": info.st_mtime_ns})
    return LinkedPresenter(
        name=found.name, file=target.name, library_file=where, copied=copied, identity=identity, options=options
    )


LINK_REFUSALS = frozenset({errno.EXDEV, errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EMLINK, errno.EOPNOTSUPP})
"""Why a hard link may be refused where a copy still works: another file system, ``fs.protected_hardlinks`` (a
file heygemd's user may not write), a file system without links, too many links."""


def _link_or_copy(fd: int, target: Path, name: str) -> bool:
    """Hard-link the very file open as ``fd`` to ``target``, or copy it there; True when copied."""
    # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N links the open file itself; Python passes that flag only when
    # given a folder descriptor (else it calls link(), which would link the /proc entry), hence the anchor
    anchor = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(fd_path(fd), target, src_dir_fd=anchor, follow_symlinks=True)
        return False
    except OSError as exc:
        if exc.errno not in LINK_REFUSALS:
            raise
    finally:
        os.close(anchor)
    try:
        with os.fdopen(os.dup(fd), "rb") as source, open(target, "xb") as out:
            source.seek(0)
            shutil.copyfileobj(source, out, 4 << 20)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        target.unlink(missing_ok=True)
        if exc.errno in NO_SPACE_ERRNOS:
            raise DiskFull(
                f"no space left to copy the presenter {name!r} into the job",
                path=target.parent.parent,
                hint="Free space on the inbox share, or put the presenter library on the inbox's file system "
                "(then presenters are hard-linked, not copied).",
            ) from None
        raise
    return True


def _move_in(claim: Path, record: PresenterLinks) -> None:
    """Move the linked files of ``record`` from ``linking/`` into ``input/`` (those not moved yet), then remove
    ``linking/``."""
    staging, inputs = layout.linking_dir(claim), layout.inputs(claim)
    moved = False
    for entry in record.presenters:
        if entry.file is None:
            continue
        source = staging / entry.file
        if os.path.lexists(source) and not os.path.lexists(inputs / entry.file):
            os.rename(source, inputs / entry.file)
            moved = True
    remove_tree(staging)
    if moved:
        fsync_dir(inputs)


@dataclass(frozen=True)
class Linker:
    """:func:`link_presenters` with a daemon's settings, for the claim and for the worker's start of a job."""

    library: Path | None
    ready_marker: str = ".ready"
    max_toml_bytes: int = MAX_JOB_TOML_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> "Linker":
        return cls(settings.paths.presenters_dir, settings.intake.ready_marker, settings.intake.max_job_toml_bytes)

    def __call__(self, claim: Path) -> PresenterLinks:
        return link_presenters(
            claim,
            self.library,
            layout.state_of(claim),
            ready_marker=self.ready_marker,
            max_toml_bytes=self.max_toml_bytes,
        )
