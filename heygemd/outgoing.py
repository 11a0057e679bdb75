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

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

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
    ) -> Iterator[httpx.Response]:
        """Send the request and yield the answer, its body not read yet (``iter_bytes``). Redirects up to
        ``max_redirects`` are followed (each URL checked like the first; a 303 turns into GET); beyond that a
        redirect answer is yielded as it is when ``max_redirects`` is 0, else SendFailed. The allow-list's error
        when a host or address is not allowed, SendFailed when there is no answer (also when reading the body in
        the with-block times out or breaks off)."""
        target = self.check(url)
        hops = 0
        with httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False) as client:
            while True:
                response = self._send(client, method, target, content, headers or {})
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
        self, client: httpx.Client, method: str, url: httpx.URL, content: bytes | None, headers: Mapping[str, str]
    ) -> httpx.Response:
        host = host_of(url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = self.allow.resolve(host, port, self.resolver)
        except OSError as exc:
            raise SendFailed(host, f"the name does not resolve ({exc.strerror or exc})") from None
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
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
