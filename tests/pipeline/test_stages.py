"""run_stages: concurrent stages with bounded queues, in order, and a clean stop on the first error."""

from __future__ import annotations

import threading

import pytest

from heygemd.pipeline.stages import Stage, run_stages


def heygemd_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("heygemd-") and t.name != "heygemd-watchdog"]


def test_items_pass_every_stage_in_order() -> None:
    got: list[int] = []
    run_stages(range(200), [Stage("double", lambda x: 2 * x), Stage("inc", lambda x: x + 1)], got.append)
    assert got == [2 * i + 1 for i in range(200)]
    assert heygemd_threads() == []


def test_stages_run_in_their_own_threads() -> None:
    seen: dict[str, set[str]] = {"a": set(), "b": set(), "sink": set()}

    def note(key: str):
        def work(x: int) -> int:
            seen[key].add(threading.current_thread().name)
            return x

        return work

    run_stages(range(10), [Stage("a", note("a")), Stage("b", note("b"))], note("sink"))
    assert seen == {"a": {"heygemd-a"}, "b": {"heygemd-b"}, "sink": {threading.current_thread().name}}


def test_items_in_flight_are_bounded_by_the_queues() -> None:
    """A slow sink holds the source back: memory stays bounded whatever the source's length."""
    produced = 0
    outstanding: list[int] = []

    def source():
        nonlocal produced
        for i in range(300):
            produced += 1
            yield i

    def sink(item: int) -> None:
        outstanding.append(produced - item - 1)  # produced but not yet consumed, besides this one

    stages = [Stage("a", lambda x: x), Stage("b", lambda x: x)]
    run_stages(source(), stages, sink, depth=2)
    # depth items in each of the 3 queues, one in each stage, one waiting in the source thread
    assert max(outstanding) <= 2 * 3 + 2 + 1


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("where", ["source", "stage", "sink"])
def test_the_first_error_stops_every_thread_and_propagates(where: str) -> None:
    done_after_error: list[int] = []
    failed = threading.Event()

    def source():
        for i in range(10_000):
            if where == "source" and i == 50:
                failed.set()
                raise Boom("source")
            yield i

    def work(x: int) -> int:
        if where == "stage" and x == 50:
            failed.set()
            raise Boom("stage")
        if failed.is_set():
            done_after_error.append(x)
        return x

    def sink(x: int) -> None:
        if where == "sink" and x == 50:
            failed.set()
            raise Boom("sink")

    with pytest.raises(Boom, match=where):
        run_stages(source(), [Stage("work", work), Stage("more", lambda x: x)], sink)
    assert heygemd_threads() == []  # joined before the error reached us
    assert len(done_after_error) <= 4  # the others stopped at their next item, not at the source's end


def test_an_empty_source_ends_at_once() -> None:
    got: list[int] = []
    run_stages(iter(()), [Stage("a", lambda x: x)], got.append)
    assert got == [] and heygemd_threads() == []
