"""A real HTTP server on 127.0.0.1 for tests of the requests heygemd sends (callbacks, notifications, URL inputs):
it records every request and answers from a script."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None
    """Wait for this event before answering (a receiver that hangs); nothing is answered when it is set."""
    declare_length: bool = True
    """False: no Content-Length; the body ends when the connection closes."""
    drip_s: float = 0.0
    """Above 0: the answer, status line and headers included, is sent one byte at a time, this many seconds apart
    (a server that trickles)."""


Script = Callable[[Seen], Answer]


class Receiver:
    """``answer(seen) -> Answer`` decides each answer (default: 200, empty); ``seen`` lists the requests so far."""

    def __init__(self, answer: Script | None = None) -> None:
        self.answer: Script = answer or (lambda _: Answer())
        self.seen: list[Seen] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                seen = Seen(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
                receiver.seen.append(seen)
                reply = receiver.answer(seen)
                if reply.hold is not None:
                    reply.hold.wait()
                    return
                length = {"Content-Length": str(len(reply.body))} if reply.declare_length else {"Connection": "close"}
                headers = {**length, **reply.headers}
                self.close_connection = not reply.declare_length
                if reply.drip_s > 0:
                    self._drip(reply, headers)
                    return
                self.send_response(reply.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)

            def _drip(self, reply: Answer, headers: dict[str, str]) -> None:
                lines = [f"HTTP/1.1 {reply.status} Slow", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
                data = "\r\n".join(lines).encode("latin-1") + (reply.body if self.command != "HEAD" else b"")
                self.close_connection = True
                for i in range(len(data)):
                    if receiver.release.wait(reply.drip_s):  # the server is closing
                        return
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()

            do_GET = do_POST = do_HEAD = _handle

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> "Receiver":
        self._thread.start()
        return self

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def receiver(answer: Script | None = None) -> Iterator[Receiver]:
    server = Receiver(answer).start()
    try:
        yield server
    finally:
        server.close()


def answers(*statuses: int) -> Script:
    """Answer the given statuses in turn, then 200 for ever."""
    queue = list(statuses)
    return lambda _: Answer(queue.pop(0) if queue else 200)
