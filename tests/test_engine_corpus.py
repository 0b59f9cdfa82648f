"""The malformed-input corpus: raw requests from tests/corpus/*.toml, each sent
over a real socket to a real Server, with the answer aserve must give.

A case is the exact bytes a client sends and its expected outcome: the statuses
of the answers, in order (or no answer at all), then whether the connection
closes or stays usable. After every case a fresh connection must still get a
200 for a plain GET. tests/corpus/README.md describes the file format, how to
add a case and where the vectors come from.

Each case gets its own Server on port 0 (with the case's settings): starting one
costs a few milliseconds, and a case that breaks a connection cannot leak into
the next. Every read is bounded by `CASE_TIMEOUT`: loopback answers come in
microseconds, so a case that times out is a server waiting for bytes that will
never come (a refusal that should have been immediate).
"""

from __future__ import annotations

import contextlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import pytest
from conftest import RawClient, Reply, ServeFactory, assert_serving

import aserve

CORPUS = Path(__file__).resolve().parent / "corpus"

#: Upper bound for each wait on the server within a case.
CASE_TIMEOUT = 1.0

#: Sent on the same connection after a case that leaves it open: it must be
#: read as a new request (no leftover bytes, no body still expected).
PROBE = b"GET /probe HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"

#: Replaces `{pad}` in a request when the case has `pad = N`.
PAD_MARKER = "{pad}"

_CASE_KEYS = {
    "request",
    "expect",
    "then",
    "lengths",
    "methods",
    "settings",
    "pad",
    "pad_with",
    "later",
    "note",
}


class CorpusError(Exception):
    """A corpus file does not follow the format of tests/corpus/README.md."""


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    data: bytes
    #: Sent once the first answer has been read (empty: nothing more to send).
    later: bytes
    #: Statuses of the answers in order; empty: the server closes without answering.
    expect: tuple[int, ...]
    #: "close": the server closes after the last answer; "open": the connection
    #: carries a next request.
    then: str
    #: Body length the handler saw, per answer (None: not checked).
    lengths: tuple[int | None, ...]
    #: Request method per answer (only HEAD changes how an answer is framed).
    methods: tuple[str, ...]
    settings: dict[str, Any]
    note: str

    @property
    def id(self) -> str:
        return f"{self.group}/{self.name}"


# --------------------------------------------------------------------------- loading


def _text(where: str, key: str, value: Any) -> str:
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return "".join(value)
    if isinstance(value, str):
        return value
    raise CorpusError(f"{where}: {key} must be a string or a list of strings")


def _wire_bytes(where: str, table: dict[str, Any]) -> tuple[bytes, bytes]:
    """The bytes of `request` and of `later`, with `{pad}` filled in."""
    texts = [
        _text(where, "request", table["request"]),
        _text(where, "later", table.get("later", "")),
    ]
    pad = table.get("pad")
    if pad is not None:
        if not isinstance(pad, int) or isinstance(pad, bool) or pad < 1:
            raise CorpusError(f"{where}: pad must be a positive integer")
        if not any(PAD_MARKER in text for text in texts):
            raise CorpusError(f"{where}: pad given but the request has no {PAD_MARKER}")
        fill = table.get("pad_with", "a")
        if not isinstance(fill, str) or not fill:
            raise CorpusError(f"{where}: pad_with must be a non-empty string")
        texts = [text.replace(PAD_MARKER, fill * pad) for text in texts]
    elif any(PAD_MARKER in text for text in texts) or "pad_with" in table:
        raise CorpusError(f"{where}: {PAD_MARKER} or pad_with without pad")
    if not texts[0]:
        raise CorpusError(f"{where}: empty request")
    try:
        return texts[0].encode("latin-1"), texts[1].encode("latin-1")
    except UnicodeEncodeError:
        raise CorpusError(f"{where}: characters above \\u00ff cannot stand for a byte") from None


def _per_answer(where: str, key: str, value: Any, count: int, kind: type) -> tuple[Any, ...]:
    if not isinstance(value, list):
        value = [value]
    if len(value) != count or not all(isinstance(v, kind) for v in value):
        raise CorpusError(f"{where}: {key} must hold one {kind.__name__} per expected answer")
    return tuple(value)


def _case(group: str, name: str, table: Any, group_settings: dict[str, Any]) -> Case:
    where = f"{group}.toml [{name}]"
    if not isinstance(table, dict):
        raise CorpusError(f"{where}: a case is a table")
    unknown = set(table) - _CASE_KEYS
    missing = {"request", "expect", "note"} - set(table)
    if unknown or missing:
        raise CorpusError(f"{where}: unknown keys {sorted(unknown)}, missing {sorted(missing)}")
    note = table["note"]
    if not isinstance(note, str) or not note.strip():
        raise CorpusError(f"{where}: note must say where the vector comes from")

    raw_expect = table["expect"]
    expect: tuple[int, ...] = ()
    if raw_expect != "close":
        statuses = raw_expect if isinstance(raw_expect, list) else [raw_expect]
        if not statuses or not all(
            isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in statuses
        ):
            raise CorpusError(f"{where}: expect must be a status, a list of statuses or 'close'")
        expect = tuple(statuses)
    error_end = not expect or expect[-1] >= 400
    then = table.get("then", "close" if error_end else "open")
    if then not in ("open", "close") or (error_end and then != "close"):
        raise CorpusError(f"{where}: then must be 'open' or 'close' ('close' after an error)")

    lengths: tuple[int | None, ...] = (None,) * len(expect)
    if "lengths" in table:
        lengths = _per_answer(where, "lengths", table["lengths"], len(expect), int)
    methods = ("GET",) * len(expect)
    if "methods" in table:
        methods = _per_answer(where, "methods", table["methods"], len(expect), str)

    settings = table.get("settings", {})
    if not isinstance(settings, dict):
        raise CorpusError(f"{where}: settings must be a table")
    data, later = _wire_bytes(where, table)
    if later and not expect:
        raise CorpusError(f"{where}: later bytes are sent after the first answer; none is expected")
    return Case(
        group=group,
        name=name,
        data=data,
        later=later,
        expect=expect,
        then=then,
        lengths=lengths,
        methods=methods,
        settings={**group_settings, **settings},
        note=note,
    )


