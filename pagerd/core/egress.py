"""Where a webhook page may go: the egress rule of CONTRACT §5, pure.

A webhook's URL is chosen by whoever holds an API token. Without a rule pagerd would
POST wherever it points: to services listening on its own loopback, to a cloud's
metadata address (169.254.169.254), into the private network behind the firewall.
So a webhook target whose address is loopback, private, link-local or unspecified
is refused, unless ``[notify.webhook] allow_hosts`` lists it: a host-name entry by
the URL's host, a CIDR entry (or a single address) by the address connected to.

When a policy is saved (API or config file), ``url_refusal`` refuses a URL that names
such an address literally. When a page is sent, ``pagerd.notify.egress`` checks every
address the connection is actually made to with ``address_allowed``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

ADDRESS_NOT_ALLOWED = "address not allowed"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# IPv6 addresses that carry an IPv4 one, which is what a connection to them reaches:
# IPv4-mapped (::ffff:a.b.c.d, which Linux connects over IPv4) and NAT64's well-known prefix.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# The forms of an IPv4 address inet_aton accepts besides a.b.c.d: 127.1, 0x7f.1, 2130706433.
_IPV4_SHORTHAND = re.compile(r"[0-9][0-9a-fA-FxX.]*")
_HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*")


def unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one stands for, where it stands for one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(address.packed[-4:])
    return address


def restricted_kind(address: IPAddress) -> str | None:
    """What makes ``address`` internal ("loopback", "private", ...), or None if it is not."""
    address = unwrap(address)
    if address.is_unspecified:
        return "unspecified"  # 0.0.0.0 and :: reach the host itself
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_private:
        return "private"
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address a URL's host names literally, in any form a resolver accepts, or None."""
    try:
        return ipaddress.ip_address(host.replace("%25", "%"))  # a zone, as a URL escapes it
    except ValueError:
        pass
    if _IPV4_SHORTHAND.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def url_host(url: str) -> str:
    """The host a URL names (lower case, no brackets), or "" if it names none."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _host_key(host: str) -> str:
    return host.lower().rstrip(".")


def allow_hosts_problems(entries: Iterable[str]) -> list[tuple[int, str]]:
    """(index, problem) for each entry of ``allow_hosts`` that is no host name, address or CIDR."""
    problems = []
    for index, entry in enumerate(entries):
        if "/" in entry:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as error:
                problems.append((index, f"not a CIDR: {error}"))
        elif literal_address(entry) is None and not _HOST_NAME.fullmatch(entry.rstrip(".")):
            problems.append((index, f"not a host name, address or CIDR: {entry!r}"))
    return problems


@dataclass(frozen=True, slots=True)
class EgressRule:
    """The egress rule with ``[notify.webhook] allow_hosts`` (checked by the config)."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_allow_hosts(cls, entries: Iterable[str]) -> EgressRule:
        """The rule of valid ``allow_hosts`` entries (see ``allow_hosts_problems``)."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            if "/" in entry:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            hosts.add(_host_key(entry))
            address = literal_address(entry)
            if address is not None:  # an address is both: its own host name, a network of one
                networks.append(ipaddress.ip_network(address))
        return cls(frozenset(hosts), tuple(networks))

    def host_allowed(self, host: str) -> bool:
        """Whether a host-name entry names ``host``: its addresses are then not checked."""
        return _host_key(host) in self.hosts

    def address_allowed(self, address: IPAddress) -> bool:
        """Whether a connection to ``address`` is allowed."""
        if restricted_kind(address) is None:
            return True
        return any(address in net or unwrap(address) in net for net in self.networks)

    def url_refusal(self, url: str) -> str | None:
        """Why a webhook ``url`` is refused as it is written (before any lookup), or None."""
        host = url_host(url)
        if not host or self.host_allowed(host):
            return None
        if _host_key(host) == "localhost" or _host_key(host).endswith(".localhost"):
            kind: str | None = "loopback"  # RFC 6761: localhost names are the loopback
        else:
            address = literal_address(host)
            if address is None or self.address_allowed(address):
                return None
            kind = restricted_kind(address)
        return (
            f"{host} is a {kind} address; a webhook may reach it only if"
            " [notify.webhook] allow_hosts lists it"
        )
