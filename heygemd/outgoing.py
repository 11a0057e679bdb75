"""Requests heygemd sends to other servers (signed callbacks, URL inputs), only where an allow-list lets them go
(:mod:`heygemd.hosts`).

Each request goes to an address checked at that moment: the name is resolved, every address checked, and the
connection made to a checked address, with the URL's name in the Host header and as the TLS server name (SNI, and
the name the certificate must carry). A redirect is followed only when the caller allows it, and then checked like
the first URL. Proxies from the environment (``HTTP_PROXY``, ...) are not used: a proxy would connect wherever it
likes, past these checks.

Messages name the host only, never the whole URL: a URL may carry a token.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from heygemd.hosts import AllowList, Resolver, system_resolver

REDIRECTS = frozenset({301, 302, 303, 307, 308})


class SendFailed(Exception):
    """The request got no answer (no address, no connection, a timeout, a broken answer, too many redirects).
    ``host`` names the server, ``reason`` says what happened; callers report it as their own error."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason


def parse_url(url: str) -> httpx.URL:
    """``url`` as an http(s) URL with a host; ValueError naming what is wrong, never quoting the URL."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise ValueError("is not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError("is not an http:// or https:// URL")
    if not parsed.raw_host:
        raise ValueError("names no host")
    return parsed


def host_of(url: httpx.URL) -> str:
    """The URL's host as messages name it (ASCII, ``xn--`` form for an internationalised name)."""
    return url.raw_host.decode("ascii")


class _Deadline:
    """Cuts one request's connections off once ``seconds`` have passed (their sockets shut down, so a read waiting
    on them returns at once): a server that sends a byte now and then, each within the step timeout, cannot hold
    the request longer. ``trace`` is the request's httpcore trace extension; it learns each socket as it connects."""

    def __init__(self, seconds: float) -> None:
        self.passed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def trace(self, event: str, info: dict[str, Any]) -> None:
        stream = info.get("return_value") if event == "connection.connect_tcp.complete" else None
        if stream is None:
            return
        sock = stream.get_extra_info("socket")
        with self._lock:
            self._sockets.append(sock)
            if self.passed:
                self._shut(sock)

    def _cut(self) -> None:
        with self._lock:
            self.passed = True
            for sock in self._sockets:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # closed already: nothing left to cut
            pass

    def __enter__(self) -> "_Deadline":
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


@dataclass(frozen=True)
class Outgoing:
    """Sends requests to the hosts ``allow`` allows; ``timeout`` bounds each step (connect, each read, each
    write) in seconds. ``resolver`` is the system's unless a test gives another."""

    allow: AllowList
    timeout: float
    resolver: Resolver = system_resolver

    def check(self, url: str) -> httpx.URL:
        """The parsed URL once its host is allowed (the allow-list's error if not; ValueError for no http(s) URL).
        No DNS: what a submission checks."""
        parsed = parse_url(url)
        self.allow.check_host(host_of(parsed))
        return parsed

    @contextmanager
    def open(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        max_redirects: int = 0,
        deadline: float | None = None,
    ) -> Iterator[httpx.Response]:
        """Send the request and yield the answer, its body not read yet (``iter_bytes``). Redirects up to
        ``max_redirects`` are followed (each URL checked like the first; a 303 turns into GET); beyond that a
        redirect answer is yielded as it is when ``max_redirects`` is 0, else SendFailed. The allow-list's error
        when a host or address is not allowed, SendFailed when there is no answer (also when reading the body in
        the with-block times out or breaks off). ``deadline`` (seconds), when given, bounds the whole request: from
        the first connection to the answer's last header (and its body's end, when read in the with-block)."""
        target = self.check(url)
        if deadline is None:
            with self._open(method, target, content, headers or {}, max_redirects, None) as response:
                yield response
            return
        with _Deadline(deadline) as cutter:
            try:
                with self._open(method, target, content, headers or {}, max_redirects, cutter) as response:
                    yield response
            except SendFailed as exc:
                if not cutter.passed:
                    raise
                raise SendFailed(exc.host, f"no whole answer within {deadline:g} s") from None

    @contextmanager
    def _open(
        self,
        method: str,
        target: httpx.URL,
        content: bytes | None,
        headers: Mapping[str, str],
        max_redirects: int,
        deadline: _Deadline | None,
    ) -> Iterator[httpx.Response]:
        hops = 0
        with httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False) as client:
            while True:
                response = self._send(client, method, target, content, headers, deadline)
                location = response.headers.get("location")
                if response.status_code not in REDIRECTS or location is None or max_redirects == 0:
                    break
                response.close()
                hops += 1
                if hops > max_redirects:
                    raise SendFailed(host_of(target), f"redirected more than {max_redirects} times")
                try:
                    target = self.check(str(target.join(location)))
                except ValueError as exc:
                    raise SendFailed(host_of(target), f"redirects to a location that {exc}") from None
                if response.status_code == 303:
                    method, content = "GET", None
            try:
                yield response
            except httpx.TimeoutException:
                raise SendFailed(host_of(target), f"stopped sending for {self.timeout:g} s") from None
            except httpx.HTTPError as exc:
                raise SendFailed(host_of(target), f"the answer broke off ({type(exc).__name__}: {exc})") from None
            finally:
                response.close()

    def _send(
        self,
        client: httpx.Client,
        method: str,
        url: httpx.URL,
        content: bytes | None,
        headers: Mapping[str, str],
        deadline: _Deadline | None,
    ) -> httpx.Response:
        host = host_of(url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = self.allow.resolve(host, port, self.resolver)
        except OSError as exc:
            raise SendFailed(host, f"the name does not resolve ({exc.strerror or exc})") from None
        extensions: dict[str, Any] = {"sni_hostname": host} if url.scheme == "https" else {}
        if deadline is not None:
            extensions["trace"] = deadline.trace
        failure = ""
        for address in addresses:
            request = client.build_request(
                method,
                url.copy_with(host=str(address)),
                content=content,
                headers={**headers, "Host": url.netloc.decode("ascii")},
                extensions=extensions,
            )
            try:
                return client.send(request, stream=True)
            except httpx.ConnectError as exc:  # the next address may answer
                failure = f"cannot connect ({exc})"
            except httpx.TimeoutException:
                raise SendFailed(host, f"no answer within {self.timeout:g} s") from None
            except httpx.HTTPError as exc:
                raise SendFailed(host, f"the connection failed ({type(exc).__name__}: {exc})") from None
        raise SendFailed(host, failure)