def load_group(path: Path) -> list[Case]:
    text = path.read_bytes().decode("utf-8")
    # Every byte that is not printable ASCII is written as an escape, so that
    # no editor, checkout or terminal can change a case without it showing.
    for number, line in enumerate(text.splitlines(), 1):
        if any(not (" " <= char <= "~") for char in line):
            raise CorpusError(f"{path.name}:{number}: only printable ASCII; use \\t, \\uXXXX")
    if "\r" in text:
        raise CorpusError(f"{path.name}: CR line endings in the file itself")
    document = tomllib.loads(text)
    group = path.stem
    group_settings = document.pop("settings", {})
    if not isinstance(group_settings, dict):
        raise CorpusError(f"{path.name}: top-level settings must be a table")
    return [_case(group, name, table, group_settings) for name, table in document.items()]


def load_corpus() -> list[Case]:
    cases = [case for path in sorted(CORPUS.glob("*.toml")) for case in load_group(path)]
    ids = [case.id for case in cases]
    if len(set(ids)) != len(ids):
        raise CorpusError("case ids repeat")
    return cases


CASES = load_corpus()


# --------------------------------------------------------------------------- running


async def corpus_handler(request: aserve.Request) -> aserve.Response:
    """Reads the whole body and answers 200 with its length; /early answers
    without reading the body at all."""
    if request.path == "/early":
        return aserve.PlainTextResponse("early")
    body = await request.body()
    return aserve.PlainTextResponse(str(len(body)))


def _explain(case: Case, client: RawClient, problem: str) -> str:
    expected = list(case.expect) or "a close with no answer"
    return (
        f"{case.id}: {problem}\n"
        f"  expected: {expected}, then {case.then}\n"
        f"  note: {case.note}\n"
        f"  sent: {case.data[:300]!r}\n"
        f"  received: {bytes(client.received[:600])!r}"
    )


async def _read_reply(case: Case, client: RawClient, method: str) -> Reply:
    try:
        return await client.response(method, timeout=CASE_TIMEOUT)
    except (ConnectionError, h11.RemoteProtocolError) as exc:
        raise AssertionError(_explain(case, client, f"no complete answer: {exc}")) from None
    except AssertionError as exc:  # closed early or timed out: say which case
        raise AssertionError(_explain(case, client, str(exc).splitlines()[0])) from None


async def _rest_until_close(case: Case, client: RawClient) -> bytes:
    """The bytes after the parsed answers, once the server has closed (a reset
    counts as a close)."""
    try:
        return await client.read_until_close(CASE_TIMEOUT)
    except ConnectionError:
        return bytes(client.h11.trailing_data[0])
    except AssertionError:
        raise AssertionError(_explain(case, client, f"no close within {CASE_TIMEOUT}s")) from None


async def run_case(case: Case, client: RawClient) -> None:
    with contextlib.suppress(ConnectionError):  # the server may refuse before all is sent
        await client.send(case.data)

    if not case.expect:
        await _rest_until_close(case, client)
        assert not client.received, _explain(case, client, "answered instead of closing")
        return

    for index, (status, length, method) in enumerate(
        zip(case.expect, case.lengths, case.methods, strict=True)
    ):
        reply = await _read_reply(case, client, method)
        if index == 0 and case.later:
            with contextlib.suppress(ConnectionError):
                await client.send(case.later)
        assert reply.status == status, _explain(
            case, client, f"answer {index + 1} is {reply.status}, not {status}"
        )
        if length is not None:
            assert reply.body == str(length).encode(), _explain(
                case, client, f"answer {index + 1}: the handler saw a body of {reply.body!r} bytes"
            )

    if case.then == "close":
        rest = await _rest_until_close(case, client)
        assert rest == b"", _explain(case, client, f"more after the last answer: {rest[:200]!r}")
        return

    # The connection must be in step: the next bytes are read as a new request.
    try:
        await client.send(PROBE)
    except ConnectionError as exc:
        raise AssertionError(_explain(case, client, f"connection closed: {exc!r}")) from None
    probe = await _read_reply(case, client, "GET")
    assert (probe.status, probe.body) == (200, b"0"), _explain(
        case, client, f"the request after the case got {probe.status} {probe.body!r}"
    )
    rest = await _rest_until_close(case, client)
    assert rest == b"", _explain(case, client, f"more after the probe's answer: {rest[:200]!r}")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_corpus_case(serve: ServeFactory, case: Case) -> None:
    async with serve(corpus_handler, **case.settings) as server:
        client = await RawClient.connect(server.port)
        try:
            await run_case(case, client)
        finally:
            await client.close()
        await assert_serving(server.port)


def test_corpus_covers_every_group() -> None:
    groups = {case.group for case in CASES}
    assert groups == {path.stem for path in CORPUS.glob("*.toml")}
    assert len(CASES) >= 150
    assert any(case.settings.get("lenient_framing") for case in CASES)
    assert sum(1 for case in CASES if case.expect and case.expect[-1] < 300) >= 20
