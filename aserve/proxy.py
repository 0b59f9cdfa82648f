"""Trusted proxies: who may tell us the client's address (sans-IO).

`TrustedPeers` parses ``forwarded_allow_ips`` ("127.0.0.1,10.0.0.0/8", "*") and
answers whether a peer address is one of them. This module imports no asyncio:
it sees addresses and header values, never sockets.
"""

from __future__ import annotations

import ipaddress

from .errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedPeers:
    """The set of trusted proxy addresses: single addresses, CIDR networks, or
    ``*`` for every peer. A Unix socket peer (no address) is always trusted: it
    is on this machine, behind the socket file's permissions."""

    __slots__ = ("spec", "everyone", "_hosts", "_networks")

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.everyone = False
        self._hosts: set[str] = set()
        self._networks: list[Network] = []
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            if item == "*":
                self.everyone = True
                continue
            try:
                if "/" in item:
                    self._networks.append(ipaddress.ip_network(item, strict=False))
                else:
                    self._hosts.add(str(ipaddress.ip_address(item)))
            except ValueError:
                raise ConfigError(
                    f"forwarded_allow_ips: {item!r} is not an IP address, a network or '*'"
                ) from None

    def __contains__(self, host: str | None) -> bool:
        if self.everyone or not host:
            return True
        if host in self._hosts:
            return True
        if not self._networks:
            return False
        try:
            address = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)

    def __repr__(self) -> str:
        return f"TrustedPeers({self.spec!r})"
