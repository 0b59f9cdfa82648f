"""proxy.py without a network: trusted peers, Forwarded / X-Forwarded-* and the
PROXY protocol, as tables of inputs against results, plus hypothesis properties
(the parser raises nothing but ProxyProtocolError, never decides on a prefix
what the whole header contradicts, and spoofed entries are never believed)."""

from __future__ import annotations

import ipaddress
import struct
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aserve.errors import ConfigError
from aserve.proxy import (
    V1_MAX_LENGTH,
    V2_MAX_TLV_BYTES,
    V2_SIGNATURE,
    Family,
    Forwarded,
    ProxyHeader,
    ProxyProtocolError,
    TrustedPeers,
    parse_proxy_header,
    resolve_forwarded,
)

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TRUSTED = TrustedPeers("127.0.0.1, ::1, 10.0.0.0/8, fd00::/8")
PROXY_PEER = "10.0.0.1"
CLIENT = "203.0.113.7"


def raw(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in pairs]


def via_proxy(*pairs: tuple[str, str], peer: str | None = PROXY_PEER) -> Forwarded | None:
    return resolve_forwarded(raw(*pairs), peer, TRUSTED)


# --- TrustedPeers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "127.0.0.2", False),
        ("10.0.0.0/8", "10.255.1.2", True),
        ("10.0.0.0/8", "11.0.0.1", False),
        ("10.1.2.3/8", "10.9.9.9", True),  # host bits are forgiven
        ("::1", "::1", True),
        ("0:0:0:0:0:0:0:1", "::1", True),
        ("::1", "0:0::1", True),
        ("fd00::/8", "fd12:3456::1", True),
        ("fd00::/8", "fe80::1", False),
        ("fe80::/10", "fe80::1%eth0", True),  # a zone id does not hide the address
        ("127.0.0.1", "::ffff:127.0.0.1", True),  # a dual-stack socket's IPv4 peer
        ("10.0.0.0/8", "::ffff:10.1.1.1", True),
        ("127.0.0.1", "::ffff:127.0.0.2", False),
        ("*", "198.51.100.1", True),
        ("*", "2001:db8::1", True),
        ("127.0.0.1", None, True),  # a Unix socket peer is local
        ("127.0.0.1", "", True),  # asyncio's peername for a Unix socket
        ("", "127.0.0.1", False),
        ("127.0.0.1", "localhost", False),
        ("10.0.0.0/8", "not an address", False),
        ("10.0.0.0/8", "10.0.0.1:80", False),
    ],
)
def test_trusted_peers_membership(spec: str, host: str | None, expected: bool) -> None:
    assert (host in TrustedPeers(spec)) is expected


def test_trusted_peers_ignores_blanks_and_spaces() -> None:
    peers = TrustedPeers(" 127.0.0.1 , ,10.0.0.0/8,")
    assert "127.0.0.1" in peers
    assert "10.2.3.4" in peers
    assert "192.0.2.1" not in peers
    assert not peers.everyone


def test_trusted_peers_star_among_others() -> None:
    assert TrustedPeers("127.0.0.1, *").everyone


@pytest.mark.parametrize("spec", ["localhost", "10.0.0.0/33", "1.2.3", "::1/129", "10.0.0.1-5"])
def test_trusted_peers_bad_entry_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="forwarded_allow_ips"):
        TrustedPeers(spec)


def test_trusted_peers_repr_keeps_the_spec() -> None:
    assert repr(TrustedPeers("127.0.0.1,10.0.0.0/8")) == "TrustedPeers('127.0.0.1,10.0.0.0/8')"


# --- resolve_forwarded: who is asking --------------------------------------


def test_no_forwarding_headers_is_none() -> None:
    assert via_proxy() is None
    assert via_proxy(("host", "example.com"), ("x-forwarded", "1.2.3.4")) is None


@pytest.mark.parametrize(
    "header",
    [
        ("x-forwarded-for", CLIENT),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "example.com"),
        ("forwarded", f"for={CLIENT};proto=https"),
    ],
)
def test_untrusted_peer_is_never_believed(header: tuple[str, str]) -> None:
    assert via_proxy(header, peer="198.51.100.9") is None
    assert via_proxy(header, peer="::ffff:198.51.100.9") is None


def test_unix_socket_peer_is_trusted() -> None:
    assert via_proxy(("x-forwarded-for", CLIENT), peer=None) == Forwarded(CLIENT, None, None)


def test_mapped_ipv4_peer_is_trusted_like_its_ipv4() -> None:
    found = via_proxy(("x-forwarded-for", CLIENT), peer="::ffff:10.0.0.1")
    assert found == Forwarded(CLIENT, None, None)


