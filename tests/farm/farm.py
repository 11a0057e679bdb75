"""A real farm for the tests: a redis-server on a free localhost port, `heygemd run` as the intake and
`heygemd worker` processes, all sharing one inbox/outbox (the Daemon helper of the daemon tests)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections import Counter
from pathlib import Path

import redis

from tests.daemon.daemon_process import Daemon
from tests.processes import HeygemdProcess, has_event, log_tail, read_events, wait_until

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
        self._worker_processes: dict[str, HeygemdProcess] = {}
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
        logs = self.worker_logs.setdefault(name, [])
        log = self.root / f"worker-{name}-{len(logs) + 1}.log"
        logs.append(log)
        worker = HeygemdProcess(
            self.config, ["worker", "--name", f"{name}@test", *args], log, env=extra_env, wrapper=wrapper or ()
        )
        self._worker_processes[name] = worker
        self.workers[name] = worker.proc
        return worker.proc

    def wait_workers_ready(self, timeout: float = 120.0) -> None:
        for name in self.workers:
            self.wait_for(
                lambda name=name: self.worker_has(name, "worker.ready"), timeout, f"worker {name} ready", alive=False
            )

    def worker_events(self, name: str) -> list[dict[str, object]]:
        """The JSON log events of every start of worker ``name``, in order."""
        return [event for log in self.worker_logs.get(name, []) for event in read_events(log)]

    def worker_has(self, name: str, event: str, **fields: object) -> bool:
        return has_event(self.worker_events(name), event, **fields)

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
        self._worker_processes[name].kill(group=True)

    def start_all(self, *workers: str, env: dict[str, str] | None = None) -> "Farm":
        """Start workers ``workers`` (after any started already), then the intake, each with ``env``; wait until
        the intake and every worker are ready."""
        for name in workers:
            self.start_worker(name, env)
        self.start(env).wait_ready()
        self.wait_workers_ready()
        return self

    def stop_all(self) -> None:
        for name in list(self.workers):
            self.kill_worker(name)
        self.kill()

    def diagnostics(self) -> str:
        parts = [super().diagnostics()]
        for logs in self.worker_logs.values():
            parts += [log_tail(log, 5000) for log in logs]
        return "\n".join(parts)
