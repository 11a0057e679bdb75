"""The presenter library: a folder of presenter videos and photos (``[paths] presenters``, by default
``models/presenters/``), one presenter per file, which jobs name (job.toml ``presenters``) instead of carrying them::

    models/presenters/
      anna.mp4          a presenter (a video or a photo); its name is the file's stem, made safe as a job name is
      anna.toml         optional: display_name, face, loop_mode, engine, notes (:class:`PresenterOptions`)
      anna.mp4.ready    optional, made after the copy: the file is taken at once instead of settling first

Only regular files directly in the folder are presenters: a link is never followed (its presenter fails with
UNSAFE_PATH), sub-folders, junk and files still being copied (``*.part``) are passed over, and a file is only ever
read through :func:`heygemd.fsutil.open_regular`, in the library folder opened itself (:func:`library_folder`: a
library folder that is a link is not followed). Two files making one name (``anna.mp4`` and ``anna.mov``) fail
that name with PRESENTER_AMBIGUOUS. Names compare as a Windows share does, ignoring case (and, as a Mac writes them
decomposed, Unicode normalisation: :func:`name_key`).

Each presenter's state (``preparing``, ``ready`` or ``failed``, what was found, which engines it is ready for) lives
in ``<state>/presenters.json`` (:class:`LibraryStatus`), written whole and atomically by the process that prepares
presenters (:mod:`heygemd.daemon.preparation`); :func:`view` joins it with the folder as it is now for the CLI, the
pages and the API. No torch/cv2 here: ``heygemd presenters`` and the web server import this module.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tomllib
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from heygemd import layout
from heygemd.daemon.jobs import job_toml, natural_key, parse_toml
from heygemd.daemon.status import ErrorStatus, utc_now
from heygemd.engine_names import EngineName
from heygemd.errors import (
    AmbiguousPresenter,
    BadPresenterOptions,
    ErrorInfo,
    HeygemdError,
    NoSuchPresenter,
    NotRegularFile,
    PresenterExists,
    UnsafePath,
)
from heygemd.fsutil import (
    atomic_write_bytes,
    fsync_dir,
    is_real_dir,
    open_regular,
    own_dir,
    read_regular,
    real_folder,
)
from heygemd.names import (
    NameKind,
    classify_name,
    encodable_name,
    is_presenter,
    plain_basename,
    plain_name,
    temp_path,
)
from heygemd.settings import FaceChoice, LoopMode, Settings

OPTIONS_SUFFIX = ".toml"
MAX_PRESENTERS = 2000
"""The most presenters a library has (the first, in name order): a folder flooded with files (a one-byte file is
a presenter until it is prepared) costs the daemon a bounded time at each round, and presenters.json stays small."""
MAX_OPTIONS_BYTES = 64 * 1024
MAX_STATUS_BYTES = 64 << 20
"""presenters.json is a few kB per presenter; a larger file is not heygemd's and is not read."""
SCHEMA_VERSION = 1

PresenterState = Literal["preparing", "ready", "failed"]
PresenterStage = Literal["waiting", "queued", "detecting", "preparing", "poster"]
"""What a presenter that is ``preparing`` is at: ``waiting`` (its copy is not finished, or the daemon has not looked
at it yet), ``queued`` (waiting for the renderer to be free), ``detecting`` (its face track), ``preparing`` (the
engines' preparations), ``poster``."""


