"""Rendering hours: ranges of local time, one past midnight, several, and when they open next."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from heygemd.errors import ConfigError
from heygemd.hours import Hours
from heygemd.settings import load_settings

TZ = timezone(timedelta(hours=2))


def at(hh: int, mm: int = 0, day: int = 10) -> datetime:
    return datetime(2026, 3, day, hh, mm, tzinfo=TZ)


def test_a_range_past_midnight_is_open_at_night_and_closed_by_day() -> None:
    night = Hours(["20:00-07:00"])
    assert [night.open_at(at(h)) for h in (19, 20, 23, 0, 6)] == [False, True, True, True, True]
    assert not night.open_at(at(7)) and not night.open_at(at(12))
    assert night.open_at(at(6, 59)) and not night.open_at(at(19, 59))
    assert night.next_opening(at(8)) == at(20)
    assert night.next_opening(at(21)) is None


def test_several_ranges_add_up_and_the_next_opening_may_be_tomorrow() -> None:
    hours = Hours(["12:00-13:00", "22:00-23:30"])
    assert hours.open_at(at(12, 30)) and hours.open_at(at(23, 29))
    assert not hours.open_at(at(13)) and not hours.open_at(at(23, 30))
    assert hours.next_opening(at(9)) == at(12)
    assert hours.next_opening(at(14)) == at(22)
    assert hours.next_opening(at(23, 45)) == at(12, day=11)


def test_no_range_is_always_open_and_24_00_ends_the_day() -> None:
    assert Hours([]).always and Hours([]).open_at(at(3)) and Hours([]).next_opening(at(3)) is None
    evening = Hours(["18:00-24:00"])
    assert evening.open_at(at(23, 59)) and not evening.open_at(at(0))


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("20-07", "HH:MM-HH:MM"),
        ("25:00-07:00", "not a time of day"),
        ("20:61-07:00", "not a time of day"),
        ("08:00-08:00", "same time"),
    ],
)
def test_a_wrong_range_stops_heygemd_at_start_naming_the_setting(tmp_path: Path, entry: str, words: str) -> None:
    config = tmp_path / "heygemd.toml"
    config.write_text(f'[intake]\nhours = ["22:00-06:00", "{entry}"]\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert "intake.hours" in caught.value.message and words in caught.value.message, caught.value.message