@pytest.mark.parametrize(
    ("lines", "client"),
    [
        ([CLIENT], CLIENT),
        # The client wrote the left part; the walk stops before reaching it.
        (["6.6.6.6, " + CLIENT], CLIENT),
        (["6.6.6.6, 10.9.9.9, " + CLIENT], CLIENT),
        # Proxies anywhere in 10.0.0.0/8 are skipped.
        ([CLIENT + ", 10.1.2.3, 10.0.0.2"], CLIENT),
        (["6.6.6.6, " + CLIENT + ", 10.1.2.3, 10.0.0.2"], CLIENT),
        # All trusted: the left-most is the client.
        (["10.4.4.4, 10.1.2.3, 127.0.0.1"], "10.4.4.4"),
        # Several lines are one list, in order.
        (["6.6.6.6", CLIENT, "10.0.0.2"], CLIENT),
        (["6.6.6.6, 1.1.1.1", "2.2.2.2"], "2.2.2.2"),
        # Empty entries are dropped; spaces and tabs around entries too.
        ([CLIENT + ",, 10.0.0.2,"], CLIENT),
        (["\t" + CLIENT + " \t"], CLIENT),
        # Ports and brackets are removed, IPv6 normalised.
        ([CLIENT + ":5555"], CLIENT),
        (["2001:DB8:0::1"], "2001:db8::1"),
        (["[2001:db8::1]:4711"], "2001:db8::1"),
        (["[2001:db8::1]"], "2001:db8::1"),
        (["2001:db8::1, fd00::5, ::1"], "2001:db8::1"),
        (["::ffff:192.0.2.1"], "192.0.2.1"),
        (["[::FFFF:c000:201]:80"], "192.0.2.1"),
    ],
)
def test_x_forwarded_for_right_most_untrusted_is_the_client(lines: list[str], client: str) -> None:
    found = via_proxy(*(("x-forwarded-for", line) for line in lines))
    assert found == Forwarded(client, None, None)


def test_star_trusts_everyone_so_the_left_most_is_the_client() -> None:
    found = resolve_forwarded(
        raw(("x-forwarded-for", "6.6.6.6, " + CLIENT)), "192.0.2.1", TrustedPeers("*")
    )
    assert found == Forwarded("6.6.6.6", None, None)


@pytest.mark.parametrize(
    "entry",
    ["unknown", "_hidden", "garbage", "1.2.3", "256.1.1.1", "01.2.3.4", "1.2.3.4:http",
     "fe80::1%eth0", "[192.0.2.1]", "[2001:db8::1", "[2001:db8::1]x", "[2001:db8::1]:", "1.2.3.4:",
     "a:b", "1.2.3.4 5.6.7.8", "1.2.3.4\xa0"],
)  # fmt: skip
def test_x_forwarded_for_entry_that_is_no_address_ends_the_walk(entry: str) -> None:
    # The entry left of it is never read, and the client stays the socket peer.
    assert via_proxy(("x-forwarded-for", f"6.6.6.6, {entry}, 10.0.0.2")) is None
    found = via_proxy(
        ("x-forwarded-for", f"6.6.6.6, {entry}, 10.0.0.2"),
        ("x-forwarded-proto", "http, https, http"),
    )
    assert found == Forwarded(None, "https", None)


def test_untrusted_entry_right_of_a_bad_one_is_the_client() -> None:
    assert via_proxy(("x-forwarded-for", f"garbage, {CLIENT}")) == Forwarded(CLIENT, None, None)


# --- resolve_forwarded: X-Forwarded-Proto / -Host --------------------------


@pytest.mark.parametrize(
    ("xff", "xfp", "scheme"),
    [
        (CLIENT, "https", "https"),
        # One entry per hop: the one at the client's position.
        (f"{CLIENT}, 10.0.0.2", "https, http", "https"),
        (f"6.6.6.6, {CLIENT}, 10.0.0.2", "http, https, http", "https"),
        # All trusted: the left-most hop's.
        ("10.0.0.3, 10.0.0.2", "https, http", "https"),
        # Lengths differ: the right-most, the nearest proxy's.
        (f"{CLIENT}, 10.0.0.2", "http", "http"),
        (f"{CLIENT}, 10.0.0.2", "https, https, http", "http"),
        (CLIENT, "http, https", "https"),
    ],
)
def test_x_forwarded_proto_follows_the_client_position(xff: str, xfp: str, scheme: str) -> None:
    found = via_proxy(("x-forwarded-for", xff), ("x-forwarded-proto", xfp))
    assert found is not None
    assert found.scheme == scheme


