"""Every folder and file heygemd keeps on disk, by name, in one place: the inbox's state folder and a job's outbox
folder. Other modules ask here for a path; none spells these names itself.

The state folder (``paths.state``, by default ``<inbox>/.heygemd``, on the inbox's filesystem so a job moves in
by one rename)::

    claimed/<job-id>/           a job taken out of the inbox (daemon.claims), until it has finished
        claim.json              who took it when (and who runs it now)
        input/                  the user's job folder, renamed here whole
        cancel.json             a cancel request (daemon.cancel), if any
        library.json            the library presenters its job.toml names and the files linked for them
                                (daemon.presenter_links); linking/ while they are being linked
    archive/<YYYY-MM-DD>/<job-id>/   a finished job's claim folder, kept for a retry (pruned after
                                     ``outbox.archive_retention_days``)
    kept/<job-id>/              the same, never pruned (``outbox.inputs_after = "keep"``)
    trash/<job-id>/             inputs being deleted (renamed here first, so a kill never leaves half a job claimed)
    uploads/<random>/           a job being put together before its one rename into the inbox (daemon.staging)
    waiting.json                what the inbox's unready jobs wait for (daemon.waiting)
    renderers/<host>-<pid>.json the heartbeat of each process that renders here (daemon.presence)
    callbacks/pending/, callbacks/sending/   callback deliveries not yet done (notify.callbacks)
    idempotency/<hash>/         the answer to a request made with an Idempotency-Key (idempotency)
    paused.json                 the intake is paused (`heygemd pause`; daemon.schedule): who paused it, since when
    notes/<job-name>            what is known of an inbox job beyond its folder (daemon.notes): who submitted it,
                                its priority when changed; moved into the job's claim.json when it is claimed
    users.json                  the accounts of the web server and their API keys, as hashes only (accounts);
    users.json.lock             taken while users.json is rewritten
    presenters.json             the presenter library's state: each presenter preparing, ready or failed
                                (daemon.library)
    presenters.lock             taken while a presenter is added to or removed from the library
    posters/<name>.jpg          each library presenter's poster

(``paths.cache``, the face-track and presenter cache, is by default ``<state>/cache``: a setting, see settings.py.)

A job's outbox folder (``outbox/<job-id>/``, daemon.outbox)::

    status.json                 the truth about the job (daemon.status)
    job.log                     its log lines
    <output>.mp4, <output>.jpg  each video's output and poster, named by ``outbox.naming`` (names.output_name,
                                names.POSTER_SUFFIX)

and ``outbox/.heygemd-trash/``, where a deleted job's outbox folder goes for a moment before it is removed.

The state's sub-folders are heygemd's own: each is made and checked right before use (``fsutil.own_dir``: a link
there is refused, never followed) and listed without walking into links (``fsutil.own_subdirs``).
"""

from __future__ import annotations

import os
from pathlib import Path

from heygemd.fsutil import own_dir, own_subdirs

CLAIMED = "claimed"
CLAIM_FILE = "claim.json"
INPUT_DIR = "input"
CANCEL_FILE = "cancel.json"
ARCHIVE = "archive"
KEPT = "kept"
TRASH = "trash"
UPLOADS = "uploads"
WAITING_FILE = "waiting.json"
RENDERERS = "renderers"
CALLBACKS = "callbacks"
CALLBACKS_PENDING = "pending"
CALLBACKS_SENDING = "sending"
IDEMPOTENCY = "idempotency"
PAUSE_FILE = "paused.json"
NOTES = "notes"
USERS_FILE = "users.json"
USERS_LOCK = "users.json.lock"
PRESENTERS_FILE = "presenters.json"
LIBRARY_LOCK = "presenters.lock"
POSTERS = "posters"
POSTER_EXTENSION = ".jpg"
LINKS_FILE = "library.json"
LINKING_DIR = "linking"

STATUS_FILE = "status.json"
LOG_FILE = "job.log"
OUTBOX_TRASH = ".heygemd-trash"
"""Where deleted outbox folders go for a moment (renamed, then removed) so a half-done delete is never a job."""


# ---------------------------------------------------------------------------------------------- claims


def claims_root(state_dir: Path) -> Path:
    """``<state>/claimed``, made if missing (a link: ConfigError)."""
    return own_dir(state_dir, CLAIMED)


def claim_folders(state_dir: Path) -> list[Path]:
    """Every real folder in ``<state>/claimed`` (claims and reservations; links are never followed)."""
    return own_subdirs(state_dir, CLAIMED)


def claim_folder(state_dir: Path, job_id: str) -> Path:
    """``<state>/claimed/<job-id>``: where the claim of ``job_id`` is while the job has not finished."""
    return Path(state_dir) / CLAIMED / job_id


def claim_file(claim: Path) -> Path:
    """A claim folder's ``claim.json``."""
    return Path(claim) / CLAIM_FILE


def inputs(claim: Path) -> Path:
    """A claim folder's ``input/``: the user's job folder (also in an archived or kept claim folder)."""
    return Path(claim) / INPUT_DIR


def cancel_file(claim: Path) -> Path:
    """A claim folder's ``cancel.json``."""
    return Path(claim) / CANCEL_FILE


def links_file(claim: Path) -> Path:
    """A claim folder's ``library.json``: the library presenters linked into its ``input/``."""
    return Path(claim) / LINKS_FILE


def linking_dir(claim: Path) -> Path:
    """A claim folder's ``linking/``, where presenter files are linked before they move into ``input/``."""
    return Path(claim) / LINKING_DIR


def state_of(claim: Path) -> Path:
    """The state folder a claim folder ``<state>/claimed/<job-id>`` is in."""
    return Path(claim).parent.parent