class PresenterOptions(BaseModel):
    """``<name>.toml`` beside a presenter's file; every key optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    display_name: str | None = Field(None, max_length=200, description="The name people see (default: the name).")
    face: FaceChoice | None = Field(
        None, description="Which face to follow when several are in view: largest, left, right or centre."
    )
    loop_mode: LoopMode | None = Field(None, description="pingpong or loop, when the audio is longer than the video.")
    engine: EngineName | None = Field(None, description="The engine that renders it when the job names none.")
    notes: str | None = Field(None, max_length=4000, description="Free text: where it was recorded, by whom.")


class FileIdentity(BaseModel):
    """What a preparation was made of: the presenter's file and its options file as they were (a change of either
    means the presenter is prepared again)."""

    model_config = ConfigDict(frozen=True)

    file: str
    size: int
    mtime_ns: int
    options: tuple[int, int] | None = None
    """Size and mtime (ns) of ``<name>.toml``; None without one."""


class PresenterStatus(BaseModel):
    """One presenter of the library, as ``presenters.json`` and ``GET /api/presenters/{name}`` give it."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(description="What jobs call it (job.toml presenters): the file's stem, made safe.")
    file: str = Field(description="Its file in the library.")
    state: PresenterState = "preparing"
    stage: PresenterStage | None = Field("waiting", description="While preparing: what it is at.")
    progress: float = Field(0.0, ge=0, le=1, description="While preparing: how far, 0..1.")
    waiting_for: str | None = Field(None, description="While waiting: for what (a copy not finished, ...).")
    display_name: str | None = None
    notes: str | None = None
    options: PresenterOptions = PresenterOptions()
    identity: FileIdentity | None = Field(None, description="The file (and its toml) this state is about.")
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    still: bool | None = Field(None, description="A photo (a still image) rather than a video.")
    face_ratio: float | None = Field(None, ge=0, le=1, description="Fraction of frames in which the face was found.")
    warnings: list[ErrorStatus] = Field(default_factory=list, description="The footage's problems that fail nothing.")
    error: ErrorStatus | None = Field(None, description="Why it failed (a job naming it fails that video with it).")
    engines: list[str] = Field(default_factory=list, description="The installed engines it is prepared for.")
    face_track: Literal["cached", "computed"] | None = Field(
        None, description="Whether its preparation found the face track already cached."
    )
    cache_files: list[str] = Field(
        default_factory=list, description="Its engine preparations in <cache>/presenter/ (kept while it is here)."
    )
    poster: str | None = Field(None, description="Its poster's file name in <state>/posters/, once made.")
    prepared: AwareDatetime | None = Field(None, description="When it became ready or failed.")
    prepared_by: str | None = Field(None, description="The host (and farm worker) that prepared it.")
    seconds: float | None = Field(None, ge=0, description="How long its preparation took.")
    timings: dict[str, float] = Field(
        default_factory=dict, description="Seconds per stage of its preparation: decode, detect, prepare, poster, total"
    )

    @property
    def shown_name(self) -> str:
        return self.display_name or self.name


class LibraryStatus(BaseModel):
    """``<state>/presenters.json``."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = SCHEMA_VERSION
    updated: AwareDatetime | None = None
    presenters: list[PresenterStatus] = Field(default_factory=list)

    def entry(self, name: str) -> PresenterStatus | None:
        return next((p for p in self.presenters if p.name == name), None)

    def by_name(self) -> dict[str, PresenterStatus]:
        """Every entry by its name: for looking up many (:meth:`entry` looks through the list)."""
        return {p.name: p for p in self.presenters}


# ---------------------------------------------------------------------------------------------- the folder


@dataclass(frozen=True)
class LibraryFile:
    """One presenter as the folder holds it now."""

    name: str
    file: str
    size: int
    mtime_ns: int
    options_file: str | None = None
    options_stamp: tuple[int, int] | None = None
    changed_ns: int = 0
    """The newest of its mtime and ctime (when it arrived, for a copy that kept an old mtime)."""
    marker_ns: int | None = None
    """Modification time of ``<file><ready marker>``, when there is one."""
    problem: ErrorInfo | None = None
    """Why it cannot be a presenter at all (a link, not a regular file, two files for one name)."""

    @property
    def identity(self) -> FileIdentity:
        return FileIdentity(file=self.file, size=self.size, mtime_ns=self.mtime_ns, options=self.options_stamp)

    @property
    def marked(self) -> bool:
        """The ready marker was made after the file was last written: the copy is complete."""
        return self.marker_ns is not None and self.marker_ns >= self.mtime_ns


def safe_name(raw: str) -> str | None:
    """``raw`` made safe as an uploaded job's name is (``plain_basename``); None when nothing usable is left."""
    name = plain_basename(raw)
    return name if plain_name(name, is_dir=True) else None