def test_x_forwarded_proto_lines_are_joined_before_aligning() -> None:
    found = via_proxy(
        ("x-forwarded-for", f"{CLIENT}, 10.0.0.2"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-proto", "http"),
    )
    assert found == Forwarded(CLIENT, "https", None)


def test_x_forwarded_proto_and_host_without_for_keep_the_peer() -> None:
    found = via_proxy(("x-forwarded-proto", "https"), ("x-forwarded-host", "example.com:8443"))
    assert found == Forwarded(None, "https", "example.com:8443")


def test_x_forwarded_host_follows_the_client_position() -> None:
    found = via_proxy(
        ("x-forwarded-for", f"6.6.6.6, {CLIENT}, 10.0.0.2"),
        ("x-forwarded-host", "evil.example, shop.example, internal.example"),
    )
    assert found == Forwarded(CLIENT, None, "shop.example")


@pytest.mark.parametrize(
    ("value", "scheme"),
    [
        ("https", "https"),
        ("HTTPS", "https"),
        ("Http", "http"),
        (" https ", "https"),
        ("wss", "https"),
        ("WS", "http"),
        ("ftp", None),
        ("https://", None),
        ("http s", None),
        ("", None),
        ("https\xa0", None),
    ],
)
def test_scheme_is_http_or_https_or_ignored(value: str, scheme: str | None) -> None:
    found = via_proxy(("x-forwarded-for", CLIENT), ("x-forwarded-proto", value))
    assert found == Forwarded(CLIENT, scheme, None)
    assert via_proxy(("forwarded", f'for={CLIENT};proto="{value}"')) == Forwarded(
        CLIENT, scheme, None
    )


@pytest.mark.parametrize(
    "host",
    ["example.com", "example.com:8443", "localhost", "EXAMPLE.com", "192.0.2.1:80", "[2001:db8::1]",
     "[2001:db8::1]:8443", "xn--bcher-kva.example", "under_score.example", "a" * 253 + ":65535"],
)  # fmt: skip
def test_plausible_host_is_passed_on(host: str) -> None:
    assert via_proxy(("x-forwarded-host", host)) == Forwarded(None, None, host)
    quoted = host.replace("\\", "\\\\")
    assert via_proxy(("forwarded", f'host="{quoted}"')) == Forwarded(None, None, host)


@pytest.mark.parametrize(
    "host",
    ["exa mple.com", "example.com/path", "example.com\\x", "a\x01b", "bücher.example",
     "example.com:", "example.com:99999", "example.com:123456", "example.com:http", "[nothex]",
     "[2001:db8::1", "[::1]x", "user@example.com", "example.com?x", "example.com#x", "a" * 300,
     ":80", "[1:2:3:4:5:6:7:8:9]"],
)  # fmt: skip
def test_implausible_host_is_ignored(host: str) -> None:
    assert via_proxy(("x-forwarded-for", CLIENT), ("x-forwarded-host", host)) == Forwarded(
        CLIENT, None, None
    )
    quoted = host.replace("\\", "\\\\").replace('"', '\\"')
    found = via_proxy(("forwarded", f'for={CLIENT};host="{quoted}"'))
    assert found == Forwarded(CLIENT, None, None)


def test_nothing_usable_announced_is_none() -> None:
    assert via_proxy(("x-forwarded-for", "unknown"), ("x-forwarded-proto", "gopher")) is None
    assert via_proxy(("x-forwarded-for", ""), ("x-forwarded-host", "bad host")) is None


# --- resolve_forwarded: Forwarded (RFC 7239) --------------------------------


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([f"for={CLIENT}"], Forwarded(CLIENT, None, None)),
        ([f"for={CLIENT};proto=https;host=example.com"], Forwarded(CLIENT, "https", "example.com")),
        ([f'for="{CLIENT}";proto="https";host="ex.com"'], Forwarded(CLIENT, "https", "ex.com")),
        # RFC 7239 section 4 examples.
        (['for="_gazonk"'], None),
        (['For="[2001:db8:cafe::17]:4711"'], Forwarded("2001:db8:cafe::17", None, None)),
        (["for=192.0.2.60;proto=http;by=203.0.113.43"], Forwarded("192.0.2.60", "http", None)),
        (["for=192.0.2.43, for=198.51.100.17"], Forwarded("198.51.100.17", None, None)),
        # Case-insensitive names, spaces around pairs and elements.
        ([f"FOR={CLIENT};Proto=HTTPS;HOST=example.com"], Forwarded(CLIENT, "https", "example.com")),
        ([f"  for={CLIENT} ; proto=https  ,  "], Forwarded(CLIENT, "https", None)),
        ([f"for={CLIENT};;proto=https;"], Forwarded(CLIENT, "https", None)),
        # Ports, brackets, IPv6, unquoted colons (not RFC, but sent in the wild).
        (['for="192.0.2.60:8080"'], Forwarded("192.0.2.60", None, None)),
        (["for=192.0.2.60:8080"], Forwarded("192.0.2.60", None, None)),
        (['for="192.0.2.60:_port"'], Forwarded("192.0.2.60", None, None)),
        (['for="[2001:db8::1]:4711"'], Forwarded("2001:db8::1", None, None)),
        (["for=[2001:db8::1]:4711"], Forwarded("2001:db8::1", None, None)),
        (['for="[2001:DB8::1]:_p"'], Forwarded("2001:db8::1", None, None)),
        (['for="2001:db8::1"'], Forwarded("2001:db8::1", None, None)),
        # Escapes in quoted strings; a comma or semicolon inside quotes is no separator.
        ([f'for="{CLIENT}";host="ex\\ample.com"'], Forwarded(CLIENT, None, "example.com")),
        ([f'for="{CLIENT}";by="a,b;c";proto=https'], Forwarded(CLIENT, "https", None)),
        # Several lines and elements; the walk stops at the client's element,
        # whose proto and host count (not the nearest proxy's).
        (
            [f"for=6.6.6.6;proto=https;host=evil.example, for={CLIENT};proto=https;host=shop",
             "for=10.0.0.2;proto=http;host=internal"],
            Forwarded(CLIENT, "https", "shop"),
        ),
        (
            [f'for="{CLIENT}";proto=https, for="[fd00::5]";proto=http', "for=10.0.0.2;proto=http"],
            Forwarded(CLIENT, "https", None),
        ),
        # All trusted: the left-most element.
        (["for=10.0.0.3;proto=https, for=10.0.0.2"], Forwarded("10.0.0.3", "https", None)),
        # No usable for: the client stays the peer; that element's proto/host count.
        (["for=unknown;proto=https;host=example.com"], Forwarded(None, "https", "example.com")),
        ([f'for={CLIENT}, for="_hidden";proto=https'], Forwarded(None, "https", None)),
        (["proto=https;host=example.com"], Forwarded(None, "https", "example.com")),
        ([f"for={CLIENT}, by=10.0.0.2;proto=http"], Forwarded(None, "http", None)),
        (['for="[192.0.2.1]";proto=https'], Forwarded(None, "https", None)),
        (['for="[fe80::1%25eth0]";proto=https'], Forwarded(None, "https", None)),
        (["for=;proto=https"], None),  # malformed element: nothing from it
        # A malformed or duplicated element ends the walk with nothing from it.
        ([f"for={CLIENT};proto=https;proto=http"], None),
        ([f"for={CLIENT};FOR=6.6.6.6"], None),
        ([f"for={CLIENT} proto=https"], None),
        ([f"for={CLIENT};proto"], None),
        ([f"for={CLIENT};=https"], None),
        ([f"for={CLIENT};pro to=https"], None),
        ([f'for="{CLIENT}"x'], None),
        ([f"for={CLIENT}\\"], None),
        ([f"for={CLIENT}, garbage"], None),
        # An unterminated quote swallows the rest of its line: nothing is believed.
        ([f'for="6.6.6.6, for={CLIENT};proto=https'], None),
        ([f'for="6.6.6.6\\", for={CLIENT}'], None),
        # ... but not the next line, where a quoted string cannot reach.
        (['for="6.6.6.6', f"for={CLIENT};proto=https"], Forwarded(CLIENT, "https", None)),
        # A malformed element on the left is the client's own, never reached.
        (["garbage;;=", f"for={CLIENT}"], Forwarded(CLIENT, None, None)),
        ([f'for="6.6.6.6, for={CLIENT}"', f"for={CLIENT}"], Forwarded(CLIENT, None, None)),
    ],
)  # fmt: skip
def test_forwarded(lines: list[str], expected: Forwarded | None) -> None:
    assert via_proxy(*(("forwarded", line) for line in lines)) == expected