# ---------------------------------------------------------------------------------------------- finished inputs


def archive_day(state_dir: Path, day: str) -> Path:
    """``<state>/archive/<day>`` (``YYYY-MM-DD``), made if missing."""
    return own_dir(state_dir, ARCHIVE, day)


def archive_days(state_dir: Path) -> list[Path]:
    """The day folders of the archive (real folders only)."""
    return own_subdirs(state_dir, ARCHIVE)


def kept_root(state_dir: Path) -> Path:
    """``<state>/kept``, made if missing."""
    return own_dir(state_dir, KEPT)


def finished_claims(state_dir: Path, job_id: str) -> list[Path]:
    """The archived and kept claim folders that may be ``job_id``'s: named ``job_id`` or, where the name was
    taken that day, ``job_id-2``... (``names.free_path``). Their claim.json says which one is."""
    state = Path(state_dir)
    candidates = [p for day in archive_days(state) for p in own_subdirs(state, ARCHIVE, day.name)]
    candidates += own_subdirs(state, KEPT)
    return [folder for folder in candidates if folder.name.startswith(job_id)]


def trash_root(state_dir: Path) -> Path:
    """``<state>/trash``, made if missing."""
    return own_dir(state_dir, TRASH)


def trash_folders(state_dir: Path) -> list[Path]:
    """What is in ``<state>/trash`` (deletes a kill cut short)."""
    return own_subdirs(state_dir, TRASH)


# ---------------------------------------------------------------------------------------------- the rest of the state


def uploads_root(state_dir: Path, *, create: bool = True) -> Path:
    """``<state>/uploads``, where jobs are put together before they enter the inbox (made if missing unless
    ``create`` is False)."""
    return own_dir(state_dir, UPLOADS) if create else Path(state_dir) / UPLOADS


def waiting_file(state_dir: Path) -> Path:
    """``<state>/waiting.json``."""
    return Path(state_dir) / WAITING_FILE


def renderers_root(state_dir: Path) -> Path:
    """``<state>/renderers``, made if missing (a link: ConfigError)."""
    return own_dir(state_dir, RENDERERS)


def renderer_file(state_dir: Path, host: str, pid: int) -> Path:
    """``<state>/renderers/<host>-<pid>.json``: the heartbeat of process ``pid`` on ``host``."""
    return Path(state_dir) / RENDERERS / f"{host.replace('/', '_')}-{pid}.json"


def renderer_files(state_dir: Path) -> list[Path]:
    """The heartbeat files in ``<state>/renderers`` (none while it is missing; a link there is never followed)."""
    folder = Path(state_dir) / RENDERERS
    if folder.is_symlink():
        return []
    try:
        with os.scandir(folder) as it:
            names = [e.name for e in it if e.name.endswith(".json") and e.is_file(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [folder / name for name in sorted(names)]


def shown_path(folder: Path, inbox: Path) -> str:
    """A folder of the state as the inbox's users see it on their share, e.g.
    ``inbox/.heygemd/archive/2026-12-06/lesson-01/input/`` (the default state folder is inside the inbox); a
    folder elsewhere by its full path."""
    try:
        inside = Path(folder).relative_to(inbox)
    except ValueError:
        return f"{folder}/"
    return f"{Path(inbox).name}/{inside.as_posix()}/"


def pause_file(state_dir: Path) -> Path:
    """``<state>/paused.json``: present while the intake is paused."""
    return Path(state_dir) / PAUSE_FILE


def notes_root(state_dir: Path, *, create: bool = True) -> Path:
    """``<state>/notes``, where the notes of inbox jobs are (made if missing unless ``create`` is False)."""
    return own_dir(state_dir, NOTES) if create else Path(state_dir) / NOTES


def users_file(state_dir: Path) -> Path:
    """``<state>/users.json``: the web server's accounts (hashes only)."""
    return Path(state_dir) / USERS_FILE


def users_lock(state_dir: Path) -> Path:
    """``<state>/users.json.lock``: held while users.json is read, changed and written again."""
    return Path(state_dir) / USERS_LOCK


# ---------------------------------------------------------------------------------------------- the presenter library


def presenters_file(state_dir: Path) -> Path:
    """``<state>/presenters.json``: the state of every library presenter."""
    return Path(state_dir) / PRESENTERS_FILE


def library_lock(state_dir: Path) -> Path:
    """``<state>/presenters.lock``: held while a presenter is added to or removed from the library."""
    return Path(state_dir) / LIBRARY_LOCK


def posters_root(state_dir: Path) -> Path:
    """``<state>/posters``, made if missing (a link: ConfigError)."""
    return own_dir(state_dir, POSTERS)


def poster_file(state_dir: Path, name: str) -> Path:
    """``<state>/posters/<name>.jpg``: the poster of the library presenter ``name`` (a plain name)."""
    return Path(state_dir) / POSTERS / f"{name}{POSTER_EXTENSION}"


# ---------------------------------------------------------------------------------------------- the outbox


def job_folder(outbox: Path, job_id: str) -> Path:
    """``outbox/<job-id>``: where the job's results are."""
    return Path(outbox) / job_id


def status_file(job_dir: Path) -> Path:
    """A job outbox folder's ``status.json``."""
    return Path(job_dir) / STATUS_FILE


def log_file(job_dir: Path) -> Path:
    """A job outbox folder's ``job.log``."""
    return Path(job_dir) / LOG_FILE


def outbox_trash(outbox: Path) -> Path:
    """``outbox/.heygemd-trash`` (not made here: the outbox is the users', a delete makes it with own_dir)."""
    return Path(outbox) / OUTBOX_TRASH
