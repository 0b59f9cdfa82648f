"""Instructions per request, repeatable to the instruction: the hot path's yardstick.

Wall-clock figures on a shared VM drift by tens of percent; the number of
instructions one request costs does not. This harness serves N keep-alive
requests through one `HTTPProtocol` over a fake transport, in process, on the
stdlib loop; run under callgrind once with N and once with 2N, the difference
over N is the cost of one request (start-up and teardown cancel out)::

    python benchmarks/instructions.py --variant hello            # figures via valgrind
    python benchmarks/instructions.py --variant hello --serve 2000  # serve only (under valgrind)

Variants: ``hello`` (a native handler), ``metrics`` (with metrics_path on),
``accesslog`` (access log on, lines dropped), ``asgi`` (a raw ASGI app through
ASGIHandler), ``pipelined`` (requests sent 16 at a time) and ``bare-h11`` (the
bare h11 loop of servers/bare_h11.py, the floor any h11 server pays).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR / "servers"))

REQUEST = (
    b"GET /hello HTTP/1.1\r\nHost: localhost:8000\r\nUser-Agent: bench\r\n"
    b"Accept: */*\r\nAccept-Encoding: gzip\r\nConnection: keep-alive\r\n\r\n"
)
VARIANTS = ("hello", "metrics", "accesslog", "asgi", "pipelined", "bare-h11")
DEPTH = 16


class FakeTransport(asyncio.Transport):
    """Takes what the server writes and counts the responses' ends."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.responses = 0
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += len(data)
        self.responses += bytes(data).count(b"HTTP/1.1 200")

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True


def make_protocol(variant: str, loop: asyncio.AbstractEventLoop) -> asyncio.Protocol:
    if variant == "bare-h11":
        import bare_h11  # type: ignore[import-not-found]

        return bare_h11.HelloProtocol()  # type: ignore[no-any-return]
    import aserve
    from aserve.config import Config
    from aserve.metrics import MetricsEndpoint, Monitor
    from aserve.server import ServerState

    async def hello(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("Hello, World!")

    handler: Any = hello
    observers: list[Any] = []
    options: dict[str, Any] = {"date_header": True}
    if variant == "asgi":

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": b"Hello, World!"})

        from aserve.asgi import ASGIHandler

        handler = ASGIHandler(app)
    if variant == "accesslog":
        options["access_log"] = True
        logging.getLogger("aserve.access").addHandler(logging.NullHandler())
        logging.getLogger("aserve.access").setLevel(logging.INFO)
        logging.getLogger("aserve.access").propagate = False
    config = Config.build(**options)
    state = ServerState(config, loop, handler, observers)
    if variant == "metrics":
        monitor = Monitor()
        handler = MetricsEndpoint(handler, monitor, "/metrics", None)
        state = ServerState(config, loop, handler, [monitor.counts])
        monitor.state = state
    return state.protocol_class(state)


async def serve(variant: str, count: int) -> None:
    loop = asyncio.get_running_loop()
    protocol = make_protocol(variant, loop)
    transport = FakeTransport()
    protocol.connection_made(transport)
    batch = DEPTH if variant == "pipelined" else 1
    data = REQUEST * batch
    for _ in range(count // batch):
        target = transport.responses + batch
        protocol.data_received(data)
        while transport.responses < target:
            await asyncio.sleep(0)
    protocol.connection_lost(None)


def instructions(variant: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             sys.executable, __file__, "--variant", variant, "--serve", str(count)],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )  # fmt: skip
        found = re.search(r"^summary:\s+(\d+)", out.read_text(), re.M)
        assert found, "no summary in the callgrind output"
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, action="append")
    parser.add_argument("--serve", type=int, help="serve N requests and exit (no valgrind)")
    parser.add_argument("-n", type=int, default=2000, help="N (default: %(default)s)")
    args = parser.parse_args()
    variants = args.variant or ["hello"]
    if args.serve:
        asyncio.run(serve(variants[0], args.serve))
        return
    for variant in variants:
        low = instructions(variant, args.n)
        high = instructions(variant, 2 * args.n)
        print(f"{variant:10} {(high - low) / args.n:>10,.0f} instructions/request", flush=True)


if __name__ == "__main__":
    main()