def test_forwarded_wins_over_x_forwarded() -> None:
    found = via_proxy(
        ("x-forwarded-for", "198.51.100.1"),
        ("forwarded", f"for={CLIENT};proto=https"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "other.example"),
    )
    assert found == Forwarded(CLIENT, "https", None)


def test_malformed_forwarded_does_not_fall_back_to_x_forwarded() -> None:
    # The proxy that wrote Forwarded does not vouch for X-Forwarded-For.
    assert via_proxy(("forwarded", "for=;"), ("x-forwarded-for", "6.6.6.6")) is None
    assert via_proxy(("forwarded", 'for="6.6.6.6'), ("x-forwarded-for", "6.6.6.6")) is None


@pytest.mark.parametrize("empty", ["", " ", ",", " , \t,"])
def test_empty_forwarded_falls_back_to_x_forwarded(empty: str) -> None:
    found = via_proxy(("forwarded", empty), ("x-forwarded-for", CLIENT))
    assert found == Forwarded(CLIENT, None, None)


def test_header_pairs_may_be_any_iterable() -> None:
    pairs = iter(raw(("x-forwarded-for", CLIENT)))
    assert resolve_forwarded(pairs, PROXY_PEER, TRUSTED) == Forwarded(CLIENT, None, None)


def test_forwarded_values_are_latin1_bytes() -> None:
    found = resolve_forwarded([(b"forwarded", b'for=1.2.3.4;host="\xe9.example"')], "::1", TRUSTED)
    assert found == Forwarded("1.2.3.4", None, None)


# --- resolve_forwarded: properties ------------------------------------------

header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=60,
)
public_ipv4 = st.ip_addresses(v=4).filter(lambda a: a.is_global).map(str)


