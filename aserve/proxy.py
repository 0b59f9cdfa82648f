"""Behind a proxy: who the client is, as trusted proxies tell it (sans-IO).

This module owns three pure pieces and imports no asyncio and no socket: it
sees addresses, header values and bytes, never a connection.

`TrustedPeers` parses ``forwarded_allow_ips`` ("127.0.0.1,10.0.0.0/8", "*")
and answers whether an address is a trusted proxy.

`resolve_forwarded(headers, peer, trusted)` reads ``Forwarded`` (RFC 7239) or
else ``X-Forwarded-For/-Proto/-Host`` and returns the client address, scheme
and host they announce, or None to leave the request as the socket saw it:

- Only a trusted immediate peer is believed; from anyone else the headers
  are ignored. Nothing is read unless a forwarding header is there (one pass
  over the header pairs: the cost of ``proxy_headers`` on a plain request).
- ``Forwarded`` wins whenever it has an element; X-Forwarded-* are then not
  read at all, even if ``Forwarded`` is malformed, since a proxy that writes
  ``Forwarded`` does not vouch for the others. Conversely each proxy must
  strip or append to the family it uses: a header it passes through from the
  client untouched is the client's word.
- Repeated lines are joined in order. The chain is the announced addresses,
  left (original client) to right (nearest proxy), then the peer. It is walked
  from the right: trusted proxies are skipped and the first address that is
  not one is the client. If every address is trusted the left-most is the
  client. Entries left of the stop were written by the client and never read.
- A hop that is not an IP address (``unknown``, an obfuscated ``_name``, a
  missing ``for``, a malformed element or X-Forwarded-For entry) cannot be a
  trusted proxy, so the walk stops there too; its address is unknown, so the
  client stays the socket peer (``client`` is None), while the scheme and host
  of that hop still count: a trusted proxy wrote them.
- Scheme and host come from the hop where the walk stopped: the same
  ``Forwarded`` element, or the same position in X-Forwarded-Proto/-Host when
  that list has as many entries as X-Forwarded-For (each proxy appended to
  all of them). Otherwise their right-most entry is used, the one the nearest
  proxy set (nginx's ``$scheme`` style overwrite).
- Scheme: http or https (ws/wss map to them), any case; host: ASCII host or
  ``[IPv6]`` with an optional port, no spaces, slashes or controls. Anything
  else is ignored (None), never passed on. Addresses are returned normalised:
  ``ipaddress`` text form without brackets or port, an IPv4-mapped IPv6
  address as its IPv4 address; one with a zone id is no address. Unquoted
  ``Forwarded`` values may contain ``:``, ``[`` and ``]``
  (``for=192.0.2.60:8080``), which RFC 7239 asks to quote.

`parse_proxy_header(data)` reads a PROXY protocol v1 or v2 header (HAProxy's
proxy-protocol.txt) from the first bytes of a connection. It returns None
while more bytes are needed, a `ProxyHeader` with the number of bytes it
used, or raises `ProxyProtocolError` as soon as the bytes can no longer be a
header (``GET /`` fails on its first byte: the spec says never to guess).
v1 is checked strictly (single spaces, canonical IPv4 with no leading zeros,
IPv6 without a zone, ports 0-65535 without leading zeros, CRLF within 107
bytes). v2 accepts LOCAL (the real endpoints stand) and PROXY over TCP4, TCP6
and UNIX streams; UNSPEC and the datagram variants fall back to the real
endpoints, as the spec allows (their address block is skipped whole, TLVs
too; so is LOCAL's). A UNIX source is reported as ``(path, 0)``. TLVs are
returned, not interpreted (CRC32C is not checked), but must be well formed;
past `V2_MAX_TLV_BYTES` of them the header is refused.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from .errors import AserveError, ConfigError

__all__ = [
    "V1_MAX_LENGTH",
    "V2_MAX_TLV_BYTES",
    "V2_SIGNATURE",
    "Family",
    "Forwarded",
    "ProxyHeader",
    "ProxyProtocolError",
    "TrustedPeers",
    "parse_proxy_header",
    "resolve_forwarded",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TrustedPeers:
    """The set of trusted proxy addresses: single addresses, CIDR networks, or
    ``*`` for every peer. A Unix socket peer (None or "": no address) is always
    trusted: it is on this machine, behind the socket file's permissions.
    IPv4-mapped IPv6 addresses (a dual-stack socket's view of an IPv4 peer)
    match their IPv4 entries."""

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
                    self._hosts.add(str(_unmapped(ipaddress.ip_address(item))))
            except ValueError:
                raise ConfigError(
                    f"forwarded_allow_ips: {item!r} is not an IP address, a network or '*'"
                ) from None

    def __contains__(self, host: str | None) -> bool:
        if self.everyone or not host:
            return True
        if host in self._hosts:  # the common case: the peer string as asyncio gives it
            return True
        try:
            address = _unmapped(ipaddress.ip_address(host.partition("%")[0]))
        except ValueError:
            return False
        return str(address) in self._hosts or any(address in net for net in self._networks)

    def __repr__(self) -> str:
        return f"TrustedPeers({self.spec!r})"


def _unmapped(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# --- Forwarded / X-Forwarded-* ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Forwarded:
    """What trusted proxies announce about a request; None where they say nothing
    usable (then the request keeps what the socket and its own head say)."""

    #: The client's IP address, normalised (an IPv4-mapped one as IPv4), no port.
    client: str | None
    #: "http" or "https".
    scheme: str | None
    #: The Host the client asked for, ``host`` or ``host:port``.
    host: str | None


_FORWARDED, _X_FOR, _X_PROTO, _X_HOST = range(4)
_WANTED = {
    b"forwarded": _FORWARDED,
    b"x-forwarded-for": _X_FOR,
    b"x-forwarded-proto": _X_PROTO,
    b"x-forwarded-host": _X_HOST,
}
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}

# RFC 7239 section 4 on RFC 9110 tokens and quoted strings. An unquoted value may
# also hold ":[]" (proxies write for=192.0.2.60:8080 unquoted); those are no
# separators, so the leniency cannot change where an element ends.
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_ELEMENT = re.compile(rf"(?:[^\",]|{_QUOTED})*", re.DOTALL)
_PAIR = re.compile(
    rf"[ \t]*(?:([-!#$%&'*+.^_`|~0-9A-Za-z]+)=([-!#$%&'*+.^_`|~0-9A-Za-z:\[\]]+|{_QUOTED})[ \t]*)?"
    r"(;|\Z)",
    re.DOTALL,
)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_PORT_OR_OBFUSCATED = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]+")
_HOST = re.compile(r"(?:[A-Za-z0-9_.-]+|\[([0-9A-Fa-f:.]+)\])(?::([0-9]{1,5}))?")
_HOST_MAX = 261  # 253 for a DNS name, 6 for ":65535", 2 to spare


def resolve_forwarded(
    headers: Iterable[tuple[bytes, bytes]], peer: str | None, trusted: TrustedPeers
) -> Forwarded | None:
    """The client, scheme and host the proxies in front of `peer` announce.

    `headers` are the request's raw pairs with lowercase names, as h11 gives
    them; `peer` is the socket peer's address (None for a Unix socket). None:
    no forwarding header, an untrusted peer, or nothing usable announced.
    """
    found: list[list[bytes]] | None = None
    for name, value in headers:
        kind = _WANTED.get(name)
        if kind is not None:
            if found is None:
                found = [[], [], [], []]
            found[kind].append(value)
    if found is None or peer not in trusted:
        return None
    elements = _forwarded_elements(found[_FORWARDED])
    if elements:
        result = _from_forwarded(elements, trusted)
    else:
        result = _from_x_forwarded(found, trusted)
    if result.client is None and result.scheme is None and result.host is None:
        return None
    return result


def _forwarded_elements(lines: list[bytes]) -> list[str | None]:
    """The elements of every Forwarded line in order; None for one that cannot
    be split (an unterminated quoted string, which runs to the end of its line:
    a quoted string never spans two lines)."""
    elements: list[str | None] = []
    for raw in lines:
        line = raw.decode("latin-1")
        if '"' not in line:
            elements.extend(item for item in line.split(",") if item.strip(" \t"))
            continue
        pos = 0
        while True:
            match = _ELEMENT.match(line, pos)  # always matches, if only ""
            end = match.end() if match is not None else pos
            if end < len(line) and line[end] == '"':
                elements.append(None)
                break
            if line[pos:end].strip(" \t"):
                elements.append(line[pos:end])
            if end >= len(line):
                break
            pos = end + 1
    return elements


def _forwarded_params(element: str | None) -> dict[str, str] | None:
    """An element's parameters, names lowercased, values unquoted; None when it
    is malformed or repeats a parameter (RFC 7239 section 4 forbids it, and
    first-or-last would be a guess)."""
    if element is None:
        return None
    params: dict[str, str] = {}
    pos = 0
    while True:
        match = _PAIR.match(element, pos)
        if match is None:
            return None
        name, value, separator = match.groups()
        if name is not None:
            name = name.lower()
            if name in params:
                return None
            if value.startswith('"'):
                value = _ESCAPE.sub(r"\1", value[1:-1])
            params[name] = value
        if not separator:
            return params
        pos = match.end()


def _from_forwarded(elements: list[str | None], trusted: TrustedPeers) -> Forwarded:
    params: dict[str, str] | None = None
    client: str | None = None
    for element in reversed(elements):
        params = _forwarded_params(element)
        node = params.get("for") if params is not None else None
        client = _node_address(node) if node is not None else None
        if client is None or client not in trusted:
            break
    if params is None:
        return Forwarded(client, None, None)
    return Forwarded(client, _scheme(params.get("proto")), _host(params.get("host")))


def _from_x_forwarded(found: list[list[bytes]], trusted: TrustedPeers) -> Forwarded:
    hops = _list(found[_X_FOR])
    protos = _list(found[_X_PROTO])
    hosts = _list(found[_X_HOST])
    index = -1
    client: str | None = None
    for index in range(len(hops) - 1, -1, -1):
        client = _node_address(hops[index])
        if client is None or client not in trusted:
            break
    return Forwarded(
        client,
        _scheme(_aligned(protos, index, len(hops))),
        _host(_aligned(hosts, index, len(hops))),
    )


def _aligned(values: list[str], index: int, hops: int) -> str | None:
    """The X-Forwarded-Proto/-Host entry of hop `index` when the list has one
    per X-Forwarded-For entry; else the right-most one, the nearest proxy's."""
    if not values:
        return None
    return values[index] if len(values) == hops else values[-1]


def _list(lines: list[bytes]) -> list[str]:
    """A comma-separated header's entries over all its lines, empty ones dropped
    (RFC 9110 section 5.6.1)."""
    if not lines:
        return []
    items = b",".join(lines).decode("latin-1").split(",")
    return [stripped for item in items if (stripped := item.strip(" \t"))]


def _node_address(node: str) -> str | None:
    """The IP address in a Forwarded ``for`` node or an X-Forwarded-For entry:
    ``192.0.2.60``, ``192.0.2.60:8080``, ``[2001:db8::1]:4711``, or a bare IPv6
    address; None for anything else (``unknown``, ``_hidden``, garbage)."""
    parse: Callable[[str], Address]
    if node.startswith("["):  # brackets are for IPv6, and then only they may take a port
        close = node.find("]")
        if close < 0:
            return None
        port = node[close + 1 :]
        if port and not (port[0] == ":" and _PORT_OR_OBFUSCATED.fullmatch(port, 1)):
            return None
        text, parse = node[1:close], ipaddress.IPv6Address
    elif node.count(":") == 1:  # IPv4 with a port; an IPv6 address has at least two
        text, _, port = node.partition(":")
        if not _PORT_OR_OBFUSCATED.fullmatch(port):
            return None
        parse = ipaddress.IPv4Address
    else:
        text, parse = node, ipaddress.ip_address
    if "%" in text:  # a zone id means nothing beyond the proxy's own link
        return None
    try:
        return str(_unmapped(parse(text)))
    except ValueError:
        return None


def _scheme(value: str | None) -> str | None:
    return _SCHEMES.get(value.strip(" \t").lower()) if value is not None else None


def _host(value: str | None) -> str | None:
    if value is None or len(value) > _HOST_MAX:
        return None
    match = _HOST.fullmatch(value)
    if match is None:
        return None
    literal, port = match.groups()
    if port is not None and int(port) > 65535:
        return None
    if literal is not None:
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            return None
    return value


# --- PROXY protocol ----------------------------------------------------------

#: A v1 header is at most this long, CRLF included (proxy-protocol.txt 2.1).
V1_MAX_LENGTH = 107
#: The 12 bytes every v2 header starts with.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: TLV bytes accepted after a v2 address block. The spec allows 65535 in all;
#: HAProxy sends a few dozen (ALPN, authority, SSL facts). More is refused so
#: that a peer cannot make us buffer 64 KiB before the first request.
V2_MAX_TLV_BYTES = 4096

_V1_PREFIX = b"PROXY "
_V1_PROTOCOLS = (b"TCP4 ", b"TCP6 ", b"UNKNOWN")
# What may follow "TCP4 "/"TCP6 " before the CRLF: addresses, ports, spaces.
_V1_CHARACTERS = b"0123456789abcdefABCDEF.: "
_V1_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
_V2_LOCAL, _V2_PROXY = 0, 1
# Address block size by family (high nibble of byte 14): INET, INET6, UNIX.
_V2_ADDRESS_SIZE = {0x1: 12, 0x2: 36, 0x3: 216}

Family = Literal["TCP4", "TCP6", "UNIX", "UNKNOWN", "LOCAL"]
# Family and transport bytes the spec defines; the datagram ones (and UNSPEC)
# fall back to the real endpoints, as a receiver may do with what it does not
# implement. Anything else must be refused.
_V2_FAMILIES: dict[int, Family] = {
    0x00: "UNKNOWN",
    0x11: "TCP4",
    0x12: "UNKNOWN",
    0x21: "TCP6",
    0x22: "UNKNOWN",
    0x31: "UNIX",
    0x32: "UNKNOWN",
}


class ProxyProtocolError(AserveError):
    """The bytes are not a valid PROXY protocol header; `reason` says why in a
    few plain words for the log line. The connection is to be closed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed PROXY protocol header."""

    #: Bytes the header took; ``data[consumed:]`` is the connection's stream.
    consumed: int
    #: 1 (text) or 2 (binary).
    version: int
    #: TCP4/TCP6/UNIX: the addresses below are set. UNKNOWN (v1 UNKNOWN, v2
    #: UNSPEC or datagram) and LOCAL (v2 health checks): they are None and the
    #: socket's own addresses stand.
    family: Family
    #: (address, port) of the client; for UNIX, (path, 0), an abstract socket
    #: name written "@name".
    source: tuple[str, int] | None
    #: (address, port) the client connected to.
    destination: tuple[str, int] | None
    #: v2 type-length-value extensions in order, as (type, value).
    tlvs: tuple[tuple[int, bytes], ...] = ()


def parse_proxy_header(data: bytes | bytearray) -> ProxyHeader | None:
    """Parse the PROXY protocol header at the start of `data`.

    None: all of `data` may be the start of a header, send more. Raises
    `ProxyProtocolError` as soon as it cannot be.
    """
    if not data:
        return None
    if data[0] == 0x50:  # "P"
        return _parse_v1(data)
    if data[0] == 0x0D:  # "\r", the first byte of the v2 signature
        return _parse_v2(data)
    raise ProxyProtocolError("not a PROXY protocol header")


def _parse_v1(data: bytes | bytearray) -> ProxyHeader | None:
    if data[:6] != _V1_PREFIX[: len(data)]:
        raise ProxyProtocolError("not a PROXY protocol header")
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        _check_v1_start(bytes(data[6:V1_MAX_LENGTH]), complete=False)
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyProtocolError("v1 header longer than 107 bytes")
        return None
    line = bytes(data[6:end])
    _check_v1_start(line, complete=True)
    protocol, _, rest = line.partition(b" ")
    if protocol == b"UNKNOWN":  # the rest of the line is to be ignored
        return ProxyHeader(end + 2, 1, "UNKNOWN", None, None)
    if protocol not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError("v1 protocol is not TCP4, TCP6 or UNKNOWN")
    fields = rest.split(b" ")
    if len(fields) != 4:
        raise ProxyProtocolError("v1 header needs 4 fields separated by single spaces")
    version = 4 if protocol == b"TCP4" else 6
    source = _v1_address(fields[0], version)
    destination = _v1_address(fields[1], version)
    family: Family = "TCP4" if version == 4 else "TCP6"
    return ProxyHeader(
        end + 2, 1, family, (source, _v1_port(fields[2])), (destination, _v1_port(fields[3]))
    )


def _check_v1_start(text: bytes, complete: bool) -> None:
    """Refuse a v1 line (after "PROXY ", before the CRLF) that no more bytes
    can make valid: an unknown protocol, a stray CR or LF, a character that has
    no place in addresses and ports, one field too many. An incomplete line may
    end with the CR of its CRLF."""
    for protocol in _V1_PROTOCOLS:
        if text[: len(protocol)] == protocol[: len(text)]:
            break
    else:
        raise ProxyProtocolError("v1 protocol is not TCP4, TCP6 or UNKNOWN")
    if b"\n" in text or b"\r" in (text if complete else text[:-1]):
        raise ProxyProtocolError("v1 header has a CR or LF before its CRLF")
    if protocol == b"UNKNOWN":
        if len(text) > 7 and text[7] not in b" \r":
            raise ProxyProtocolError("v1 protocol is not TCP4, TCP6 or UNKNOWN")
        return
    rest = text[5:].rstrip(b"\r")
    if rest.translate(None, _V1_CHARACTERS):
        raise ProxyProtocolError("v1 header has a character out of place")
    if rest.count(b" ") > 3:
        raise ProxyProtocolError("v1 header needs 4 fields separated by single spaces")


def _v1_address(field: bytes, version: int) -> str:
    text = field.decode("ascii")  # checked: only hex digits, dots and colons
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"v1 address {text!r} is not valid") from None
    if address.version != version:
        raise ProxyProtocolError(f"v1 address {text!r} is not IPv{version}")
    return str(address)


