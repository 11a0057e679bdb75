"""Who owns a claimed job in the farm: claim.json names the worker running it, and no one while it is queued."""

from __future__ import annotations

from pathlib import Path

from heygemd.daemon.claims import CLAIM_FILE, ClaimedJob, ClaimRecord
from heygemd.fsutil import atomic_write_bytes


def disown(claimed: ClaimedJob) -> None:
    """Leave the claim to whichever worker takes its task next: claim.json keeps the job's identity with no owner
    (the worker records itself with ``claims.take_over`` when it starts the job)."""
    record = ClaimRecord(job_id=claimed.job_id, name=claimed.name, claimed_at=claimed.claimed_at, host="", pid=0)
    atomic_write_bytes(Path(claimed.path) / CLAIM_FILE, record.model_dump_json(indent=2).encode("utf-8"))
