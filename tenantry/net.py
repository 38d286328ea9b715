"""The client's address: the socket's, or the nearest untrusted hop when proxies are trusted."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Returns the CIDR ranges in `values`; raises ValueError naming a bad one."""
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def _trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_ip(remote_addr: str | None, forwarded_for: str | None, proxies: tuple[Network, ...]) -> str | None:
    """Returns the address a request came from.

    The socket's peer, unless that peer is a trusted proxy: then `X-Forwarded-For` is read from
    the right, skipping trusted proxies, and the first other hop is the client. A client can
    prepend anything to the header, but never past a trusted proxy, so a spoofed value only
    ever names an address left of the real one.
    """
    if not remote_addr or not proxies or not _trusted(remote_addr, proxies) or not forwarded_for:
        return remote_addr
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else remote_addr
