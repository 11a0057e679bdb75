"""The per-presenter preparation cache: hits skip the computation, a size limit evicts the least recently used."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from heygemd.pipeline import presenter_cache


def fill(value: float) -> tuple[list[int], object]:
    calls: list[int] = []

    def compute(out: np.ndarray) -> None:
        calls.append(1)
        out[:] = value

    return calls, compute


def test_second_lookup_is_a_hit_without_computing(tmp_path: Path) -> None:
    calls, compute = fill(1.5)
    first = presenter_cache.cached_preparation("k", tmp_path, "fp", (3, 2, 2), compute, 10**9)  # type: ignore[arg-type]
    again = presenter_cache.cached_preparation("k", tmp_path, "fp", (3, 2, 2), compute, 10**9)  # type: ignore[arg-type]
    assert (first.cached, again.cached) == (False, True)
    assert calls == [1]
    np.testing.assert_array_equal(again.data, np.full((3, 2, 2), 1.5, np.float32))
    other = presenter_cache.cached_preparation("k", tmp_path, "other-fp", (3, 2, 2), compute, 10**9)  # type: ignore[arg-type]
    assert other.cached is False and calls == [1, 1]  # another fingerprint (weights, precision): recomputed


def test_wrong_shape_or_corrupt_file_is_recomputed(tmp_path: Path) -> None:
    calls, compute = fill(2.0)
    presenter_cache.cached_preparation("k", tmp_path, "fp", (3, 2), compute, 10**9)  # type: ignore[arg-type]
    presenter_cache.cache_path("k", tmp_path, "fp").write_bytes(b"not an npy")
    result = presenter_cache.cached_preparation("k", tmp_path, "fp", (3, 2), compute, 10**9)  # type: ignore[arg-type]
    assert result.cached is False and len(calls) == 2
    result = presenter_cache.cached_preparation("k", tmp_path, "fp", (4, 2), compute, 10**9)  # type: ignore[arg-type]
    assert result.cached is False and result.data.shape == (4, 2)


def test_size_limit_evicts_the_least_recently_used(tmp_path: Path) -> None:
    _, compute = fill(0.0)
    shape = (256, 64)  # 64 KiB of float32 per presenter
    one_file = presenter_cache.cached_preparation("a", tmp_path, "fp", shape, compute, 10**9)  # type: ignore[arg-type]
    size = presenter_cache.cache_path("a", tmp_path, "fp").stat().st_size
    del one_file
    presenter_cache.cached_preparation("b", tmp_path, "fp", shape, compute, 10**9)  # type: ignore[arg-type]
    old = presenter_cache.cache_path("a", tmp_path, "fp").stat().st_mtime - 100
    os.utime(presenter_cache.cache_path("b", tmp_path, "fp"), (old, old))  # b: used long ago
    presenter_cache.cached_preparation("a", tmp_path, "fp", shape, compute, 10**9)  # type: ignore[arg-type]  # a hit
    presenter_cache.cached_preparation("c", tmp_path, "fp", shape, compute, 2 * size)  # type: ignore[arg-type]
    left = sorted(p.name.split("-")[0] for p in (tmp_path / "presenter").glob("*.npy"))
    assert left == ["a", "c"]  # b was the least recently used


def test_pinned_preparations_go_only_when_the_others_are_not_enough(tmp_path: Path) -> None:
    _, compute = fill(0.0)
    shape = (256, 64)
    made = {
        name: presenter_cache.cached_preparation(name, tmp_path, "fp", shape, compute, 10**9)  # type: ignore[arg-type]
        for name in ("library", "old", "new")
    }
    size = presenter_cache.cache_path("old", tmp_path, "fp").stat().st_size
    for age, name in ((300, "library"), (200, "old"), (100, "new")):
        stamp = presenter_cache.cache_path(name, tmp_path, "fp").stat().st_mtime - age
        os.utime(presenter_cache.cache_path(name, tmp_path, "fp"), (stamp, stamp))
    pinned_path = made["library"].path
    assert pinned_path == presenter_cache.cache_path("library", tmp_path, "fp")
    presenter_cache.pin(tmp_path, [pinned_path.name])
    assert presenter_cache.pinned(tmp_path) == {pinned_path.name}

    presenter_cache.evict(tmp_path, 2 * size)  # the least recently used is pinned: the next one goes
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "presenter").glob("*.npy")) == ["library", "new"]
    presenter_cache.evict(tmp_path, size // 2)  # the limit holds whatever is pinned
    assert list((tmp_path / "presenter").glob("*.npy")) == []
    presenter_cache.pin(tmp_path, [])
    assert presenter_cache.pinned(tmp_path) == frozenset()


def test_unwritable_cache_still_prepares(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the folder should be")
    calls, compute = fill(3.0)
    result = presenter_cache.cached_preparation("k", blocker, "fp", (2, 2), compute, 10**9)  # type: ignore[arg-type]
    assert result.cached is False and calls == [1]
    np.testing.assert_array_equal(result.data, np.full((2, 2), 3.0, np.float32))


def test_a_linked_cache_folder_is_never_written_through(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / presenter_cache.FOLDER).symlink_to(elsewhere)
    calls, compute = fill(4.0)
    result = presenter_cache.cached_preparation("k", tmp_path / "cache", "fp", (2, 2), compute, 10**9)  # type: ignore[arg-type]
    assert result.cached is False and calls == [1] and list(elsewhere.iterdir()) == []
    np.testing.assert_array_equal(result.data, np.full((2, 2), 4.0, np.float32))


def test_a_cache_file_planted_as_a_link_is_neither_read_nor_touched_through(tmp_path: Path) -> None:
    """A cache on the share: a link put where a preparation's file goes, to a file of the right shape elsewhere,
    is not read as the presenter's preparation, and its target's time is not changed; the link is replaced."""
    outside = tmp_path / "elsewhere.npy"
    np.save(outside, np.full((2, 2), 9.0, np.float32))
    os.utime(outside, ns=(10**18, 10**18))
    path = presenter_cache.cache_path("k", tmp_path / "cache", "fp")
    path.parent.mkdir(parents=True)
    path.symlink_to(outside)
    calls, compute = fill(4.0)
    result = presenter_cache.cached_preparation("k", tmp_path / "cache", "fp", (2, 2), compute, 10**9)  # type: ignore[arg-type]
    assert result.cached is False and calls == [1]
    np.testing.assert_array_equal(result.data, np.full((2, 2), 4.0, np.float32))
    assert os.stat(outside).st_mtime_ns == 10**18 and not path.is_symlink()
