"""What only the process knows: the engines it holds, the notifications it sent (through the notify package's
own hooks, to a real receiver), and a farm worker's metrics port (prometheus_client's server, scraped over HTTP)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from pydantic import SecretStr

from heygemd.errors import ConfigError
from heygemd.metrics import NOTIFICATIONS, LoadedEngine, serve_worker_metrics, watch_engines, watch_sessions
from heygemd.metrics.process import EngineCollector
from heygemd.notify.alerts import Alerts, Message
from heygemd.notify.callbacks import BACKOFF_S, CallbackQueue, CallbackSender
from heygemd.settings import NotifySettings
from tests.httpserver import Answer, receiver

T0 = 1_767_225_600.0


def sent(channel: str) -> float:
    return REGISTRY.get_sample_value("heygemd_notifications_sent_total", {"channel": channel}) or 0.0


def failed(channel: str) -> float:
    return REGISTRY.get_sample_value("heygemd_notifications_failed_total", {"channel": channel}) or 0.0


def test_engines_loaded_follow_their_source() -> None:
    engines = EngineCollector()
    registry = CollectorRegistry()
    registry.register(engines)
    held = [LoadedEngine("wav2lip", "cuda:1", True)]
    engines.watch(lambda: held)
    assert registry.get_sample_value("heygemd_engine_loaded", {"engine": "wav2lip", "device": "cuda:1"}) == 1
    held[0] = held[0]._replace(loaded=False)  # unloaded after engine.idle_unload_seconds
    assert registry.get_sample_value("heygemd_engine_loaded", {"engine": "wav2lip", "device": "cuda:1"}) == 0


def test_apprise_messages_sent_and_failed_are_counted() -> None:
    before = sent("apprise"), failed("apprise")
    message = Message(title="lesson-01: done", body="1 of 1 videos done.", kind="success")
    with receiver(lambda seen: Answer(500 if seen.path == "/down" else 200)) as server:
        for path in ("/up", "/down"):
            notify = NotifySettings(urls=(SecretStr(f"json://127.0.0.1:{server.port}{path}"),))
            Alerts(notify, public_url="", on_sent=NOTIFICATIONS.alert_sent).send(message)
    assert [seen.path for seen in server.seen] == ["/up", "/down"]
    assert (sent("apprise"), failed("apprise")) == (before[0] + 1, before[1] + 1)


def test_callbacks_count_once_delivered_or_given_up(tmp_path: Path) -> None:
    before = sent("callback"), failed("callback")
    notify = NotifySettings(signing_secret=SecretStr("callback-secret-0123456789"), callback_hosts=("127.0.0.1",))
    queue = CallbackQueue(tmp_path, CallbackSender(notify), on_change=NOTIFICATIONS.callback_changed, clock=lambda: T0)
    with receiver(lambda seen: Answer(503 if seen.path == "/down" else 200)) as server:
        queue.enqueue("lesson-01", server.url("/up"), b"{}")
        queue.enqueue("lesson-02", server.url("/down"), b"{}")
        now = T0
        queue.step(now)
        assert (sent("callback"), failed("callback")) == (before[0] + 1, before[1]), "a retry is no failure yet"
        for wait in BACKOFF_S:
            now += wait
            queue.step(now)
    assert len([seen for seen in server.seen if seen.path == "/down"]) == len(BACKOFF_S) + 1
    assert (sent("callback"), failed("callback")) == (before[0] + 1, before[1] + 1)


def test_a_worker_serves_its_own_metrics_on_its_port() -> None:
    engine = LoadedEngine("mouthwarp", "cpu", True)
    watch_engines(lambda: [engine])
    server, thread = serve_worker_metrics(0, "127.0.0.1")
    try:
        port = server.server_address[1]
        answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert 'heygemd_engine_loaded{device="cpu",engine="mouthwarp"} 1.0' in answer.text.splitlines()
        assert "process_resident_memory_bytes" in answer.text and "heygemd_notifications_sent_total" in answer.text
        assert "heygemd_jobs" not in answer.text, "the jobs are the web server's (from the folders), not a worker's"
        with pytest.raises(ConfigError, match=rf"cannot serve metrics on 127.0.0.1:{port}"):
            serve_worker_metrics(port, "127.0.0.1")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    with pytest.raises(httpx.ConnectError):  # stopped: nothing answers there any more
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)


def test_the_daemons_warm_engine_is_reported_loaded_and_unloaded(tmp_path: Path) -> None:
    from heygemd.daemon.lifecycle import Sessions
    from heygemd.settings import EngineSettings, PathsSettings, Settings

    settings = Settings(
        paths=PathsSettings(inbox=tmp_path / "in", outbox=tmp_path / "out", models=tmp_path / "models"),
        engine=EngineSettings(name="mouthwarp", device="cpu:7"),  # a device label no other test uses
    )
    sessions = Sessions(settings)
    watch_sessions(sessions)
    labels = {"engine": "mouthwarp", "device": "cpu:7"}
    assert REGISTRY.get_sample_value("heygemd_engine_loaded", labels) == 0
    sessions.default.warm_up()
    assert REGISTRY.get_sample_value("heygemd_engine_loaded", labels) == 1
    sessions.default.unload()
    assert REGISTRY.get_sample_value("heygemd_engine_loaded", labels) == 0