@PROPERTY
@given(
    pairs=st.lists(
        st.tuples(
            st.sampled_from(
                [b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"]
            ),
            header_text.map(lambda text: text.encode("latin-1")),
        ),
        max_size=6,
    ),
    peer=st.one_of(st.none(), st.sampled_from(["10.0.0.1", "::1", "192.0.2.1", "fe80::1%lo"])),
)
def test_any_header_values_give_a_plausible_answer_or_none(
    pairs: list[tuple[bytes, bytes]], peer: str | None
) -> None:
    found = resolve_forwarded(pairs, peer, TRUSTED)
    if peer == "192.0.2.1":
        assert found is None
    if found is None:
        return
    assert (found.client, found.scheme, found.host) != (None, None, None)
    if found.client is not None:
        assert str(ipaddress.ip_address(found.client)) == found.client
    assert found.scheme in (None, "http", "https")
    if found.host is not None:
        assert found.host.isascii() and found.host.isprintable() and " " not in found.host
        assert "/" not in found.host


@PROPERTY
@given(spoof=header_text, client=public_ipv4)
def test_x_forwarded_for_spoof_is_never_believed(spoof: str, client: str) -> None:
    # A client sends any X-Forwarded-For; the trusted proxy appends the address it saw.
    found = via_proxy(("x-forwarded-for", spoof), ("x-forwarded-for", client))
    assert found == Forwarded(client, None, None)
    found = via_proxy(("x-forwarded-for", f"{spoof}, {client}"))
    assert found == Forwarded(client, None, None)


@PROPERTY
@given(spoof=header_text, client=public_ipv4)
def test_forwarded_spoof_is_never_believed(spoof: str, client: str) -> None:
    # A proxy that adds its own line is always understood; one that appends to
    # the client's line may be made unreadable (None), never made to lie.
    assert via_proxy(("forwarded", spoof), ("forwarded", f"for={client}")) == Forwarded(
        client, None, None
    )
    found = via_proxy(("forwarded", f"{spoof}, for={client}"))
    assert found in (None, Forwarded(client, None, None))


# --- PROXY protocol v1 ------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
            ProxyHeader(45, 1, "TCP4", ("192.0.2.1", 56324), ("198.51.100.2", 443)),
        ),
        (
            b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
            ProxyHeader(44, 1, "TCP4", ("0.0.0.0", 0), ("255.255.255.255", 65535)),
        ),
        (
            b"PROXY TCP6 2001:DB8:0::1 ::1 1 2\r\n",
            ProxyHeader(34, 1, "TCP6", ("2001:db8::1", 1), ("::1", 2)),
        ),
        (
            b"PROXY TCP6 ::ffff:192.0.2.1 :: 10 20\r\n",
            ProxyHeader(
                38, 1, "TCP6", (str(ipaddress.ip_address("::ffff:192.0.2.1")), 10), ("::", 20)
            ),
        ),
        (b"PROXY UNKNOWN\r\n", ProxyHeader(15, 1, "UNKNOWN", None, None)),
        (
            b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
            ProxyHeader(59, 1, "UNKNOWN", None, None),
        ),
        (b"PROXY UNKNOWN \x00\xff anything\r\n", ProxyHeader(27, 1, "UNKNOWN", None, None)),
    ],
)
def test_v1_valid(line: bytes, expected: ProxyHeader) -> None:
    assert len(line) == expected.consumed
    assert parse_proxy_header(line) == expected
    assert parse_proxy_header(bytearray(line)) == expected


def test_v1_longest_lines() -> None:
    full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = f"PROXY TCP6 {full} {full} 65535 65535\r\n".encode()
    assert len(line) == 104
    header = parse_proxy_header(line)
    assert header is not None and header.source == (full, 65535)
    unknown = b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 16) + b"\r\n"
    assert len(unknown) == V1_MAX_LENGTH
    assert parse_proxy_header(unknown) == ProxyHeader(107, 1, "UNKNOWN", None, None)
    with pytest.raises(ProxyProtocolError, match="107"):
        parse_proxy_header(b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 15) + b"\r\n")
    # Without its CRLF in sight, 107 bytes are enough to give up.
    assert parse_proxy_header(unknown[:-1]) is None
    with pytest.raises(ProxyProtocolError, match="107"):
        parse_proxy_header(unknown[:-2] + b"xx")


def test_v1_consumed_leaves_the_stream() -> None:
    data = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n\r\n"
    header = parse_proxy_header(data)
    assert header is not None
    assert data[header.consumed :] == b"GET / HTTP/1.1\r\n\r\n"
    # Even when the stream looks like another PROXY line.
    data = b"PROXY UNKNOWN\r\nPROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\n"
    assert parse_proxy_header(data) == ProxyHeader(15, 1, "UNKNOWN", None, None)


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
        b"PROXY TCP6 ::1 ::2 1 2\r\n",
        b"PROXY UNKNOWN\r\n",
    ],
)
def test_v1_byte_by_byte_waits_for_the_crlf(line: bytes) -> None:
    for size in range(len(line)):
        assert parse_proxy_header(line[:size]) is None, line[:size]
    assert parse_proxy_header(line) is not None


@pytest.mark.parametrize(
    "line",
    [
        b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY\r\n",
        b"PROXY \r\n",
        b"PROXY TCP4\r\n",
        b"PROXY TCP4 \r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8\r1 2\r\n",
        b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 100000\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 0x1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 a 2\r\n",
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
        b"PROXY TCP6 [::1] ::1 1 2\r\n",
        b"PROXY TCP6 1::2::3 ::1 1 2\r\n",
        b"PROXY TCP6 12345::1 ::1 1 2\r\n",
        b"PROXY TCP4 \xd9\xa1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY UNKNOWNX\r\n",
        b"PROXY UNKNOWN\r\r\n",
        b"PROXY UNKNOWN \n\r\n",
        b"PROXY UNKNOW\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
    ],
)
def test_v1_malformed(line: bytes) -> None:
    with pytest.raises(ProxyProtocolError) as caught:
        parse_proxy_header(line)
    assert caught.value.reason == str(caught.value)
    assert "\n" not in caught.value.reason