def name_key(name: str) -> str:
    """What two presenter names that are the same to a person share: the name composed (NFC, as Windows and Linux
    write it; a Mac writes ``ë`` as ``e`` and a combining mark) and case-folded."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


def presenter_name(file_name: str) -> str | None:
    """The presenter a library file makes: its stem, made safe (:func:`safe_name`)."""
    return safe_name(Path(file_name).stem)


def shown(folder: Path, file: str) -> Path:
    """A library file as the user knows it: ``presenters/anna.mp4`` (the library folder's name and the file)."""
    return Path(Path(folder).name) / file


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _problem(folder: Path, file: str, mode: int) -> ErrorInfo | None:
    path = Path(folder) / file
    if stat.S_ISLNK(mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return UnsafePath(
            f"is a symbolic link to {target}; it is not followed",
            path=shown(folder, file),
            hint="Copy the video itself into the presenter library; heygemd does not follow links.",
        ).info()
    for test, kind in _KINDS:
        if test(mode):
            return NotRegularFile(
                f"is {kind}, not a regular file",
                path=shown(folder, file),
                hint="Copy the video or photo itself into the presenter library.",
            ).info()
    return None


def library_folder(folder: Path) -> contextlib.AbstractContextManager[int]:
    """The library ``folder`` opened as a folder itself (:func:`heygemd.fsutil.real_folder`), never through a link
    (the folder on the share replaced by a link to another: NotADirectoryError saying so); its files are opened in
    it (``dir_fd``), so a folder swapped for a link after a scan is not read through either. FileNotFoundError
    passes through."""
    if os.path.islink(folder):
        raise NotADirectoryError(errno.ENOTDIR, _not_followed(folder), str(folder))
    return real_folder(folder)


def _not_followed(folder: Path) -> str:
    return f"is a symbolic link to {os.readlink(folder)}; heygemd does not follow a link as the library"


@contextlib.contextmanager
def _opened(folder: Path) -> Iterator[int]:
    """:func:`library_folder` for opening a file in it: a library folder that is a link raises UnsafePath."""
    try:
        with library_folder(folder) as folder_fd:
            yield folder_fd
    except NotADirectoryError as exc:
        raise UnsafePath(
            exc.strerror or "is not a folder", path=Path(Path(folder).name), hint=LINKED_LIBRARY_HINT
        ) from None


def open_presenter_file(folder: Path, file: str) -> int:
    """The library file ``file`` opened by :func:`heygemd.fsutil.open_regular` in :func:`library_folder`, errors
    naming it as the user knows it (``presenters/anna.mp4``); a library folder that is a link: UnsafePath."""
    with _opened(folder) as folder_fd:
        return open_regular(shown(folder, file), dir_fd=folder_fd)


LINKED_LIBRARY_HINT = (
    "Make the library (paths.presenters) a folder itself, or set paths.presenters to the folder the link points to."
)


def scan_library(
    folder: Path,
    *,
    ready_marker: str,
    on_bad_name: Callable[[str], object] = lambda _name: None,
    on_too_many: Callable[[int], object] = lambda _count: None,
) -> list[LibraryFile]:
    """The presenters of the library ``folder``, by name (natural order), at most MAX_PRESENTERS of them (how many
    more there are is passed to ``on_too_many``). A missing folder raises FileNotFoundError (a share not mounted
    is not an empty library: the caller decides), a link NotADirectoryError (:func:`library_folder`). A video or
    photo whose name makes no presenter (not UTF-8, or nothing left once made safe) is passed to
    ``on_bad_name``."""
    folder = Path(folder)
    media: dict[str, list[tuple[str, os.stat_result]]] = defaultdict(list)
    options: dict[str, tuple[str, os.stat_result]] = {}
    markers: dict[str, int] = {}
    with library_folder(folder) as folder_fd, os.scandir(folder_fd) as it:
        entries = []
        for entry in it:
            if not encodable_name(entry.name):
                if is_presenter(Path(entry.name)):
                    on_bad_name(entry.name)
                continue
            try:
                entries.append((entry.name, entry.stat(follow_symlinks=False)))
            except FileNotFoundError:  # gone since it was listed
                continue
    for file_name, info in entries:
        if stat.S_ISDIR(info.st_mode) or classify_name(file_name) is not NameKind.NORMAL:
            continue
        path = Path(file_name)
        if is_presenter(path):
            name = presenter_name(file_name)
            if name is None:
                on_bad_name(file_name)
            else:
                media[name_key(name)].append((file_name, info))
        elif path.suffix.casefold() == OPTIONS_SUFFIX:  # a link or a FIFO too: its presenter fails, naming it
            options[name_key(path.stem)] = (file_name, info)
        elif ready_marker and file_name.endswith(ready_marker) and len(file_name) > len(ready_marker):
            markers[file_name[: -len(ready_marker)]] = info.st_mtime_ns
    for files in media.values():
        files.sort(key=lambda f: natural_key(f[0]))
    named_files = sorted(
        ((presenter_name(files[0][0]) or "", files) for files in media.values()), key=lambda n: natural_key(n[0])
    )
    if len(named_files) > MAX_PRESENTERS:
        on_too_many(len(named_files) - MAX_PRESENTERS)
    found: list[LibraryFile] = []
    for name, files in named_files[:MAX_PRESENTERS]:
        file, info = files[0]
        problem = None if stat.S_ISREG(info.st_mode) else _problem(folder, file, info.st_mode)
        if len(files) > 1:
            problem = AmbiguousPresenter(
                f"the files {', '.join(f for f, _ in files)} all make the presenter {name!r}",
                path=Path(folder.name),
            ).info()
        toml = options.get(name_key(Path(file).stem))
        found.append(
            LibraryFile(
                name=name,
                file=file,
                size=info.st_size,
                mtime_ns=info.st_mtime_ns,
                changed_ns=max(info.st_mtime_ns, info.st_ctime_ns),
                options_file=toml[0] if toml else None,
                options_stamp=(toml[1].st_size, toml[1].st_mtime_ns) if toml else None,
                marker_ns=markers.get(file),
                problem=problem,
            )
        )
    return found


def library_files(settings: Settings) -> list[LibraryFile]:
    """:func:`scan_library` of ``settings``' library; none when the folder does not exist (yet)."""
    try:
        return scan_library(settings.paths.presenters_dir, ready_marker=settings.intake.ready_marker)
    except (FileNotFoundError, NotADirectoryError):
        return []


def load_presenter_options(folder: Path, found: LibraryFile) -> PresenterOptions:
    """The options of ``found`` (its ``<name>.toml``; none without one). BadPresenterOptions names the file, the key
    and the problem; a link, a FIFO or a file over 64 KiB is refused unread, as a job.toml is."""
    if found.options_file is None:
        return PresenterOptions()
    where = shown(folder, found.options_file)
    try:
        with _opened(folder) as folder_fd:
            raw = read_regular(where, max_bytes=MAX_OPTIONS_BYTES, dir_fd=folder_fd)
        data = parse_toml(raw.decode("utf-8-sig"))
    except HeygemdError as exc:
        raise BadPresenterOptions(exc.message, hint=exc.hint) from None
    except UnicodeDecodeError as exc:
        raise BadPresenterOptions(f"not UTF-8 text ({exc.reason})", path=where) from None
    except tomllib.TOMLDecodeError as exc:
        raise BadPresenterOptions(f"not valid TOML: {exc}", path=where) from None
    try:
        return PresenterOptions.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"'{'.'.join(str(p) for p in e['loc'])}': "
            + ("unknown option" if e["type"] == "extra_forbidden" else e["msg"])
            for e in exc.errors()
        )
        raise BadPresenterOptions(problems, path=where) from None


def asks_for(asked: str, name: str) -> bool:
    """Whether asking for the presenter ``asked`` (a job.toml, a request, the CLI) means the presenter ``name``: the
    same name ignoring case and Unicode normalisation (:func:`name_key`), also once ``asked`` is made safe as file
    names are (``CON``, the file CON.mp4, is the presenter ``_CON``)."""
    return name_key(name) in {name_key(asked), name_key(safe_name(asked) or asked)}


Named = TypeVar("Named", LibraryFile, PresenterStatus)


def find(items: Sequence[Named], name: str) -> Named | None:
    """The presenter ``name`` of ``items`` (exactly, else as :func:`asks_for` says), or None."""
    exact = [f for f in items if f.name == name]
    loose = [f for f in items if asks_for(name, f.name)]
    return exact[0] if exact else loose[0] if loose else None


LISTED_NAMES = 40
"""NO_SUCH_PRESENTER lists at most this many of the presenters there are."""


def unknown_presenter(name: str, files: list[LibraryFile], folder: Path | None) -> NoSuchPresenter:
    """The error of a presenter ``name`` the library (``files``, in ``folder``) does not have, listing those it has."""
    if not files:
        there = "the presenter library is empty"
    else:
        names = [f.name for f in files]
        more = f" and {len(names) - LISTED_NAMES} more" if len(names) > LISTED_NAMES else ""
        there = "the presenters there: " + ", ".join(names[:LISTED_NAMES]) + more
    where = f" {folder.name}/" if folder is not None else ""
    return NoSuchPresenter(f"no presenter {name!r} in the library{where} ({there})")


def named(files: list[LibraryFile], wanted: list[str] | str) -> list[tuple[str, LibraryFile | None]]:
    """What a job's ``presenters`` names: each name with its file (None: no such presenter), in the job's order,
    each once; ``"all"``: every presenter of the library."""
    if wanted == "all":
        return [(f.name, f) for f in files]
    result: list[tuple[str, LibraryFile | None]] = []
    seen: set[str] = set()
    for name in wanted:
        found = find(files, name)
        key = found.name if found is not None else name_key(name)
        if key not in seen:
            seen.add(key)
            result.append((found.name if found is not None else name, found))
    return result


# ---------------------------------------------------------------------------------------------- presenters.json


# ---------------------------------------------------------------------------------------------- adding, removing


def add_to_library(
    folder: Path,
    source: Path,
    *,
    name: str,
    options: PresenterOptions,
    ready_marker: str,
    existing: list[LibraryFile],
    move: bool = False,
) -> str:
    """Put the video or photo ``source`` into the library ``folder`` as the presenter ``name``: its ``<name>.toml``
    (the options set, if any) first, then the file as ``<name><suffix>``, never over another (PresenterExists), and
    its ready marker last, so the daemon prepares it at once. ``move``: ``source`` is heygemd's own (an upload's
    staging copy): linked into place where it is on the library's file system, else copied (a copy is written under
    a hidden temporary name, then linked into place). Returns the file's name. ``existing``: the library as scanned
    just before (a name taken there is refused before anything is written)."""
    taken = find(existing, name)
    if taken is not None:
        raise PresenterExists(f"the library already has a presenter {taken.name!r} ({taken.file}); {name!r} is taken")
    folder.mkdir(parents=True, exist_ok=True)
    if os.path.islink(folder):  # nothing is written through a link
        raise UnsafePath(_not_followed(folder), path=Path(folder.name), hint=LINKED_LIBRARY_HINT)
    file = f"{name}{source.suffix.casefold()}"
    final = folder / file
    toml = folder / f"{name}{OPTIONS_SUFFIX}"
    if os.path.lexists(final) or is_real_dir(toml):  # a folder named so is passed over by the scan, but in the way
        in_the_way = final.name if os.path.lexists(final) else toml.name
        raise PresenterExists(f"the library already has a file or folder {in_the_way!r}")
    if text := job_toml(options):
        atomic_write_bytes(toml, text.encode("utf-8"))
    else:  # one left over from a presenter removed by hand holds not this presenter's options
        toml.unlink(missing_ok=True)
    temp = temp_path(final)  # hidden: the daemon never takes it for a presenter
    try:
        try:
            if not move:
                raise OSError(errno.EXDEV, "copied, not moved")
            os.link(source, temp)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP):
                raise
            with open(source, "rb") as data, open(temp, "xb") as out:
                shutil.copyfileobj(data, out, 4 << 20)
                out.flush()
                os.fsync(out.fileno())
        try:
            os.link(temp, final)  # never replaces a file another request put there meanwhile
        except FileExistsError:
            raise PresenterExists(f"the library already has a file {file!r}") from None
    finally:
        temp.unlink(missing_ok=True)
    (folder / f"{file}{ready_marker}").touch()
    fsync_dir(folder)
    return file


