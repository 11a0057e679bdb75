"""What ``heygemd status`` prints: a table of the jobs in the outbox (from their status.json files) and of the
jobs still waiting in the inbox (and for which file), or one job in detail.

No torch/cv2 here: ``heygemd status`` imports this module and must start fast.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from heygemd.daemon.status import JobStatus, read_status, utc_now
from heygemd.daemon.waiting import read_waiting
from heygemd.errors import JobNotFound


def _width(text: str) -> int:
    """Terminal columns ``text`` takes (CJK characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def _render(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(_width(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(_pad(cell, w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"


def _when(ts: datetime | None) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if ts is not None else "-"


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.0f}%"


def format_status_table(statuses: Iterable[JobStatus]) -> str:
    """One row per job: id, state, progress %, videos done/failed/total, last update (UTC)."""
    statuses = list(statuses)
    farm = any(s.worker for s in statuses)  # a farm's jobs also say which worker (host, GPU) runs them
    rows: list[list[str]] = [
        ["JOB", "STATE", "PROGRESS", "DONE/FAILED/TOTAL", "UPDATED", *(["WORKER"] if farm else [])]
    ]
    for s in statuses:
        done, failed, total = s.counts()
        rows.append(
            [
                s.job_id,
                s.state,
                _percent(s.progress),
                f"{done}/{failed}/{total}",
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
        f"state     {status.state}  {_percent(status.progress)}  videos {done} done, {failed} failed, {total} total",
        f"audio     {status.audio.file if status.audio else '-'}"
        + (f"  {status.audio.duration_s:.1f}s" if status.audio and status.audio.duration_s is not None else ""),
        f"engine    {status.engine or '-'}"
        + (f"  ({status.engine_identity})" if status.engine_identity else "")
        + "".join(f"  {name} {value}" for name, value in status.engine_parameters.items()),
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
    out = "\n".join(head) + "\n"
    if status.videos:
        rows = [["VIDEO", "STATE", "PROGRESS", "FRAMES", "OUTPUT"]]
        notes: list[str] = []
        for v in status.videos:
            frames = f"{v.frames_done}/{v.frames_total}" if v.frames_total is not None else str(v.frames_done)
            rows.append([v.input, v.state, _percent(1.0 if v.state == "done" else v.progress), frames, v.output or "-"])
            if v.error is not None:
                notes.append(f"{v.input}: [{v.error.code}] {v.error.message}")
                if v.error.hint:
                    notes.append(f"    hint: {v.error.hint}")
            for warning in v.warnings:
                notes.append(f"{v.input}: warning [{warning.code}] {warning.message}")
                if warning.hint:
                    notes.append(f"    hint: {warning.hint}")
        out += "\n" + _render(rows)
        if notes:
            out += "\n" + "\n".join(notes) + "\n"
    return out


def format_waiting(waiting: dict[str, list[str]]) -> str:
    """The inbox jobs not taken yet because of a file, one line each: ``lesson-01/  waiting for bob.mp4: ...``."""
    if not waiting:
        return ""
    rows = [["WAITING IN THE INBOX", "FOR"]]
    rows += [[f"{name}/", "; ".join(files)] for name, files in sorted(waiting.items())]
    return _render(rows)


def show_status(outbox: Path, job_id: str | None = None, state_dir: Path | None = None) -> str:
    """What ``heygemd status [JOB]`` prints: the table of every job in ``outbox`` followed by the inbox jobs that
    wait for a file (read from ``state_dir``), or one job in detail."""
    waiting = read_waiting(state_dir) if state_dir is not None else {}
    if job_id is not None:
        path = Path(outbox) / job_id / "status.json"
        if not path.is_file():
            if job_id in waiting:
                return f"{job_id}/ is still in the inbox, waiting for: {'; '.join(waiting[job_id])}\n"
            raise JobNotFound(f"no job {job_id!r} in the outbox {outbox} nor waiting in the inbox")
        try:
            return format_status_detail(read_status(path))
        except ValueError as exc:
            return f"{path}: not a heygemd status file ({str(exc).splitlines()[0]})\n"
    statuses = []
    for path in sorted(Path(outbox).glob("*/status.json")):
        try:
            statuses.append(read_status(path))
        except (OSError, ValueError):  # a file being replaced on a share, or foreign: skip it in the overview
            continue
    table = format_status_table(sorted(statuses, key=lambda s: (s.claimed or s.updated or utc_now(), s.job_id)))
    return table + ("\n" + format_waiting(waiting) if waiting else "")
