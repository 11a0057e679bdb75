"""`heygemd worker` under a systemd-like supervisor: READY=1 and WATCHDOG=1 on a notify socket the test owns,
pings while idle and while a job renders; an engine idle for engine.idle_unload_seconds is unloaded between
tasks and loaded again by the next job."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon.daemon_process import Media
from tests.daemon.test_daemon_notify import NotifySocket
from tests.farm.farm import Farm

pytestmark = pytest.mark.slow


def test_worker_pings_the_watchdog_and_unloads_its_idle_engine(
    farm_factory: Callable[..., Farm], media: Media, tmp_path: Path
) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        farm = farm_factory()
        farm.start_worker(
            "w1",
            extra_env={
                "NOTIFY_SOCKET": str(notify.path),
                "WATCHDOG_USEC": "1000000",  # pings every 0.5 s
                "HEYGEMD_ENGINE__IDLE_UNLOAD_SECONDS": "1",
            },
        )
        farm.wait_for(lambda: notify.seen("READY=1"), 120, "READY=1 from the worker", alive=False)
        ready_pings = len(notify.seen("WATCHDOG=1"))
        farm.wait_for(
            lambda: len(notify.seen("WATCHDOG=1")) >= ready_pings + 3, 30, "watchdog pings while idle", alive=False
        )
        farm.wait_for(lambda: farm.worker_has("w1", "engine.unloaded"), 60, "the idle engine unloaded", alive=False)

        farm.start().wait_ready()
        farm.submit("after-unload", {"speech.wav": media.long_speech, "alice.mp4": media.face_a})
        farm.wait_for(lambda: (farm.status("after-unload") or {}).get("state") == "processing", 120, "the job running")
        pings = len(notify.seen("WATCHDOG=1"))

        def pinged_while_processing() -> bool:
            state = (farm.status("after-unload") or {}).get("state")
            assert state == "processing", f"the job ended ({state}) before a watchdog ping came"
            return len(notify.seen("WATCHDOG=1")) > pings

        farm.wait_for(pinged_while_processing, 30, "a watchdog ping while the job renders")
        assert [m for m in notify.seen("STATUS=") if "after-unload" in m], "STATUS= names the job"
        status = farm.wait_finished("after-unload", 240)
        assert status["state"] == "done", status
        assert (farm.outbox / "after-unload" / "alice.mp4").is_file()

        # the job loaded the engine again: after it, the idle engine is unloaded a second time
        farm.wait_for(
            lambda: (
                [e["event"] for e in farm.worker_events("w1") if e.get("event") in ("engine.unloaded", "job.taken")]
                == ["engine.unloaded", "job.taken", "engine.unloaded"]
            ),
            60,
            "the reloaded engine unloaded again after the job",
        )
    finally:
        notify.close()