@pytest.mark.parametrize(
    "start",
    [
        b"G",
        b"GET ",
        b"\x16",
        b"PROXy",
        b"PROXY!",
        b"PROXY TCP5",
        b"PROXY TCP44",
        b"PROXY X",
        b"PROXY UNKNOWNX",
        b"PROXY TCP4 1.2.3.4\n",
        b"PROXY TCP4 1.2.3.4\r5",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ",
        b"PROXY TCP4 1.2.3.4 x",
        b"PROXY TCP6 fe80::1%",
        b"PROXY UNKNOWN\r\r",
        b"PROXY TCP4 " + b"1" * (V1_MAX_LENGTH - 11),
        b"\r\n\r\n\x00\r\nQUIX",
        b"\r\r",
    ],
)
def test_bytes_that_cannot_become_a_header_fail_at_once(start: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(start)


@pytest.mark.parametrize(
    "start",
    [
        b"",
        b"P",
        b"PROXY",
        b"PROXY ",
        b"PROXY T",
        b"PROXY UNKNOWN",
        b"\r",
        b"\r\n\r\n",
        b"\r\n\r\n\x00",
    ],
)
def test_prefixes_of_a_header_wait(start: bytes) -> None:
    assert parse_proxy_header(start) is None


# --- PROXY protocol v2 ------------------------------------------------------


def v2(
    command: int = 0x1,
    family: int = 0x11,
    body: bytes = b"",
    version: int = 0x2,
    length: int | None = None,
) -> bytes:
    size = len(body) if length is None else length
    return V2_SIGNATURE + bytes([version << 4 | command, family]) + struct.pack("!H", size) + body


def inet4(source: str, destination: str, sport: int, dport: int) -> bytes:
    return (
        ipaddress.IPv4Address(source).packed
        + ipaddress.IPv4Address(destination).packed
        + struct.pack("!HH", sport, dport)
    )


def inet6(source: str, destination: str, sport: int, dport: int) -> bytes:
    return (
        ipaddress.IPv6Address(source).packed
        + ipaddress.IPv6Address(destination).packed
        + struct.pack("!HH", sport, dport)
    )


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def unix(path: bytes) -> bytes:
    return path.ljust(108, b"\0")


def test_v2_tcp4() -> None:
    data = v2(body=inet4("192.0.2.1", "198.51.100.2", 56324, 443))
    assert parse_proxy_header(data) == ProxyHeader(
        28, 2, "TCP4", ("192.0.2.1", 56324), ("198.51.100.2", 443)
    )


def test_v2_tcp6() -> None:
    data = v2(family=0x21, body=inet6("2001:db8::1", "::ffff:192.0.2.9", 1, 65535))
    assert parse_proxy_header(data) == ProxyHeader(
        52, 2, "TCP6", ("2001:db8::1", 1), (str(ipaddress.ip_address("::ffff:192.0.2.9")), 65535)
    )


def test_v2_unix() -> None:
    data = v2(family=0x31, body=unix(b"/run/client.sock") + unix(b"\0abstract\0"))
    assert parse_proxy_header(data) == ProxyHeader(
        232, 2, "UNIX", ("/run/client.sock", 0), ("@abstract", 0)
    )
    data = v2(family=0x31, body=unix(b"") + unix(b"/run/caf\xe9"))
    header = parse_proxy_header(data)
    assert header is not None
    assert header.source == ("", 0)
    assert header.destination == ("/run/caf\\xe9", 0)


def test_v2_tlvs_are_returned_in_order() -> None:
    tlvs = tlv(0x01, b"h2") + tlv(0x02, b"example.com") + tlv(0x04, b"") + tlv(0xE0, b"\0" * 300)
    data = v2(body=inet4("192.0.2.1", "198.51.100.2", 1, 2) + tlvs)
    header = parse_proxy_header(data)
    assert header is not None
    assert header.consumed == 16 + 12 + len(tlvs)
    assert header.tlvs == ((0x01, b"h2"), (0x02, b"example.com"), (0x04, b""), (0xE0, b"\0" * 300))


def test_v2_tlvs_up_to_the_limit() -> None:
    body = inet4("192.0.2.1", "198.51.100.2", 1, 2) + tlv(0xEE, b"x" * (V2_MAX_TLV_BYTES - 3))
    header = parse_proxy_header(v2(body=body))
    assert header is not None and len(header.tlvs[0][1]) == V2_MAX_TLV_BYTES - 3


def test_v2_over_the_tlv_limit_fails_before_the_body_arrives() -> None:
    head = v2(body=b"", length=12 + V2_MAX_TLV_BYTES + 1)
    with pytest.raises(ProxyProtocolError, match="TLV"):
        parse_proxy_header(head)
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(v2(command=0x0, family=0x00, length=0xFFFF))


@pytest.mark.parametrize(
    ("command", "family", "body"),
    [
        (0x0, 0x00, b""),
        # LOCAL ignores the family and skips whatever the length covers.
        (0x0, 0x11, inet4("1.1.1.1", "2.2.2.2", 1, 2)),
        (0x0, 0xFF, b"anything"),
        (0x0, 0x21, b"short"),
    ],
)
def test_v2_local_keeps_the_real_endpoints(command: int, family: int, body: bytes) -> None:
    data = v2(command=command, family=family, body=body)
    assert parse_proxy_header(data + b"GET") == ProxyHeader(len(data), 2, "LOCAL", None, None)


@pytest.mark.parametrize(
    ("family", "body"),
    [
        (0x00, b""),
        (0x00, b"unknown layout, even no TLV shape"),
        (0x12, inet4("1.1.1.1", "2.2.2.2", 1, 2)),
        (0x22, inet6("::1", "::2", 1, 2) + b"\x01"),
        (0x32, unix(b"/a") + unix(b"/b")),
    ],
)
def test_v2_unspec_and_datagram_fall_back_to_the_real_endpoints(family: int, body: bytes) -> None:
    data = v2(family=family, body=body)
    assert parse_proxy_header(data) == ProxyHeader(len(data), 2, "UNKNOWN", None, None)


def test_v2_consumed_leaves_the_stream() -> None:
    data = v2(body=inet4("192.0.2.1", "198.51.100.2", 1, 2) + tlv(1, b"h2"))
    stream = b"\x16\x03\x01 a TLS ClientHello"
    header = parse_proxy_header(data + stream)
    assert header is not None
    assert (data + stream)[header.consumed :] == stream


@pytest.mark.parametrize(
    "data",
    [
        v2(body=inet4("192.0.2.1", "198.51.100.2", 1, 2)),
        v2(family=0x21, body=inet6("::1", "::2", 1, 2) + tlv(2, b"example.com")),
        v2(command=0x0, family=0x00),
    ],
)
def test_v2_byte_by_byte_waits_for_the_whole_header(data: bytes) -> None:
    for size in range(len(data)):
        assert parse_proxy_header(data[:size]) is None, size
    assert parse_proxy_header(data) is not None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (v2(version=0x1, body=inet4("1.1.1.1", "2.2.2.2", 1, 2)), "version"),
        (v2(version=0x3, body=inet4("1.1.1.1", "2.2.2.2", 1, 2)), "version"),
        (v2(version=0x0, command=0x0), "version"),
        (v2(command=0x2, body=inet4("1.1.1.1", "2.2.2.2", 1, 2)), "command"),
        (v2(command=0xF, body=inet4("1.1.1.1", "2.2.2.2", 1, 2)), "command"),
        (v2(family=0x10, body=inet4("1.1.1.1", "2.2.2.2", 1, 2)), "family"),
        (v2(family=0x13, body=inet4("1.1.1.1", "2.2.2.2", 1, 2)), "family"),
        (v2(family=0x01, body=inet4("1.1.1.1", "2.2.2.2", 1, 2)), "family"),
        (v2(family=0x41, body=inet4("1.1.1.1", "2.2.2.2", 1, 2)), "family"),
        (v2(family=0xFF), "family"),
        (v2(family=0x11, body=b"\0" * 11), "shorter"),
        (v2(family=0x21, body=inet4("1.1.1.1", "2.2.2.2", 1, 2)), "shorter"),
        (v2(family=0x31, body=unix(b"/a")), "shorter"),
        (v2(body=inet4("1.1.1.1", "2.2.2.2", 1, 2) + b"\x01"), "TLV"),
        (v2(body=inet4("1.1.1.1", "2.2.2.2", 1, 2) + b"\x01\x00"), "TLV"),
        (v2(body=inet4("1.1.1.1", "2.2.2.2", 1, 2) + b"\x01\x00\x05abcd"), "TLV"),
        (v2(body=inet4("1.1.1.1", "2.2.2.2", 1, 2) + tlv(1, b"ok") + b"\x02\xff\xff"), "TLV"),
    ],
)
def test_v2_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyProtocolError, match=reason):
        parse_proxy_header(data + b"more bytes that do not help")