def remove_from_library(folder: Path, found: LibraryFile, *, ready_marker: str) -> None:
    """Remove a presenter's file, then its toml and ready marker (links are removed, never followed)."""
    os.unlink(folder / found.file)
    for extra in (found.options_file, f"{found.file}{ready_marker}"):
        if extra:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder / extra)
    fsync_dir(folder)


# ---------------------------------------------------------------------------------------------- presenters.json


def read_library_status(state_dir: Path) -> LibraryStatus:
    """``presenters.json`` (empty when it is missing, or not heygemd's: a link, a FIFO, too large, not JSON)."""
    try:
        raw = read_regular(layout.presenters_file(state_dir), max_bytes=MAX_STATUS_BYTES)
        return LibraryStatus.model_validate_json(raw)
    except (OSError, HeygemdError, ValidationError, ValueError):
        return LibraryStatus()


def write_library_status(state_dir: Path, status: LibraryStatus) -> LibraryStatus:
    """Write ``presenters.json`` whole and atomically (its ``updated`` set now); returns what was written."""
    stamped = status.model_copy(update={"updated": utc_now()})
    own_dir(state_dir)  # a link there: ConfigError, never written through
    atomic_write_bytes(layout.presenters_file(state_dir), stamped.model_dump_json(indent=2).encode("utf-8") + b"\n")
    return stamped


