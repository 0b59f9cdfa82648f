"""Instructions per WebSocket echo round trip, repeatable to the instruction.

The ``websocket`` group's wall-clock figures move with whatever else runs on
the machine; instructions do not. As instructions.py does for HTTP, this
serves the handshake, then N echo round trips of a masked 64-byte text
message (wsload.py's), through one server protocol over a fake transport, in
process, on the stdlib loop: each round trip is one ``data_received`` and the
loop run until the echo is written. Run under callgrind once with N and once
with 2N, the difference over N is what one round trip costs::

    python benchmarks/ws_instructions.py                       # every variant, via valgrind
    python benchmarks/ws_instructions.py --variant aserve --serve 1000   # serve only

Variants: ``aserve`` (App.websocket echo), ``aserve-asgi`` (the raw ASGI echo
of servers/asgi_ws_echo.py through ASGIHandler), and that ASGI app under
uvicorn's ``wsproto``, ``websockets`` and ``websockets-sansio``
implementations (uvicorn's own protocol classes, its default middleware).
Needs valgrind, and uvicorn with websockets and wsproto for its variants
(benchmarks/.venv).
"""

from __future__ import annotations

import argparse
import asyncio
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

from wsload import MESSAGE  # noqa: E402 - after the path

VARIANTS = (
    "aserve",
    "aserve-asgi",
    "uvicorn-wsproto",
    "uvicorn-websockets",
    "uvicorn-websockets-sansio",
)
HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
_KEY = b"\x37\xfa\x21\x3d"
FRAME = bytes([0x81, 0x80 | len(MESSAGE)]) + _KEY
FRAME += bytes(b ^ _KEY[i % 4] for i, b in enumerate(MESSAGE))


class FakeTransport(asyncio.Transport):
    """Counts writes and wakes the driver at each one."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.protocol: Any = None
        self.written: asyncio.Future[None] | None = None

    def write(self, data: Any) -> None:
        self.writes += 1
        if self.written is not None and not self.written.done():
            self.written.set_result(None)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        info = {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}
        return info.get(name, default)

    def is_closing(self) -> bool:
        return False

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _protocol(variant: str, loop: asyncio.AbstractEventLoop) -> Any:
    from asgi_ws_echo import app as asgi_app

    if variant.startswith("aserve"):
        import aserve
        from aserve.asgi import ASGIHandler
        from aserve.server import ServerState

        handler: Any
        if variant == "aserve":
            handler = aserve.App()

            @handler.websocket("/ws")
            async def echo(ws: aserve.WebSocket) -> None:
                await ws.accept()
                async for message in ws:
                    await ws.send(message)

        else:
            handler = ASGIHandler(asgi_app, lifespan="off")
        state = ServerState(aserve.Config.build(port=0), loop, handler)
        return state.protocol_class(state)
    from uvicorn.config import Config
    from uvicorn.server import ServerState as UvicornState

    config = Config(asgi_app, ws=variant.removeprefix("uvicorn-"), lifespan="off")
    config.load()
    return config.ws_protocol_class(config=config, server_state=UvicornState(), app_state={})


async def serve(variant: str, count: int) -> int:
    loop = asyncio.get_running_loop()
    transport = FakeTransport()
    transport.protocol = _protocol(variant, loop)
    transport.protocol.connection_made(transport)
    transport.written = loop.create_future()
    transport.protocol.data_received(HANDSHAKE)
    await transport.written
    for _ in range(3):
        await asyncio.sleep(0)
    for _ in range(count):
        transport.written = loop.create_future()
        transport.protocol.data_received(FRAME)
        await transport.written
    return transport.writes


def instructions(variant: str, count: int, python: str) -> int:
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "callgrind.out")
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", python, __file__]
            + ["--variant", variant, "--serve", str(count)],
            capture_output=True,
            text=True,
        )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"{variant}: valgrind failed: {proc.stderr[-1000:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=VARIANTS)
    parser.add_argument("--serve", type=int, help="serve this many round trips and exit")
    parser.add_argument("-n", type=int, default=500, help="round trips of the short run (500)")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    if args.serve is not None:
        if args.variant is None:
            parser.error("--serve needs --variant")
        written = asyncio.run(serve(args.variant, args.serve))
        if written < args.serve:
            raise SystemExit(f"only {written} writes for {args.serve} round trips")
        return 0
    for variant in [args.variant] if args.variant else VARIANTS:
        short = instructions(variant, args.n, args.python)
        long = instructions(variant, 2 * args.n, args.python)
        print(f"{variant:28} {(long - short) / args.n:>10,.0f} instructions/round trip", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
