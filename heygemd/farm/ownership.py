"""Who owns a claimed job in the farm: claim.json names the worker running it, and no one while it is queued."""

from __future__ import annotations

from heygemd.daemon.claims import ClaimedJob, held_elsewhere, unowned_record, write_claim_record
from heygemd.settings import QueueSettings

MISSED_HEARTBEATS = 3
"""A job lock lives this many heartbeat intervals: a worker that stopped beating frees its job after that."""
LEASE_FLOOR_SECONDS = 120.0
"""The shortest claim lease in a farm: above NFS's attribute cache (acregmax, 60 s by default), which can show
another host's fresh touch of claim.json as a minute old, plus clock skew between hosts."""


def lease_seconds(settings: QueueSettings) -> float:
    """How long claim.json stays "owned" after its last touch in a farm. A worker touches it with every heartbeat,
    so one untouched for this long belongs to a worker that is gone (killed, or its host down): its job can be
    taken over after about two minutes, not the single-host daemon's ten."""
    return max(settings.heartbeat_interval * MISSED_HEARTBEATS, LEASE_FLOOR_SECONDS)


def owned_elsewhere(claimed: ClaimedJob, settings: QueueSettings) -> bool:
    """``claims.held_elsewhere`` with the farm's lease (:func:`lease_seconds`)."""
    return held_elsewhere(claimed, lease_seconds=lease_seconds(settings))


def disown(claimed: ClaimedJob) -> None:
    """Leave the claim to whichever worker takes its task next: claim.json keeps the job's identity with no owner
    (the worker records itself with ``claims.take_over`` when it starts the job)."""
    write_claim_record(claimed.path, unowned_record(claimed))
