"""Debian's real Prometheus scrapes the real daemon's /metrics (`heygemd run` with its web server) with the scraper's
token while a job renders; the rendered video is read back through Prometheus's own HTTP query API."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon.daemon_process import Daemon, Media, wait_until
from tests.web.test_e2e import web_url
from tests.web.webserver import TOKEN

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("prometheus") is None, reason="prometheus not installed (Debian's package; deploy/setup.sh)"
    ),
]

SCRAPE_TOKEN = "scrape-token-0123456789"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Prometheus:
    """``prometheus`` on a free loopback port with a config of its own and its data in ``root``, scraping
    ``target`` every second with the bearer token ``credentials``."""

    def __init__(self, root: Path, target: str, credentials: str) -> None:
        root.mkdir(parents=True)
        config = root / "prometheus.yml"
        config.write_text(
            f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: heygemd
    metrics_path: /metrics
    authorization:
      credentials: {credentials}
    static_configs:
      - targets: ["{target}"]
""",
            encoding="utf-8",
        )
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = root / "prometheus.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={config}",
                    f"--storage.tsdb.path={root / 'data'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=root,
                start_new_session=True,
            )

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The instant vector of ``expression`` (empty while Prometheus starts or has no such series)."""
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.log.read_text()}")
        try:
            answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=10)
        except httpx.TransportError:
            return []
        if answer.status_code != 200:
            return []
        body = answer.json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def value(self, expression: str) -> float | None:
        result = self.query(expression)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[str], Prometheus]]:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        server = Prometheus(tmp_path / "prometheus", target, SCRAPE_TOKEN)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_prometheus_reads_back_a_rendered_video(
    daemon_factory: Callable[..., Daemon], media: Media, prometheus: Callable[[str], Prometheus]
) -> None:
    daemon = daemon_factory()
    with open(daemon.config, "a", encoding="utf-8") as cfg:
        cfg.write("\n[web]\nenabled = true\nport = 0\n")
    daemon.start({"HEYGEMD_WEB__TOKEN": TOKEN, "HEYGEMD_WEB__METRICS_TOKEN": SCRAPE_TOKEN})
    url = web_url(daemon)
    daemon.wait_ready()
    server = prometheus(url.removeprefix("http://"))

    def diagnostics() -> str:
        return f"{server.log.read_text(errors='replace')[-4000:]}\n{daemon.diagnostics()}"

    scraped, jobs_done = 'up{job="heygemd"}', 'heygemd_jobs{state="done"}'
    wait_until(lambda: server.value(scraped) == 1, 60, "Prometheus to scrape /metrics", diagnostics=diagnostics)
    assert server.value(jobs_done) == 0
    assert server.query("heygemd_videos_rendered_total") == []  # nothing rendered yet: no series

    daemon.submit("lesson-01", {"lesson.wav": media.speech, "anna.mp4": media.face_a})
    status = daemon.wait_finished("lesson-01")
    assert status["state"] == "done" and status["first_frame"] and status["videos"][0]["cached"] == {"faces": False}

    rendered = 'heygemd_videos_rendered_total{engine="mouthwarp"}'
    wait_until(lambda: server.value(rendered) == 1, 60, f"{rendered} = 1 in Prometheus", diagnostics=diagnostics)
    (series,) = server.query("heygemd_videos_rendered_total")
    assert series["metric"]["job"] == "heygemd" and series["metric"]["instance"] == url.removeprefix("http://")
    wait_until(lambda: server.value(jobs_done) == 1, 30, "the done job in Prometheus", diagnostics=diagnostics)
    # the real-time factor as a dashboard graphs it, from the two histograms' sums
    factor = server.value("sum(heygemd_render_seconds_sum) / sum(heygemd_output_seconds_sum)")
    expected = status["videos"][0]["timings"]["total"] / status["audio"]["duration_s"]
    assert factor == pytest.approx(expected, rel=0.01)
    assert server.value("sum(heygemd_first_frame_seconds_count)") == 1
    assert server.value('heygemd_cache_misses_total{cache="faces"}') == 1
    assert server.value("heygemd_claimed_jobs") == 0
    assert daemon.running
