"""What status.json shows of a callback delivery (:mod:`heygemd.notify.callbacks`): a model of its own, free of
the HTTP client, so the status module (which ``heygemd status`` imports and must start fast) can hold it."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


def utc(t: float) -> datetime:
    """Unix time ``t`` as an aware UTC datetime."""
    return datetime.fromtimestamp(t, timezone.utc)


CallbackState = Literal["pending", "delivered", "failed"]


class CallbackRecord(BaseModel):
    """What status.json says of a callback delivery."""

    model_config = ConfigDict(extra="ignore")

    delivery: str = Field(description="The Heygemd-Delivery id: the same on every attempt.")
    event: str = Field(description="The Heygemd-Event: job.finished.")
    host: str = Field(description="The callback URL's host (never the whole URL: it may carry a token).")
    state: CallbackState = Field(description="pending (an attempt is due), delivered (a 2xx answer), failed.")
    attempts: int = Field(0, ge=0, description="Attempts made so far.")
    last_error: str | None = Field(None, description="Why the last attempt failed, e.g. 'answered 500'.")
    next_attempt: AwareDatetime | None = Field(None, description="When the next attempt is due, while pending.")
    finished: AwareDatetime | None = Field(None, description="When it was delivered or given up.")