@pytest.mark.parametrize("size", [13, 14, 16])
def test_v2_bad_fields_fail_as_soon_as_they_arrive(size: int) -> None:
    bad = {
        13: v2(version=0x1),
        14: v2(family=0x41),
        16: v2(family=0x11, length=4),
    }[size]
    assert len(bad) == 16
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(bad[:size])
    assert parse_proxy_header(bad[: size - 1]) is None


def test_v2_signature_mismatch_fails_at_the_first_wrong_byte() -> None:
    for index in range(len(V2_SIGNATURE)):
        wrong = V2_SIGNATURE[:index] + bytes([V2_SIGNATURE[index] ^ 0x40])
        with pytest.raises(ProxyProtocolError, match="not a PROXY"):
            parse_proxy_header(wrong)


# --- PROXY protocol: properties ---------------------------------------------

ports = st.integers(0, 65535)


@st.composite
def valid_headers(draw: st.DrawFn) -> tuple[bytes, ProxyHeader]:
    """A well-formed v1 or v2 header and what it must parse to."""
    kind = draw(
        st.sampled_from(["v1-4", "v1-6", "v1-unknown", "v2-4", "v2-6", "v2-unix", "v2-local"])
    )
    sport, dport = draw(ports), draw(ports)
    if kind == "v1-unknown":
        rest = draw(
            st.binary(max_size=V1_MAX_LENGTH - 17).filter(
                lambda b: b"\r" not in b and b"\n" not in b
            )
        )
        line = b"PROXY UNKNOWN" + (b" " + rest if rest else b"") + b"\r\n"
        return line, ProxyHeader(len(line), 1, "UNKNOWN", None, None)
    version: Literal[4, 6] = 4 if kind.endswith("4") else 6
    family: Family = "TCP4" if version == 4 else "TCP6"
    if kind in ("v1-4", "v1-6"):
        source, destination = draw(st.ip_addresses(v=version)), draw(st.ip_addresses(v=version))
        line = f"PROXY {family} {source} {destination} {sport} {dport}\r\n".encode()
        return line, ProxyHeader(
            len(line), 1, family, (str(source), sport), (str(destination), dport)
        )
    tlvs = tuple(draw(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=4)))
    tail = b"".join(tlv(k, v) for k, v in tlvs)
    if kind == "v2-local":
        data = v2(command=0x0, family=draw(st.integers(0, 255)), body=tail)
        return data, ProxyHeader(len(data), 2, "LOCAL", None, None)
    if kind == "v2-unix":
        source_path = draw(st.binary(min_size=1, max_size=107).filter(lambda b: b"\0" not in b))
        data = v2(family=0x31, body=unix(source_path) + unix(b"/srv.sock") + tail)
        expected_source = (source_path.decode("utf-8", "backslashreplace"), 0)
        return data, ProxyHeader(len(data), 2, "UNIX", expected_source, ("/srv.sock", 0), tlvs)
    source, destination = draw(st.ip_addresses(v=version)), draw(st.ip_addresses(v=version))
    packed = source.packed + destination.packed + struct.pack("!HH", sport, dport)
    data = v2(family=0x11 if version == 4 else 0x21, body=packed + tail)
    return data, ProxyHeader(
        len(data), 2, family, (str(source), sport), (str(destination), dport), tlvs
    )


