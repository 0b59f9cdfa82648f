"""Prometheus metrics on a real socket, read back with prometheus_client's own
parser: requests by method and status class, the duration histogram, bytes,
connections, requests in flight, and refusals by reason."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import READ_TIMEOUT, ConnectFactory, ServeFactory

import aserve

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


async def scrape(connect: ConnectFactory, port: int) -> dict[tuple[str, tuple[Any, ...]], float]:
    client = await connect(port)
    await client.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = await client.response()
    assert reply.status == 200
    assert reply.header("content-type") == "text/plain; version=0.0.4; charset=utf-8"
    samples: dict[tuple[str, tuple[Any, ...]], float] = {}
    for family in parser.text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[Any, ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


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
    assert value(samples, "aserve_connections_open") == 2  # the client and the scraper
    assert value(samples, "aserve_connections_total") == 2
    assert value(samples, "aserve_requests_in_flight") == 1  # the scrape itself


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
    [({"metrics_path": "metrics"}, "a path"), ({"metrics_path": "/m", "workers": 2}, "workers")],
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