def _v1_port(field: bytes) -> int:
    if _V1_PORT.fullmatch(field) is None or int(field) > 65535:
        raise ProxyProtocolError(f"v1 port {field.decode('ascii')!r} is not valid")
    return int(field)


def _parse_v2(data: bytes | bytearray) -> ProxyHeader | None:
    if data[:12] != V2_SIGNATURE[: len(data)]:
        raise ProxyProtocolError("not a PROXY protocol header")
    if len(data) < 13:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise ProxyProtocolError(f"v2 header with version {version}")
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyProtocolError(f"v2 header with unknown command {command}")
    if len(data) < 14:
        return None
    # LOCAL ignores the family byte, as the spec says; PROXY must name a known one.
    family_byte = data[13]
    family = _V2_FAMILIES.get(family_byte)
    if command == _V2_PROXY and family is None:
        raise ProxyProtocolError(f"v2 header with unknown family/transport 0x{family_byte:02x}")
    if len(data) < 16:
        return None
    (length,) = struct.unpack_from("!H", data, 14)
    address_size = _V2_ADDRESS_SIZE.get(family_byte >> 4, 0)
    if command == _V2_PROXY and length < address_size:
        raise ProxyProtocolError("v2 address block shorter than its family needs")
    if length - address_size > V2_MAX_TLV_BYTES:
        raise ProxyProtocolError(f"v2 header with more than {V2_MAX_TLV_BYTES} bytes of TLVs")
    total = 16 + length
    if len(data) < total:
        return None
    if command == _V2_LOCAL or family is None:
        return ProxyHeader(total, 2, "LOCAL", None, None)
    if family == "UNKNOWN":  # the block's layout is unknown: skip it whole, TLVs too
        return ProxyHeader(total, 2, family, None, None)
    block = bytes(data[16:total])
    tlvs = _v2_tlvs(block, address_size)
    source, destination = _v2_addresses(family, block)
    return ProxyHeader(total, 2, family, source, destination, tlvs)


