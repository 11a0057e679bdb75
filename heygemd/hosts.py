"""Which hosts and addresses heygemd may send requests to (signed callbacks, URL inputs): one allow-list rule for
both, read from a setting (``[notify] callback_hosts``, ``[web] fetch_hosts``). The requests themselves are made
by :mod:`heygemd.outgoing`.

An entry is a host name (``hooks.example.com``; ``*.example.com`` for every name below ``example.com``), or an
address or network in CIDR form (``203.0.113.7``, ``10.0.0.0/8``, ``fd12:3456::/48``). The default list is empty:
nothing is allowed.

Two checks, both raising the list's own error (:class:`heygemd.errors.CallbackNotAllowed`,
:class:`heygemd.errors.FetchNotAllowed`) naming the host and the setting:

- :meth:`AllowList.check_host`, without DNS (at submission): the URL's host is a listed name, or an address inside
  a listed network.
- :meth:`AllowList.resolve`, each time a request is sent: every address the name resolves to is checked, and the
  request goes to one of those checked addresses (so a name repointed after the submission, DNS rebinding, is
  caught):

  * an address in :data:`ALWAYS_REFUSED` (link-local, cloud metadata, "this host", multicast) is refused whatever
    the list says, even inside a listed network;
  * an address inside a listed network is allowed;
  * otherwise a host allowed by its name must resolve to public (globally routable) addresses only: loopback and
    private addresses (127.0.0.0/8, ::1, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7, ...)
    need their network listed too. Whoever controls a listed name's DNS cannot point heygemd at the machine's
    own services or the internal network: that takes the operator naming the network.

IPv4 addresses written as IPv6 (``::ffff:169.254.169.254``, NAT64's ``64:ff9b::a9fe:a9fe``) are checked as the
IPv4 address they reach.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from heygemd.errors import OutgoingRefused

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
Resolver = Callable[[str, int], Sequence[str]]
"""``(host name, port) -> addresses`` as text, in the order to try them; OSError when the name does not resolve."""

ALWAYS_REFUSED: tuple[IPNetwork, ...] = tuple(
    ip_network(n)
    for n in (
        "169.254.0.0/16",  # IPv4 link-local; the cloud metadata service 169.254.169.254 (AWS, GCP, Azure, ...)
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "0.0.0.0/8",  # "this host": a connection there reaches the machine itself
        "::/128",
        "224.0.0.0/4",  # multicast and broadcast
        "255.255.255.255/32",
        "ff00::/8",
    )
)
"""Addresses no request of heygemd ever goes to, whatever the allow-list says."""

NAT64 = IPv6Network("64:ff9b::/96")
"""The well-known NAT64 prefix: ``64:ff9b::a.b.c.d`` reaches the IPv4 address a.b.c.d through a NAT64 gateway."""

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")


def parse_entry(entry: str) -> str | IPNetwork:
    """One allow-list entry: a network (an address is a network of one), or a host name in lower case (ASCII:
    an internationalised name in its ``xn--`` form), possibly ``*.`` and a name. ValueError when it is neither."""
    text = entry.strip().lower().rstrip(".")
    try:
        return ip_network(text, strict=False)
    except ValueError:
        pass
    if len(text) > 253 or not _NAME.fullmatch(text):
        raise ValueError(
            f"{entry!r} is neither a host name (hooks.example.com, *.example.com; an internationalised name in its "
            "xn-- form) nor an address or network (203.0.113.7, 10.0.0.0/8, fd12:3456::/48)"
        )
    return text


def parse_entries(entries: Iterable[str]) -> tuple[str, ...]:
    """Check every entry (:func:`parse_entry`; the settings' validator); returns them as given."""
    values = tuple(entries)
    for entry in values:
        parse_entry(entry)
    return values


def _reached(ip: IPAddress) -> tuple[IPAddress, ...]:
    """The address itself and, for an IPv6 address that carries an IPv4 one, that IPv4 address."""
    if isinstance(ip, IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip, ip.ipv4_mapped
        if ip in NAT64:
            return ip, IPv4Address(int(ip) & 0xFFFFFFFF)
    return (ip,)


def always_refused(ip: IPAddress) -> bool:
    return any(a in net for a in _reached(ip) for net in ALWAYS_REFUSED if a.version == net.version)


def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system's resolver (``getaddrinfo``), each once, in its order."""
    found: list[str] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = str(sockaddr[0]).split("%", 1)[0]  # an IPv6 scope (fe80::1%eth0) names no other address
        if address not in found:
            found.append(address)
    return found


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an address when it is one (``[::1]`` too), else None (a name)."""
    try:
        return ip_address(host.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True)
class AllowList:
    """The hosts and networks of one setting; ``refusal`` is the error raised for anything else."""

    setting: str
    refusal: type[OutgoingRefused]
    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, entries: Iterable[str], *, setting: str, refusal: type[OutgoingRefused]) -> "AllowList":
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for entry in entries:
            rule = parse_entry(entry)
            if isinstance(rule, str):
                if rule.startswith("*."):
                    suffixes.append(rule[1:])
                else:
                    names.add(rule)
            else:
                networks.append(rule)
        return cls(setting, refusal, frozenset(names), tuple(suffixes), tuple(networks))

    def _in_networks(self, ip: IPAddress) -> bool:
        return any(a in net for a in _reached(ip) for net in self.networks if a.version == net.version)

    def _name_listed(self, name: str) -> bool:
        return name in self.names or any(name.endswith(suffix) for suffix in self.suffixes)

    def check_host(self, host: str) -> None:
        """The URL's host (a name in lower-case ASCII, or an address) is allowed: a listed name, or an address in a
        listed network and not always refused. No DNS: the addresses are checked when sending (:meth:`resolve`)."""
        ip = literal_address(host)
        if ip is None:
            if not self._name_listed(host.lower().rstrip(".")):
                raise self.refusal(f"{host} is not among the hosts {self.setting} allows")
            return
        self.check_address(host, ip, by_name=False)

    def check_address(self, host: str, ip: IPAddress, *, by_name: bool) -> None:
        """``ip``, an address of ``host``, may be connected to (see the module's rules)."""
        if always_refused(ip):
            raise self.refusal(
                f"{host} is the address {ip}, a link-local, cloud metadata or other address heygemd never sends to"
                if not by_name
                else f"{host} resolves to {ip}, a link-local, cloud metadata or other address heygemd never sends to",
                hint="Use another host: this address is refused whatever the allow-list says.",
            )
        if self._in_networks(ip):
            return
        if not by_name:
            raise self.refusal(f"{host} is not inside a network {self.setting} allows")
        if not all(a.is_global for a in _reached(ip)):
            raise self.refusal(
                f"{host} resolves to {ip}, a loopback or private address; {self.setting} allows a name only at "
                "public addresses unless it lists the address's network too"
            )

    def resolve(self, host: str, port: int, resolver: Resolver = system_resolver) -> list[IPAddress]:
        """The addresses to connect to for ``host`` (checked by :meth:`check_host` first), every one of them checked
        (:meth:`check_address`): a name with one refused address is refused whole. OSError when the name does not
        resolve."""
        self.check_host(host)
        ip = literal_address(host)
        if ip is not None:
            return [ip]
        addresses = [ip_address(a) for a in resolver(host, port)]
        if not addresses:
            raise OSError(f"{host} has no address")
        for address in addresses:
            self.check_address(host, address, by_name=True)
        return addresses