def unseen(found: LibraryFile, folder: Path) -> PresenterStatus:
    """The state of a presenter the daemon has not looked at yet (or not since it changed): its options, and what
    the folder alone says of it (a link, a bad toml)."""
    entry = PresenterStatus(name=found.name, file=found.file, identity=found.identity)
    try:
        if found.problem is not None:
            raise HeygemdError(found.problem.message)
        options = load_presenter_options(folder, found)
    except HeygemdError as exc:
        error = ErrorStatus.from_info(found.problem or exc.info())
        return entry.model_copy(update={"state": "failed", "stage": None, "error": error})
    described = {"display_name": options.display_name, "notes": options.notes, "options": options}
    return entry.model_copy(update={**described, "waiting_for": "the daemon has not looked at it yet"})


def view(settings: Settings) -> list[PresenterStatus]:
    """Every presenter of the library now, with its state from presenters.json where that is about the file as it
    is now, else as not looked at yet (a file the daemon has not seen, or seen before it changed). A presenter whose
    file is gone is left out, whatever presenters.json says."""
    folder = settings.paths.presenters_dir
    known = read_library_status(settings.paths.state_dir).by_name()
    shown_now: list[PresenterStatus] = []
    for found in library_files(settings):
        entry = known.get(found.name)
        if entry is not None and entry.identity == found.identity:
            shown_now.append(entry)
        else:
            shown_now.append(unseen(found, folder))
    return shown_now
