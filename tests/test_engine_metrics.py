"""Prometheus metrics and the status page on a real socket, read back with
prometheus_client's own parser: requests by method and status class, the
duration histogram, bytes, connections by phase, keep-alive reuse, requests in
flight, refusals by reason; the metrics listener (metrics_port); the status
page's JSON and HTML."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest
from conftest import READ_TIMEOUT, ConnectFactory, ServeFactory

import aserve
from aserve.errors import ListenError

parser = pytest.importorskip(
    "prometheus_client.parser",
    reason="prometheus_client reads the metrics back: pip install "
    "prometheus-client (in the test extras)",
)


async def handler(request: aserve.Request) -> aserve.Response:
    if request.path == "/missing":
        return aserve.PlainTextResponse("no", status=404)
    if request.path == "/wait":
        await asyncio.sleep(0.3)
    if request.method == "POST":
        await request.body()
    return aserve.PlainTextResponse("hello")


Samples = dict[tuple[str, tuple[Any, ...]], float]


async def scrape(connect: ConnectFactory, port: int, path: bytes = b"/metrics") -> Samples:
    client = await connect(port)
    await client.send(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = await client.response()
    assert reply.status == 200
    assert reply.header("content-type") == "text/plain; version=0.0.4; charset=utf-8"
    samples: dict[tuple[str, tuple[Any, ...]], float] = {}
    for family in parser.text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def total(samples: Samples, name: str) -> float:
    """A family summed over its labels."""
    return sum(count for (found, _), count in samples.items() if found == name)


async def test_requests_durations_bytes_and_connections(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(handler, metrics_path="/metrics") as server:
        client = await connect(server.port)
        for _ in range(3):
            await client.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            await client.response()
        await client.send(b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
        await client.response()
        await client.send(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        await client.response()
        await client.send(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        await client.response()
        samples = await scrape(connect, server.port)
    assert value(samples, "aserve_requests_total", method="GET", status="2xx") == 4
    assert value(samples, "aserve_requests_total", method="GET", status="4xx") == 1
    assert value(samples, "aserve_requests_total", method="POST", status="2xx") == 1
    assert value(samples, "aserve_request_duration_seconds_count") == 6
    assert value(samples, "aserve_request_duration_seconds_bucket", le="0.25") == 5
    assert value(samples, "aserve_request_duration_seconds_bucket", le="+Inf") == 6
    assert value(samples, "aserve_request_duration_seconds_sum") >= 0.3
    assert value(samples, "aserve_request_body_bytes_total") == 5
    assert value(samples, "aserve_response_bytes_total") > 6 * 100
    # The client waits for its next request; the scraper is being answered.
    assert total(samples, "aserve_connections_open") == 2
    assert value(samples, "aserve_connections_open", phase="idle") == 1
    assert value(samples, "aserve_connections_open", phase="handling") == 1
    assert value(samples, "aserve_connections_total") == 2
    assert value(samples, "aserve_keepalive_requests_total") == 5  # 6 on one connection
    assert value(samples, "aserve_requests_in_flight") == 1  # the scrape itself
    assert value(samples, "aserve_workers") == 1
    assert total(samples, "aserve_worker_restarts_total") == 0


async def test_refusals_by_reason(serve: ServeFactory, connect: ConnectFactory) -> None:
    async with serve(
        handler, metrics_path="/metrics", header_timeout=0.2, max_head_size=1024
    ) as server:
        bad = await connect(server.port)
        await bad.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
        assert (await bad.response()).status == 400
        big = await connect(server.port)
        await big.send(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 2000 + b"\r\n\r\n")
        assert (await big.response()).status == 431
        slow = await connect(server.port)
        await slow.send(b"GET / HTTP/1.1\r\n")
        assert (await slow.response()).status == 408
        samples = await scrape(connect, server.port)
    assert value(samples, "aserve_refused_total", reason="bad_request") == 1
    assert value(samples, "aserve_refused_total", reason="too_large") == 1
    assert value(samples, "aserve_refused_total", reason="header_timeout") == 1
    assert value(samples, "aserve_refused_total", reason="max_connections") == 0


async def test_the_metrics_path_comes_before_the_app_and_only_there(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    app = aserve.App()

    @app.get("/metrics")
    async def shadowed(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("the app's")

    async with serve(app, metrics_path="/metrics") as server:
        samples = await scrape(connect, server.port)
        assert ("aserve_connections_total", ()) in samples
        client = await connect(server.port)
        await client.send(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert (await client.response()).status == 405
        await client.send(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await client.response()).status == 404  # the app's own answer
    async with serve(app) as server:  # off: the app's route
        client = await connect(server.port)
        await client.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await client.response()).body == b"the app's"


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"metrics_path": "metrics"}, "a path"),
        ({"status_path": "status"}, "status_path"),
        ({"status_path": "/st atus"}, "status_path"),
        ({"metrics_path": "/m", "status_path": "/m"}, "both"),
        ({"metrics_port": 70000}, "metrics_port"),
        ({"metrics_host": "0.0.0.0"}, "needs metrics_port"),
    ],
)
def test_metrics_settings_that_are_refused(options: dict[str, Any], words: str) -> None:
    with pytest.raises(aserve.ConfigError, match=words):
        aserve.Config.build(**options)


async def test_a_scrape_under_load_is_consistent(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(handler, metrics_path="/metrics") as server:

        async def load() -> None:
            client = await connect(server.port)
            for _ in range(50):
                await client.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
                await client.response()

        async with asyncio.timeout(READ_TIMEOUT * 3):
            await asyncio.gather(*(load() for _ in range(4)))
        samples = await scrape(connect, server.port)
    assert value(samples, "aserve_requests_total", method="GET", status="2xx") == 200
    assert value(samples, "aserve_request_duration_seconds_count") == 200


async def test_phases_of_open_connections(serve: ServeFactory, connect: ConnectFactory) -> None:
    release = asyncio.Event()

    async def slow(request: aserve.Request) -> aserve.Response:
        if request.path == "/body":
            await request.body()
        if request.path == "/hold":
            await release.wait()
        if request.path == "/stream":

            async def chunks() -> Any:
                yield b"first"
                await release.wait()
                yield b"last"

            return aserve.StreamingResponse(chunks())
        return aserve.PlainTextResponse("ok")

    async with serve(slow, metrics_path="/metrics") as server:
        idle = await connect(server.port)
        await idle.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await idle.response()
        head = await connect(server.port)
        await head.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        body = await connect(server.port)
        await body.send(b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        hold = await connect(server.port)
        await hold.send(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        stream = await connect(server.port)
        await stream.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        await stream.next_event()  # the head is out
        samples = await scrape(connect, server.port)
        release.set()
    assert value(samples, "aserve_connections_open", phase="idle") == 1
    assert value(samples, "aserve_connections_open", phase="reading") == 2  # a head, a body
    assert value(samples, "aserve_connections_open", phase="handling") == 2  # /hold, the scrape
    assert value(samples, "aserve_connections_open", phase="writing") == 1
    assert value(samples, "aserve_requests_in_flight") == 4


async def test_the_metrics_listener_answers_metrics_and_status_only(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    app = aserve.App()

    @app.get("/metrics")
    async def own(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("the app's")

    async with serve(app, metrics_port=0, status_path="/status") as server:
        assert server.metrics_port not in (None, server.port)
        assert server.metrics_port is not None
        # The app's port keeps its own /metrics (no metrics_path given).
        assert (await exchange_one(connect, server.port, b"/metrics")).body == b"the app's"
        samples = await scrape(connect, server.metrics_port)
        assert value(samples, "aserve_requests_total", method="GET", status="2xx") == 1
        elsewhere = await exchange_one(connect, server.metrics_port, b"/anything")
        assert elsewhere.status == 404
        page = await exchange_one(connect, server.metrics_port, b"/status")
        assert page.status == 200 and b"aserve status" in page.body
        # Nothing on the metrics listener is counted as the app's traffic.
        samples = await scrape(connect, server.metrics_port)
        assert value(samples, "aserve_requests_total", method="GET", status="2xx") == 1
        assert value(samples, "aserve_connections_total") == 1
    assert server.metrics_port is None  # closed with the server


async def test_a_busy_metrics_port_fails_the_start(serve: ServeFactory) -> None:
    async with serve(handler, metrics_port=0) as first:
        taken = first.metrics_port
        assert taken is not None
        with pytest.raises(ListenError, match=f"{taken}"):
            async with serve(handler, metrics_port=taken):
                pass


async def exchange_one(connect: ConnectFactory, port: int, path: bytes) -> Any:
    client = await connect(port)
    await client.send(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    return await client.response()


async def test_status_json_counts_what_was_served(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async def answers(request: aserve.Request) -> aserve.Response:
        status = int(request.query.get("status", "200"))
        return aserve.PlainTextResponse("x", status=status)

    async with serve(answers, status_path="/status", header_timeout=0.2) as server:
        client = await connect(server.port)
        for status in (200, 200, 200, 404, 500):
            await client.send(b"GET /?status=%d HTTP/1.1\r\nHost: x\r\n\r\n" % status)
            await client.response()
        slow = await connect(server.port)
        await slow.send(b"GET / HTTP/1.1\r\n")
        assert (await slow.response()).status == 408
        reply = await exchange_one(connect, server.port, b"/status?format=json")
    assert reply.status == 200
    assert reply.header("content-type") == "application/json"
    assert reply.header("cache-control") == "no-store"
    data = json.loads(reply.body)
    assert data["requests"]["total"] == 5
    assert data["requests"]["by_status"] == {"1xx": 0, "2xx": 3, "3xx": 0, "4xx": 1, "5xx": 1}
    assert data["errors"]["4xx"] == 1 and data["errors"]["5xx"] == 1
    assert data["refused"]["header_timeout"] == 1
    phases = data["connections"]["by_phase"]
    assert phases["idle"] == 1 and phases["handling"] == 1  # the client, and this request's
    assert data["connections"]["open"] == sum(phases.values())
    assert data["connections"]["keepalive_requests"] == 4
    assert data["latency_ms"]["requests"] == 5
    assert 0 < data["latency_ms"]["p50"] <= data["latency_ms"]["p90"] <= data["latency_ms"]["p99"]
    assert [w["pid"] for w in data["workers"]["serving"]] == [os.getpid()]
    assert data["workers"]["wanted"] == 1
    assert len(data["requests"]["per_second"]) == 60
    assert 0 <= data["uptime_s"] < 60


async def test_status_page_is_one_self_refreshing_html_page(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(handler, status_path="/status") as server:
        await exchange_one(connect, server.port, b"/x")
        page = await exchange_one(connect, server.port, b"/status")
        never = await exchange_one(connect, server.port, b"/status?refresh=0")
        post = await connect(server.port)
        await post.send(b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert (await post.response()).status == 405
    assert page.header("content-type") == "text/html; charset=utf-8"
    text = page.body.decode()
    assert '<meta http-equiv="refresh" content="5">' in text
    assert "http-equiv" not in never.body.decode()
    assert "<svg" in text and 'aria-label="requests per second"' in text
    # No outside assets: nothing is fetched from anywhere.
    assert "src=" not in text and "<link" not in text and "url(" not in text
    assert "answered since start" in text
