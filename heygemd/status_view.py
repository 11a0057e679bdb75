"""What ``heygemd status`` prints: a table of the jobs in the outbox (from their status.json files), the jobs still
in the inbox and what they wait for (a file, or settling), the files in the inbox that no job takes, and who
renders; or one job in detail. Every value is printed through
``names.printable``: a name with an escape sequence or a newline cannot reach the terminal or break a table.

No torch/cv2 here: ``heygemd status`` imports this module and must start fast.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from heygemd.daemon.jobs import asked_priority
from heygemd.daemon.library import PresenterStatus
from heygemd.daemon.notes import read_note
from heygemd.daemon.presence import Renderer
from heygemd.daemon.priority import effective
from heygemd.daemon.priority import shown as shown_priority
from heygemd.daemon.readiness import scan_inbox
from heygemd.daemon.schedule import IntakeState, Schedule
from heygemd.daemon.status import JobStatus, VideoStatus, read_status, utc_now
from heygemd.daemon.waiting import WaitingJobs, read_waiting_jobs, waiting_text
from heygemd.errors import JobNotFound
from heygemd.layout import STATUS_FILE, job_folder, status_file
from heygemd.names import printable


def _width(text: str) -> int:
    """Terminal columns ``text`` takes (CJK characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def _render(rows: Sequence[Sequence[str]]) -> str:
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(_width(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(_pad(cell, w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"


def _when(ts: datetime | None) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if ts is not None else "-"


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.0f}%"


def format_status_table(statuses: Iterable[JobStatus]) -> str:
    """One row per job: id, state, progress %, videos done/failed/total, done videos to review (their quality check
    asks for a look), priority, who submitted it, last update (UTC)."""
    statuses = list(statuses)
    farm = any(s.worker for s in statuses)  # a farm's jobs also say which worker (host, GPU) runs them
    rows: list[list[str]] = [
        [
            "JOB",
            "STATE",
            "PROGRESS",
            "DONE/FAILED/TOTAL",
            "REVIEW",
            "PRIORITY",
            "SUBMITTED BY",
            "UPDATED",
            *(["WORKER"] if farm else []),
        ]
    ]
    for s in statuses:
        done, failed, total = s.counts()
        rows.append(
            [
                s.job_id,
                s.state,
                _percent(s.progress),
                f"{done}/{failed}/{total}",
                str(s.videos_to_review) if s.videos_to_review else "-",
                shown_priority(s.priority),
                s.submitted_by or "-",
                _when(s.updated),
                *([_runner(s)] if farm else []),
            ]
        )
    if len(rows) == 1:
        return "no jobs\n"
    return _render(rows)


def _runner(status: JobStatus) -> str:
    """Where a farm job runs (or ran): ``worker (device)``, e.g. ``cuda-0@gpu-2 (cuda:0)``."""
    if not status.worker:
        return "-"
    return status.worker + (f" ({status.device})" if status.device else "")


def format_status_detail(status: JobStatus) -> str:
    """One job in detail: header lines, then each video with its state, progress, output, and error + hint."""
    done, failed, total = status.counts()
    head = [
        f"job       {status.job_id}" + (f"  ({status.job_name})" if status.job_name != status.job_id else ""),
        f"state     {status.state}  {_percent(status.progress)}  videos {done} done, {failed} failed, {total} total"
        + (f", {status.videos_to_review} to review" if status.videos_to_review else ""),
        f"audio     {status.audio.file if status.audio else '-'}"
        + (f"  {status.audio.duration_s:.1f}s" if status.audio and status.audio.duration_s is not None else ""),
        f"engine    {status.engine or '-'}"
        + (f"  ({status.engine_identity})" if status.engine_identity else "")
        + "".join(f"  {name} {value}" for name, value in status.engine_parameters.items()),
        f"submitted by {status.submitted_by or '-'}  priority {shown_priority(status.priority)}",
        f"host      {status.host}  pid {status.pid}  attempt {status.attempt}",
        *([f"worker    {status.worker}  device {status.device or '-'}"] if status.worker else []),
        f"claimed   {_when(status.claimed)}  started {_when(status.started)}  finished {_when(status.finished)}",
        f"updated   {_when(status.updated)}",
    ]
    if status.cancel is not None:
        head.append(
            f"cancelled {_when(status.cancel.requested)}" + (f"  by {status.cancel.by}" if status.cancel.by else "")
        )
    if status.ignored:
        head.append(f"ignored   {', '.join(status.ignored)}")
    if status.error is not None:
        head.append(f"error     [{status.error.code}] {status.error.message}")
        if status.error.hint:
            head.append(f"          hint: {status.error.hint}")
    out = "\n".join(printable(line) for line in head) + "\n"
    if status.videos:
        library = any(v.presenter for v in status.videos)  # library presenters: which, and what was found cached
        extra = ["PRESENTER", "CACHED"] if library else []
        rows = [["VIDEO", "STATE", "PROGRESS", "FRAMES", "CHECK", "OUTPUT", *extra]]
        notes: list[str] = []
        for v in status.videos:
            frames = f"{v.frames_done}/{v.frames_total}" if v.frames_total is not None else str(v.frames_done)
            progress = _percent(1.0 if v.state == "done" else v.progress)
            found = (("face", v.face_track), ("prep", v.engine_prep))
            cached = ",".join(name for name, hit in found if hit == "cached")
            own = [v.presenter or "-", cached or "-"] if library else []
            rows.append([v.input, v.state, progress, frames, _check(v), v.output or "-", *own])
            if v.error is not None:
                notes.append(f"{v.input}: [{v.error.code}] {v.error.message}")
                if v.error.hint:
                    notes.append(f"    hint: {v.error.hint}")
            for warning in v.warnings:
                notes.append(f"{v.input}: warning [{warning.code}] {warning.message}")
                if warning.hint:
                    notes.append(f"    hint: {warning.hint}")
            notes += _check_notes(v)
        out += "\n" + _render(rows)
        if notes:
            out += "\n" + "\n".join(printable(note) for note in notes) + "\n"
    return out


def _check(video: VideoStatus) -> str:
    """The CHECK cell: ``ok`` or ``review`` with the AV offset, ``error`` (the check failed), ``-`` (not checked)."""
    if video.quality is None:
        return "error" if video.quality_error is not None else "-"
    offset = f" {video.quality.av_offset_ms:+.0f}ms" if video.quality.av_offset_ms is not None else ""
    return ("review" if video.quality.review else "ok") + offset


def _check_notes(video: VideoStatus) -> list[str]:
    notes = []
    if video.quality is not None:
        notes += [f"{video.input}: check [{r.code}] {r.explanation}" for r in video.quality.reasons]
    if video.quality_error is not None:
        notes.append(f"{video.input}: check failed [{video.quality_error.code}] {video.quality_error.message}")
    if video.retry is not None:
        kept = "kept" if video.retry.kept else "not kept (the first render stays)"
        notes.append(f"{video.input}: rendered again with {video.retry.engine}: {kept}")
    return notes


def format_inbox(waits: dict[str, str], loose: Sequence[str], priorities: Mapping[str, int] | None = None) -> str:
    """The inbox jobs not taken yet, with their priority (when ``priorities`` has them) and why (``lesson-01/  high
    settling: taken in 52 s, or at once with .ready``), and the files directly in the inbox, which no job takes."""
    out = ""
    if waits and priorities is not None:
        rows = [["WAITING IN THE INBOX", "PRIORITY", "FOR"]]
        rows += [[f"{name}/", shown_priority(priorities[name]), why] for name, why in sorted(waits.items())]
        out += _render(rows)
    elif waits:
        out += _render([["WAITING IN THE INBOX", "FOR"], *([f"{name}/", why] for name, why in sorted(waits.items()))])
    if loose:
        rows = [["IGNORED IN THE INBOX", "WHY"]]
        rows += [[name, "not in a job folder: put it in one of its own (inbox/<job>/)"] for name in sorted(loose)]
        out += ("\n" if out else "") + _render(rows)
    return out


def format_renderers(renderers: Sequence[Renderer], *, farm: bool) -> str:
    """Who renders (``heygemd run on gpu-1 (musetalk, mouthwarp)``), or that nothing does and what jobs wait for."""
    if renderers:
        return "".join(printable(f"rendering: {r.described()}") + "\n" for r in renderers)
    if farm:
        return (
            "No farm worker is running: jobs wait until a `heygemd worker` starts "
            "(on a GPU host: sudo systemctl start heygemd-worker@0).\n"
        )
    return (
        "Nothing is rendering: jobs wait until `heygemd run` starts "
        "(sudo systemctl start heygemd, or heygemd run in a terminal).\n"
    )


def format_intake(state: IntakeState) -> str:
    """One line on whether the intake takes jobs: ``intake: taking jobs (hours: always)``, ``intake: paused by cli
    anna@gpu-2 since ... (heygemd resume)``, ``intake: outside the rendering hours (20:00-07:00): waits for
    20:00``."""
    hours = f"hours: {state.hours}"
    if state.paused is not None:
        line = f"intake: paused{f' by {state.paused.by}' if state.paused.by else ''} since {_when(state.paused.since)}"
        return printable(f"{line}, {hours} (`heygemd resume` to take jobs again)") + "\n"
    if state.opens_at is not None:
        return printable(f"intake: outside the rendering hours ({state.hours}): jobs {state.waits_for}") + "\n"
    return f"intake: taking jobs ({hours})\n"


def _waiting_priority(state_dir: Path | None, folder: Path) -> int:
    """The priority of the inbox job in ``folder``: as `heygemd priority` changed it, else as its job.toml asks."""
    note = read_note(state_dir, folder.name, folder) if state_dir is not None else None
    return effective(note.priority if note is not None else None, asked_priority(folder))


def show_status(
    outbox: Path,
    job_id: str | None = None,
    state_dir: Path | None = None,
    *,
    inbox: Path | None = None,
    renderers: Sequence[Renderer] | None = None,
    farm: bool = False,
    hours: Sequence[str] = (),
) -> str:
    """What ``heygemd status [JOB]`` prints: whether the intake takes jobs (``hours``: ``[intake] hours``, and the
    pause in ``state_dir``; said when there are hours or a pause), the table of every job in ``outbox``, the inbox's
    jobs that are not taken yet and why (read from ``state_dir``: what the daemon said they wait for), the files
    ``inbox`` holds outside any job folder, and who renders (``renderers``, when given); or one job in detail (of a
    job still in the inbox, also that nothing renders, when nothing does)."""
    waiting = read_waiting_jobs(state_dir) if state_dir is not None else WaitingJobs()
    loose: list[str] = []
    in_inbox: set[str] | None = None
    if inbox is not None:
        try:
            in_inbox = {c.name for c in scan_inbox(inbox, state_dir, on_loose=loose.append)}
        except FileNotFoundError:
            in_inbox = set()
    now = utc_now()
    waits = {
        name: text
        for name in {*waiting.jobs, *waiting.settling}
        if (in_inbox is None or name in in_inbox) and (text := waiting_text(name, waiting, now)) is not None
    }
    if job_id is not None:
        path = status_file(job_folder(outbox, job_id))
        if not path.is_file():
            if job_id in waits or (in_inbox is not None and job_id in in_inbox):
                idle = format_renderers(renderers, farm=farm) if renderers is not None and not renderers else ""
                return printable(f"{job_id}/ is still in the inbox, {waits.get(job_id, 'not taken yet')}") + "\n" + idle
            raise JobNotFound(f"no job {job_id!r} in the outbox {outbox} nor waiting in the inbox")
        try:
            return format_status_detail(read_status(path))
        except ValueError as exc:
            return printable(f"{path}: not a heygemd status file ({str(exc).splitlines()[0]})") + "\n"
    statuses = []
    for path in sorted(Path(outbox).glob(f"*/{STATUS_FILE}")):
        try:
            statuses.append(read_status(path))
        except (OSError, ValueError):  # a file being replaced on a share, or foreign: skip it in the overview
            continue
    out = format_status_table(sorted(statuses, key=lambda s: (s.claimed or s.updated or now, s.job_id)))
    state = Schedule(state_dir, tuple(hours)).now() if state_dir is not None else None
    if state is not None and not (state.taking and state.hours.always):
        out = format_intake(state) + out
    if waits or loose:
        priorities = None if inbox is None else {name: _waiting_priority(state_dir, inbox / name) for name in waits}
        out += "\n" + format_inbox(waits, loose, priorities)
    if renderers is not None:
        out += "\n" + format_renderers(renderers, farm=farm)
    return out


def format_presenters_table(presenters: Sequence[PresenterStatus]) -> str:
    """``heygemd presenters``: one row per library presenter: name, state, duration, size, face found, the engines
    it is ready for, and what to know: the warnings of a ready one, where a preparing one is, why one failed;
    under the table, what to do about each one that failed (its error's hint)."""
    if not presenters:
        return "the presenter library is empty: `heygemd presenters add FILE`, or copy videos into it\n"
    rows: list[list[str]] = [["NAME", "STATE", "DURATION", "SIZE", "FACE", "ENGINES", "NOTE"]]
    for p in presenters:
        if p.state == "failed" and p.error is not None:
            note = f"[{p.error.code}] {p.error.message}"
        elif p.state == "preparing":
            note = p.stage or ""
            if p.stage in ("detecting", "preparing", "poster"):
                note += f" {_percent(p.progress)}"
            if p.waiting_for:
                note += f": {p.waiting_for}"
        else:
            note = ", ".join(w.code for w in p.warnings)
        duration = "photo" if p.still else (f"{p.duration_s:.1f} s" if p.duration_s is not None else "-")
        rows.append(
            [
                p.name,
                p.state,
                duration,
                f"{p.width}x{p.height}" if p.width and p.height else "-",
                _percent(p.face_ratio) if p.face_ratio is not None else "-",
                ",".join(p.engines) or "-",
                note,
            ]
        )
    hints = [f"{p.name}: what to do: {p.error.hint}" for p in presenters if p.error is not None and p.error.hint]
    return _render(rows) + "".join(f"{printable(line)}\n" for line in hints)
