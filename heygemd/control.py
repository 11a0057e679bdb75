"""Acting on jobs, for every front door (``heygemd cancel``, the web pages and the API): one module between them
and the daemon, so a job is cancelled the same way whoever asks.

A farm is wired in from above: the front door that knows it runs a farm (the CLI, from ``[queue] broker``) hands
in ``finish_idle``, the farm's way to finish at once a job whose task still waits in the broker
(:func:`heygemd.farm.cancel.idle_finisher`); without it the worker that takes the job acts on the request.
"""

from __future__ import annotations

from heygemd.daemon.cancel import CancelAnswer, FinishIdle, cancel_job
from heygemd.settings import Settings


class Control:
    """The job actions on ``settings``' inbox, outbox and state folder."""

    def __init__(self, settings: Settings, *, finish_idle: FinishIdle | None = None) -> None:
        self.settings = settings
        self.finish_idle = finish_idle

    def cancel(self, job_id: str, by: str) -> CancelAnswer:
        """Cancel ``job_id``: a job not started yet is cancelled at once, a rendering one stops at its next batch
        (JobNotFound, AlreadyFinished when it cannot be). ``by``: who asks (``daemon.cancel.requested_by``)."""
        paths, intake = self.settings.paths, self.settings.intake
        return cancel_job(
            job_id,
            inbox=paths.inbox,
            outbox=paths.outbox,
            state_dir=paths.state_dir,
            ready_marker=intake.ready_marker,
            by=by,
            finish_idle=self.finish_idle,
            max_toml_bytes=intake.max_job_toml_bytes,
        )