def _v2_addresses(family: Family, block: bytes) -> tuple[tuple[str, int], tuple[str, int]]:
    if family == "TCP4":
        source_port, destination_port = struct.unpack_from("!HH", block, 8)
        return (
            (str(ipaddress.IPv4Address(block[0:4])), source_port),
            (str(ipaddress.IPv4Address(block[4:8])), destination_port),
        )
    if family == "TCP6":
        source_port, destination_port = struct.unpack_from("!HH", block, 32)
        return (
            (str(ipaddress.IPv6Address(block[0:16])), source_port),
            (str(ipaddress.IPv6Address(block[16:32])), destination_port),
        )
    return (_unix_path(block[0:108]), 0), (_unix_path(block[108:216]), 0)


def _unix_path(raw: bytes) -> str:
    if raw[:1] == b"\0" and raw.strip(b"\0"):  # Linux abstract namespace
        return "@" + raw[1:].rstrip(b"\0").decode("utf-8", "backslashreplace")
    return raw.partition(b"\0")[0].decode("utf-8", "backslashreplace")


def _v2_tlvs(block: bytes, start: int) -> tuple[tuple[int, bytes], ...]:
    tlvs: list[tuple[int, bytes]] = []
    pos = start
    while pos < len(block):
        if pos + 3 > len(block):
            raise ProxyProtocolError("v2 TLV cut short")
        kind, size = struct.unpack_from("!BH", block, pos)
        end = pos + 3 + size
        if end > len(block):
            raise ProxyProtocolError("v2 TLV longer than the header")
        tlvs.append((kind, block[pos + 3 : end]))
        pos = end
    return tuple(tlvs)
