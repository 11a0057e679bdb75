"""A farm's worker tells what it finishes: the callback of a NAS job it rendered is delivered once, signed, from the
state folder the farm shares, and its metrics port (`heygemd worker --metrics-port N`) shows its warm engine."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx

from tests.daemon.daemon_process import Media
from tests.farm.farm import Farm, free_port
from tests.httpserver import receiver
from tests.notify.test_callbacks import documented_verifier

SECRET = "callback-secret-0123456789"
ENV = {"HEYGEMD_NOTIFY__SIGNING_SECRET": SECRET}


def test_a_workers_job_is_called_back_once_and_its_metrics_port_shows_its_engine(
    farm_factory: Callable[..., Farm], media: Media
) -> None:
    port = free_port()
    with receiver() as server:
        farm = farm_factory()
        with open(farm.config, "a", encoding="utf-8") as cfg:
            cfg.write('\n[notify]\ncallback_hosts = ["127.0.0.1"]\n')
        farm.start_worker("w1", ENV, args=("--metrics-port", str(port)))
        farm.start_all(env=ENV)
        job_toml = f'callback_url = "{server.url("/hook")}"\n'.encode()
        farm.submit("lesson", {"voice.wav": media.speech, "alice.mp4": media.face_a, "job.toml": job_toml})
        status = farm.wait_finished("lesson", 180)
        assert status["state"] == "done" and status["worker"] == "w1@test"

        def delivered() -> list[dict[str, object]]:
            found = farm.status("lesson") or {}
            return [c for c in found.get("callbacks", []) if c["state"] == "delivered"]

        farm.wait_for(delivered, 60, "the delivery")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text

    (hook,) = [seen for seen in server.seen if seen.path == "/hook"]
    assert documented_verifier()(SECRET.encode(), hook.body, hook.headers["Heygemd-Signature"])
    assert json.loads(hook.body)["worker"] == "w1@test"
    assert 'heygemd_engine_loaded{device="cpu",engine="mouthwarp"} 1.0' in metrics.splitlines()
    assert "heygemd_notifications_sent_total" in metrics and "heygemd_jobs" not in metrics
