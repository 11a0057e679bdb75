"""A real farm for the tests: a redis-server on a free localhost port, `heygemd run` as the intake and
`heygemd worker` processes, all sharing one inbox/outbox (the Daemon helper of the daemon tests)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections import Counter
from pathlib import Path

import redis

from tests.daemon.daemon_process import Daemon, _heygemd_argv, wait_until

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """redis-server bound to 127.0.0.1 on ``port``, without persistence (``--save '' --appendonly no``)."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        assert REDIS_SERVER is not None
        log = open(self.root / "redis.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        client = self.client()
        wait_until(lambda: _pings(client), 30, "redis-server to answer")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False


class Farm(Daemon):
    """The intake (``start``/``proc`` of Daemon, ``heygemd run`` with a broker) plus named worker processes."""

    def __init__(
        self,
        root: Path,
        broker: str,
        *,
        heartbeat_interval: float = 1.0,
        visibility_timeout: float = 86400.0,
        **options: object,
    ) -> None:
        super().__init__(root, **options)  # type: ignore[arg-type]
        self.broker = broker
        with open(self.config, "a", encoding="utf-8") as f:
            f.write(
                f'\n[queue]\nbroker = "{broker}"\nheartbeat_interval = {heartbeat_interval}\n'
                f"visibility_timeout = {visibility_timeout}\n"
            )
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.worker_logs: dict[str, list[Path]] = {}

    def start_worker(
        self,
        name: str,
        extra_env: dict[str, str] | None = None,
        *,
        wrapper: list[str] | None = None,
        args: tuple[str, ...] = (),
    ) -> subprocess.Popen[bytes]:
        """``wrapper``: a command line the worker's own is appended to (e.g. to run it in a mount namespace);
        ``args``: more arguments of ``heygemd worker``."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("HEYGEMD_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM")
        }
        env["HEYGEMD_LOGGING__FORMAT"] = "json"
        env.update(extra_env or {})
        logs = self.worker_logs.setdefault(name, [])
        log = self.root / f"worker-{name}-{len(logs) + 1}.log"
        logs.append(log)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    *(wrapper or []),
                    *_heygemd_argv(),
                    "--config",
                    str(self.config),
                    "worker",
                    "--name",
                    f"{name}@test",
                    *args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=env,
                start_new_session=True,
            )
        self.workers[name] = proc
        return proc

    def wait_workers_ready(self, timeout: float = 120.0) -> None:
        for name in self.workers:
            self.wait_for(
                lambda name=name: self.worker_has(name, "worker.ready"), timeout, f"worker {name} ready", alive=False
            )

    def worker_events(self, name: str) -> list[dict[str, object]]:
        events: list[dict[str, object]] = []
        saved = self.logs
        for log in self.worker_logs.get(name, []):
            self.logs = [log]
            events += self.events()
        self.logs = saved
        return events

    def worker_has(self, name: str, event: str, **fields: object) -> bool:
        return any(
            e.get("event") == event and all(e.get(k) == v for k, v in fields.items()) for e in self.worker_events(name)
        )

    def renders(self) -> Counter[tuple[str, str]]:
        """(job id, video) of every ``video.done`` any worker logged: each must be 1."""
        done: Counter[tuple[str, str]] = Counter()
        for name in self.worker_logs:
            for e in self.worker_events(name):
                if e.get("event") == "video.done":
                    done[(str(e.get("job_id")), str(e.get("video")))] += 1
        return done

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker and its children (its ffmpeg), as a crash or the OOM killer would."""
        proc = self.workers[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for name in list(self.workers):
            self.kill_worker(name)
        self.kill()

    def diagnostics(self) -> str:
        parts = [super().diagnostics()]
        for logs in self.worker_logs.values():
            for log in logs:
                text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else "(no log)"
                parts.append(f"----- {log.name} (last 5000 chars) -----\n{text[-5000:]}")
        return "\n".join(parts)
