"""Rendering hours: ``[intake] hours = ["20:00-07:00", "12:00-13:00"]``, the local times at which a job may start.

A range ``HH:MM-HH:MM`` opens at its first time and closes at its second; one that closes at or before it opens
runs past midnight (``20:00-07:00``: from 8 pm to 7 am the next morning). Several ranges add up. No range at all
means always open. The times are the machine's local time (its time zone, daylight saving time included), read
from an aware ``datetime`` the caller passes in, so tests hand in any clock they like.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta

_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
MINUTES_PER_DAY = 24 * 60


def _minute(hours: str, minutes: str, text: str) -> int:
    h, m = int(hours), int(minutes)
    if h == 24 and m == 0:
        return MINUTES_PER_DAY
    if h > 23 or m > 59:
        raise ValueError(f"{text!r}: {hours}:{minutes} is not a time of day (00:00 to 24:00)")
    return h * 60 + m


@dataclass(frozen=True)
class Range:
    """One range, in minutes after midnight: ``start`` (0-1439) and ``end`` (1-1440; at or before ``start``: the
    next day)."""

    start: int
    end: int

    @classmethod
    def parse(cls, text: str) -> "Range":
        match = _RANGE.match(text)
        if match is None:
            raise ValueError(f'{text!r} is not a range of hours; write it as HH:MM-HH:MM, e.g. "20:00-07:00"')
        start = _minute(match[1], match[2], text) % MINUTES_PER_DAY
        end = _minute(match[3], match[4], text)
        if end == start:
            raise ValueError(f"{text!r} opens and closes at the same time; leave [intake] hours empty for always")
        return cls(start, end)

    def covers(self, minute: int) -> bool:
        """Whether the minute of the day ``minute`` (0-1439) is inside this range."""
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end % MINUTES_PER_DAY


def parse_hours(entries: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Check ``[intake] hours`` (ValueError naming the entry that is wrong); returns the entries as written."""
    for entry in entries:
        Range.parse(entry)
    return tuple(entries)


def shown_time(minute: int) -> str:
    """``HH:MM`` of a minute of the day."""
    return f"{minute // 60 % 24:02d}:{minute % 60:02d}"


class Hours:
    """The rendering hours of ``entries`` (``[intake] hours``; empty: always open)."""

    def __init__(self, entries: tuple[str, ...] | list[str]) -> None:
        self.entries = tuple(entries)
        self.ranges = tuple(Range.parse(entry) for entry in self.entries)

    @property
    def always(self) -> bool:
        return not self.ranges

    def open_at(self, when: datetime) -> bool:
        """Whether a job may start at the local time ``when``."""
        minute = when.hour * 60 + when.minute
        return self.always or any(r.covers(minute) for r in self.ranges)

    def next_opening(self, when: datetime) -> datetime | None:
        """When the hours next open after ``when`` (a local time), or None when they are open now (or always are).
        The opening is ``when``'s wall clock at the range's start, in ``when``'s offset from UTC (a change to or from
        daylight saving time in between moves it by that hour; callers look again at least every rescan)."""
        if self.open_at(when):
            return None
        candidates = []
        for days in (0, 1):
            day = (when + timedelta(days=days)).date()
            for r in self.ranges:
                wall = datetime.combine(day, time(r.start // 60, r.start % 60))
                opening = wall.replace(tzinfo=when.tzinfo) if when.tzinfo is not None else wall
                if opening > when:
                    candidates.append(opening)
        return min(candidates)

    def __str__(self) -> str:
        return ", ".join(self.entries) if self.entries else "always"
