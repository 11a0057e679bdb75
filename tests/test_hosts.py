"""The allow-list of outgoing requests (heygemd.hosts) and the client that keeps to it (heygemd.outgoing), against a
real server on 127.0.0.1; names resolve through a resolver the test gives, so any address can be tried without
DNS."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import ip_address
from pathlib import Path

import pytest

from heygemd.errors import CallbackNotAllowed, ConfigError, FetchNotAllowed
from heygemd.hosts import AllowList, Resolver, parse_entry
from heygemd.outgoing import Outgoing, SendFailed
from heygemd.settings import load_settings
from tests.httpserver import Answer, Seen, receiver


def allow(*entries: str) -> AllowList:
    return AllowList.of(entries, setting="notify.callback_hosts", refusal=CallbackNotAllowed)


def resolving(table: dict[str, Sequence[str]]) -> Resolver:
    """A resolver that knows the names of ``table`` only."""

    def resolve(host: str, port: int) -> Sequence[str]:
        if host not in table:
            raise OSError(f"{host} is not known")
        return table[host]

    return resolve


def test_an_empty_list_allows_nothing() -> None:
    for host in ("example.com", "127.0.0.1", "::1"):
        with pytest.raises(CallbackNotAllowed, match="notify.callback_hosts"):
            allow().check_host(host)


def test_names_wildcards_and_networks() -> None:
    rules = allow("Hooks.Example.com.", "*.n8n.example", "10.0.0.0/8", "2001:db8::/32")
    for ok in ("hooks.example.com", "a.n8n.example", "b.c.n8n.example", "10.1.2.3", "2001:db8::5", "[2001:db8::5]"):
        rules.check_host(ok)
    for refused in ("example.com", "n8n.example", "xhooks.example.com", "11.0.0.1", "2001:db9::1"):
        with pytest.raises(CallbackNotAllowed):
            rules.check_host(refused)


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "169.254.1.1", "fe80::1", "fd00:ec2::254", "100.100.100.200", "0.0.0.0", "::"]
)
def test_link_local_and_metadata_addresses_are_refused_even_inside_an_allowed_network(address: str) -> None:
    rules = allow("0.0.0.0/0", "::/0")
    with pytest.raises(CallbackNotAllowed, match="never sends to") as caught:
        rules.check_host(address)
    assert caught.value.code == "CALLBACK_NOT_ALLOWED"
    with pytest.raises(CallbackNotAllowed, match="never sends to"):
        rules.check_address("meta.example", ip_address(address), by_name=True)


@pytest.mark.parametrize("address", ["::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe"])
def test_ipv4_metadata_written_as_ipv6_is_refused(address: str) -> None:
    with pytest.raises(CallbackNotAllowed, match="never sends to"):
        allow("::/0").check_host(address)


def test_a_listed_name_must_resolve_to_public_addresses_unless_the_network_is_listed() -> None:
    table = {"hooks.example.com": ["127.0.0.1"], "public.example.com": ["93.184.215.14"]}
    rules = allow("hooks.example.com", "public.example.com")
    assert rules.resolve("public.example.com", 443, resolving(table)) == [ip_address("93.184.215.14")]
    with pytest.raises(CallbackNotAllowed, match="loopback or private address"):
        rules.resolve("hooks.example.com", 443, resolving(table))
    with_network = allow("hooks.example.com", "127.0.0.0/8")
    assert with_network.resolve("hooks.example.com", 443, resolving(table)) == [ip_address("127.0.0.1")]


def test_one_refused_address_refuses_the_name() -> None:
    table = {"hooks.example.com": ["93.184.215.14", "169.254.169.254"]}
    with pytest.raises(CallbackNotAllowed, match="169.254.169.254"):
        allow("hooks.example.com").resolve("hooks.example.com", 80, resolving(table))


@pytest.mark.parametrize("entry", ["", "http://example.com", "exa mple.com", "*", "a..b", "10.0.0.0/33", "bücher.de"])
def test_bad_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="neither a host name"):
        parse_entry(entry)


@pytest.mark.parametrize(
    ("section", "key"), [("notify", "callback_hosts"), ("web", "fetch_hosts")], ids=["callbacks", "fetch"]
)
def test_a_bad_entry_in_the_settings_names_the_setting(tmp_path: Path, section: str, key: str) -> None:
    config = tmp_path / "heygemd.toml"
    config.write_text(f'[{section}]\n{key} = ["hooks.example.com", "http://x"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{section}.{key}"):
        load_settings(config)


def test_requests_go_to_the_checked_address_with_the_name_as_host() -> None:
    with receiver() as server:
        table = {"receiver.example": ["127.0.0.1"]}
        client = Outgoing(allow("receiver.example", "127.0.0.1"), 5.0, resolving(table))
        with client.open("POST", f"http://receiver.example:{server.port}/hook?token=x", content=b"{}") as answer:
            assert answer.status_code == 200
        (seen,) = server.seen
        assert seen.headers["Host"] == f"receiver.example:{server.port}"
        assert seen.path == "/hook?token=x" and seen.body == b"{}"


def test_a_name_repointed_to_a_refused_address_is_not_connected_to() -> None:
    with receiver() as server:
        table = {"receiver.example": ["127.0.0.1"]}
        client = Outgoing(allow("receiver.example"), 5.0, resolving(table))  # the name, but not its network
        with pytest.raises(CallbackNotAllowed, match="loopback or private"):
            with client.open("POST", f"http://receiver.example:{server.port}/hook"):
                pass
        assert server.seen == []


def test_redirects_are_checked_like_the_first_url() -> None:
    def script(seen: Seen) -> Answer:
        if seen.path == "/a":
            return Answer(302, headers={"Location": "/b"})
        if seen.path == "/b":
            return Answer(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
        return Answer(200, b"ok")

    with receiver(script) as server:
        client = Outgoing(AllowList.of(["127.0.0.1"], setting="web.fetch_hosts", refusal=FetchNotAllowed), 5.0)
        with client.open("GET", server.url("/a"), max_redirects=0) as answer:  # not followed: the 302 itself
            assert answer.status_code == 302
        with pytest.raises(FetchNotAllowed, match="169.254.169.254"):
            with client.open("GET", server.url("/a"), max_redirects=5):
                pass
        with pytest.raises(SendFailed, match="redirected more than 1 times"):
            with client.open("GET", server.url("/a"), max_redirects=1):
                pass
        assert [s.path for s in server.seen] == ["/a", "/a", "/b", "/a", "/b"]


def test_no_answer_within_the_timeout_is_a_send_failure_naming_the_host_only() -> None:
    with receiver(lambda _: Answer(hold=server.release)) as server:
        client = Outgoing(allow("127.0.0.1"), 0.3)
        with pytest.raises(SendFailed) as caught:
            with client.open("POST", server.url("/secret-token-path"), content=b"{}"):
                pass
        assert caught.value.host == "127.0.0.1" and "no answer within 0.3 s" in caught.value.reason
        assert "secret-token-path" not in str(caught.value)


def test_a_closed_port_is_a_send_failure() -> None:
    with receiver() as server:
        port = server.port
    with pytest.raises(SendFailed, match="cannot connect"):
        with Outgoing(allow("127.0.0.1"), 2.0).open("GET", f"http://127.0.0.1:{port}/"):
            pass
