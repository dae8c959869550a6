"""Who is calling: the network address auth's limits count, behind the proxies it trusts.

Behind a Gateway or an ingress controller every connection comes from the proxy, so the peer
alone puts every caller behind one limit: an attacker's failed guesses would slow everybody's
sign-in, and back off a victim's account for everybody, where the limiter promises to leave
the real user, at their own address, untouched. A proxy auth is told to trust
(``SEVVO_AUTH_TRUSTED_PROXIES``) names its client in ``x-forwarded-for``; auth reads that
header from the right, past the proxies it trusts, and counts the first address that is not
one of them. A caller cannot pick its address that way: whatever it writes into the header
itself stays to the left of what the trusted proxy appends. Without trusted proxies (the
default), or from a peer that is not one, the header is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

import grpc

FORWARDED_FOR = "x-forwarded-for"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class TrustedProxies:
    """The proxies whose ``x-forwarded-for`` auth believes; none by default."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, value: str) -> TrustedProxies:
        """From comma-separated addresses and CIDR blocks (``10.0.0.0/8, fd00::/8``); a
        ValueError names the first entry that is neither."""
        networks: list[Network] = []
        for entry in (part.strip() for part in value.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR block") from None
        return cls(tuple(networks))

    def caller(self, peer: str, forwarded_for: Iterable[str]) -> str:
        """The caller's address as a gRPC peer string (``ipv4:1.2.3.4:0``): ``peer`` itself
        unless it is a trusted proxy, else the first untrusted hop of ``forwarded_for`` (the
        header's values, in order) read from the right.

        A hop that is no address stops the reading: the proxy is counted, as without a header.
        """
        if not self._trusts(_address_of(peer)):
            return peer
        hops = [hop for value in forwarded_for for hop in value.split(",")]
        for hop in reversed(hops):
            address = _hop_address(hop)
            if address is None:
                return peer
            if not self._trusts(address):
                return _as_peer(address)
        return peer

    def of(self, context: grpc.aio.ServicerContext) -> str:
        """The caller of an RPC, as ``caller`` reads it from the call's peer and metadata."""
        metadata = context.invocation_metadata() or ()
        return self.caller(
            context.peer(),
            (str(value) for key, value in metadata if key == FORWARDED_FOR),
        )

    def _trusts(self, address: Address | None) -> bool:
        return address is not None and any(address in network for network in self.networks)


def peer_host(peer: str) -> tuple[str, str]:
    """The scheme and host of a gRPC peer string: ``ipv4:1.2.3.4:5`` is ("ipv4", "1.2.3.4"),
    ``ipv6:[::1]:5`` ("ipv6", "::1"); any other scheme keeps the rest whole."""
    scheme, _, rest = unquote(peer).partition(":")
    if scheme == "ipv4":
        return scheme, rest.rpartition(":")[0] or rest
    if scheme == "ipv6":
        return scheme, rest.rpartition(":")[0].strip("[]") if "]" in rest else rest
    return scheme, rest


def _address_of(peer: str) -> Address | None:
    """The address of a gRPC peer string, if it has one."""
    scheme, host = peer_host(peer)
    return _plain(host) if scheme in ("ipv4", "ipv6") else None


def _hop_address(hop: str) -> Address | None:
    """An address as proxies write it into ``x-forwarded-for``: bare, or with a port
    (``1.2.3.4:5``, ``[2001:db8::1]:5``)."""
    hop = hop.strip()
    if hop.startswith("["):
        return _plain(hop[1:].partition("]")[0])
    if hop.count(":") == 1:
        hop = hop.partition(":")[0]
    return _plain(hop)


def _plain(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    # A dual-stack listener sees IPv4 callers as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _as_peer(address: Address) -> str:
    if isinstance(address, ipaddress.IPv4Address):
        return f"ipv4:{address}:0"
    return f"ipv6:[{address}]:0"
