"""aserve serving ``Hello, World!`` as text/plain on GET /, access log off."""

from __future__ import annotations

from typing import Any

import settings

import aserve


async def hello(request: aserve.Request) -> aserve.Response:
    return aserve.PlainTextResponse("Hello, World!")


def main() -> None:
    options: dict[str, Any] = {}
    timeout = settings.keep_alive_timeout()
    if timeout is not None:
        options["keep_alive_timeout"] = timeout
    aserve.run(hello, host=settings.HOST, port=settings.port(), access_log=False, **options)


if __name__ == "__main__":
    main()