@st.composite
def near_headers(draw: st.DrawFn) -> bytes:
    """A valid header with one byte changed, inserted or removed, then more bytes."""
    data, _ = draw(valid_headers())
    index = draw(st.integers(0, len(data) - 1))
    byte = bytes([draw(st.integers(0, 255))])
    change = draw(st.sampled_from(["replace", "insert", "delete"]))
    if change == "replace":
        data = data[:index] + byte + data[index + 1 :]
    elif change == "insert":
        data = data[:index] + byte + data[index:]
    else:
        data = data[:index] + data[index + 1 :]
    return data + draw(st.binary(max_size=20))


any_bytes = st.one_of(
    st.binary(max_size=300),
    near_headers(),
    st.binary(max_size=200).map(lambda b: b"PROXY " + b),
    st.binary(max_size=200).map(lambda b: V2_SIGNATURE + b),
)


@PROPERTY
@given(data=any_bytes)
def test_parser_raises_nothing_but_proxy_protocol_error(data: bytes) -> None:
    try:
        header = parse_proxy_header(data)
    except ProxyProtocolError as exc:
        assert exc.reason
        return
    if header is not None:
        assert 0 < header.consumed <= len(data)
        assert (header.source is None) == (header.destination is None)


@PROPERTY
@given(data=any_bytes)
def test_a_prefix_never_decides_against_the_whole(data: bytes) -> None:
    """Failing early is only right if no more bytes could have helped; a header
    found in a prefix is the same one the whole data gives."""
    try:
        whole: ProxyHeader | None = parse_proxy_header(data)
    except ProxyProtocolError:
        whole = None
        failed = True
    else:
        failed = False
    for size in range(len(data) + 1):
        try:
            found = parse_proxy_header(data[:size])
        except ProxyProtocolError:
            assert failed, data[:size]
            return
        if found is not None:
            assert found == whole
            return


@PROPERTY
@given(
    case=valid_headers(),
    cuts=st.lists(st.integers(0, 400), max_size=8),
    stream=st.binary(max_size=30),
)
def test_valid_header_parses_the_same_in_any_split(
    case: tuple[bytes, ProxyHeader], cuts: list[int], stream: bytes
) -> None:
    data, expected = case
    assert parse_proxy_header(data + stream) == expected
    buffer = b""
    previous = 0
    for cut in sorted({min(cut, len(data) + len(stream)) for cut in cuts}) + [
        len(data) + len(stream)
    ]:
        buffer += (data + stream)[previous:cut]
        previous = cut
        found = parse_proxy_header(buffer)
        if len(buffer) < len(data):
            assert found is None
        else:
            assert found == expected
            assert (data + stream)[found.consumed :] == stream
