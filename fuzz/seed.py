"""Fill fuzz/corpus/ with seed inputs for fuzz_protocol.py.

Three sources, each request stream written as a fuzzer input (see the layout
in fuzz_protocol.py) in a few ways (whole, cut small, with a half-close and
the deadlines passing):

- the hand-written streams below, one per handler behaviour and framing;
- the request cases of tests/corpus/*.toml (read only; each table's
  `request` string or list of strings);
- the raw request literals of tests/test_engine_*.py (bytes constants that
  hold an HTTP/1.x request line).

Files are named by a hash of their content, so running this again adds nothing
twice and never removes what the fuzzer found.
"""

from __future__ import annotations

import ast
import hashlib
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"

sys.path.insert(0, str(ROOT / "fuzz"))
from fuzz_protocol import FLAG_EOF, FLAG_SMALL_LIMITS, FLAG_TIMEOUTS, encode  # noqa: E402

H = b"Host: f\r\n"

SEEDS: list[bytes] = [
    b"GET / HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /s HTTP/1.1\r\n"
    + H
    + b"\r\nGET /z HTTP/1.1\r\n"
    + H
    + b"\r\nHEAD / HTTP/1.1\r\n"
    + H
    + b"\r\nGET /c HTTP/1.1\r\n"
    + H
    + b"\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhelloGET /e HTTP/1.1\r\n" + H + b"\r\n",
    b"POST /r HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
    b'3;a=b\r\nabc\r\n2;q="x y"\r\nde\r\n0\r\nT: v\r\n\r\nGET /x HTTP/1.1\r\n' + H + b"\r\n",
    b"POST /n HTTP/1.1\r\n"
    + H
    + b"Content-Length: 10\r\n\r\n0123456789GET / HTTP/1.1\r\n"
    + H
    + b"\r\n",
    b"POST /p HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\nContent-Length: 4\r\n\r\nabcd",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /s HTTP/1.0\r\n\r\n",
    b"POST /h HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 100\r\n\r\n" + b"x" * 100,
]


def _encode_text(text: str) -> bytes:
    # The corpus spells raw bytes as \u00XX escapes; anything above is UTF-8.
    return b"".join(ch.encode("latin-1") if ord(ch) < 256 else ch.encode("utf-8") for ch in text)


def from_toml() -> list[bytes]:
    found = []
    for path in sorted((ROOT / "tests" / "corpus").glob("*.toml")):
        try:
            cases = tomllib.loads(path.read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            print(f"skipping {path.name}: {exc}", file=sys.stderr)
            continue
        for case in cases.values():
            request = case.get("request") if isinstance(case, dict) else None
            if isinstance(request, str):
                found.append(_encode_text(request))
            elif isinstance(request, list) and all(isinstance(r, str) for r in request):
                found.append(_encode_text("".join(request)))
    return found


def from_tests() -> list[bytes]:
    found = []
    for path in sorted((ROOT / "tests").glob("test_engine_*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
                if b" HTTP/1." in node.value and b"\r\n" in node.value:
                    found.append(node.value)
    return found


def variants(stream: bytes) -> list[bytes]:
    return [
        encode(stream),
        encode(stream, FLAG_EOF | FLAG_TIMEOUTS, [1, 2, 3, 5, 8, 13, 21, 34, 55, 64]),
        encode(stream, FLAG_SMALL_LIMITS, [7] * 20),
    ]


def main() -> int:
    CORPUS.mkdir(parents=True, exist_ok=True)
    streams = SEEDS + from_toml() + from_tests()
    written = 0
    for stream in dict.fromkeys(streams):
        for data in variants(stream):
            if len(data) > 8192:
                continue
            name = CORPUS / f"seed-{hashlib.sha1(data).hexdigest()[:16]}"
            if not name.exists():
                name.write_bytes(data)
                written += 1
    print(f"{len(streams)} request streams, {written} new seed files in {CORPUS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
