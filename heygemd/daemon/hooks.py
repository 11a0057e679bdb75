"""What a process that runs jobs tells beyond status.json: that a job ended, and that the machine is in trouble.

The daemon only calls these hooks; what they do (signed callbacks, messages for people, metrics) is handed in from
above (the CLI builds it from the notify package), so the daemon never imports it. A hook is called after the fact
(the job's status.json is final, the pause is decided) and never holds up rendering: one that fails is logged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import structlog

from heygemd.daemon.jobs import JobOptions
from heygemd.daemon.status import JobStatus

log = structlog.get_logger("heygemd.hooks")

Trouble = Literal["disk_full", "engine_failed", "broker_unreachable"]
"""The machine's trouble people may be told of: a full disk pauses a job, an engine fails to load, a farm's broker
stays unreachable."""

JobEnded = Callable[[JobStatus, JobOptions], None]
"""A job ended (done, partial, failed or cancelled): its final status.json and its job.toml options (empty when
job.toml could not be read: then the job failed for it)."""

TroubleSeen = Callable[[Trouble, str], None]
"""The machine is in trouble: which, and what happened (naming what to do)."""


def no_job_ended(status: JobStatus, options: JobOptions) -> None:
    """The hook of a process that tells nobody."""


def no_trouble(kind: Trouble, detail: str) -> None:
    """The hook of a process that tells nobody."""


def tell_job_ended(hook: JobEnded, status: JobStatus, options: JobOptions) -> None:
    """Call ``hook`` for a job that ended; its failure is logged, not raised (the job has ended whatever it says)."""
    try:
        hook(status, options)
    except Exception:  # the hooks' boundary: telling others must never fail a job that has ended; logged, traceback
        log.exception("job.end_not_told", job_id=status.job_id, state=status.state)


def tell_trouble(hook: TroubleSeen, kind: Trouble, detail: str) -> None:
    """Call ``hook`` for the machine's trouble; its failure is logged, not raised."""
    try:
        hook(kind, detail)
    except Exception:  # the hooks' boundary, as above
        log.exception("trouble.not_told", trouble=kind)
