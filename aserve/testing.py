"""A test client that talks to a real Server over a loopback socket.

::

    from aserve.testing import TestClient

    async def test_hello():
        async with TestClient(app) as client:
            response = await client.get("/")
        assert response.status_code == 200

Entering the block starts ``aserve.Server(app, host="127.0.0.1", port=0)``
(running the app's start-up hooks) and opens an ``httpx.AsyncClient`` on it;
leaving it closes the client and shuts the server down (running the shutdown
hooks). Every request goes through the real protocol: h11 framing, keep-alive,
limits. Responses are ``httpx.Response`` objects.

With ``raise_server_exceptions=True`` (the default) an exception that the
server logged while answering -- the one behind a 500 -- is raised again in
the test after the request, so a failing test shows the app's traceback rather
than a bare 500. Pass False to test the 500 answer itself.

httpx is needed here only: ``pip install httpx`` (or ``aserve[test]``).
"""

from __future__ import annotations

import importlib
import logging
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .server import Server

if TYPE_CHECKING:
    import httpx

__all__ = ["TestClient"]


class _ErrorCollector(logging.Handler):
    """Keeps the exceptions logged on `aserve.error` while a client is open."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


class TestClient:
    """``async with TestClient(app, **server_options) as client: await client.get("/")``.

    `server_options` are `aserve.Config` fields (``max_body_size=1024``...).
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(
        self,
        app: Any,
        *,
        raise_server_exceptions: bool = True,
        follow_redirects: bool = False,
        headers: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
        timeout: float = 10.0,
        **server_options: Any,
    ) -> None:
        try:
            import httpx
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError("aserve.testing.TestClient needs httpx: pip install httpx") from None
        self._httpx = httpx
        server_options.setdefault("host", "127.0.0.1")
        server_options.setdefault("port", 0)
        self.server = Server(app, **server_options)
        self.raise_server_exceptions = raise_server_exceptions
        self._client_options: dict[str, Any] = {
            "follow_redirects": follow_redirects,
            "headers": headers,
            "cookies": cookies,
            "timeout": timeout,
        }
        self._client: httpx.AsyncClient | None = None
        self._errors = _ErrorCollector()

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def http(self) -> httpx.AsyncClient:
        """The underlying ``httpx.AsyncClient`` (cookies, headers, anything else)."""
        if self._client is None:
            raise RuntimeError("use the TestClient inside `async with`")
        return self._client

    async def __aenter__(self) -> TestClient:
        await self.server.start()
        logging.getLogger("aserve.error").addHandler(self._errors)
        self._client = self._httpx.AsyncClient(base_url=self.base_url, **self._client_options)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._client is not None:
                await self._client.aclose()
                self._client = None
            await self.server.shutdown(timeout=5.0)
        finally:
            logging.getLogger("aserve.error").removeHandler(self._errors)

    def _reraise(self) -> None:
        errors = self._errors.errors
        if errors and self.raise_server_exceptions:
            error = errors[0]
            errors.clear()
            raise error
        errors.clear()

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request; `kwargs` are those of ``httpx.AsyncClient.request``."""
        response = await self.http.request(method, url, **kwargs)
        self._reraise()
        return response

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def head(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("HEAD", url, **kwargs)

    async def options(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("OPTIONS", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", url, **kwargs)

    async def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", url, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", url, **kwargs)

    def stream(
        self, method: str, url: str, **kwargs: Any
    ) -> AbstractAsyncContextManager[httpx.Response]:
        """``async with client.stream("GET", "/events") as response:`` -- read as it comes."""
        return self.http.stream(method, url, **kwargs)

    def websocket_connect(self, path: str, **options: Any) -> Any:
        """``async with client.websocket_connect("/ws") as ws:`` -- the
        `websockets` library's client on this server (``await ws.send("hi")``,
        ``await ws.recv()``); `options` are its ``connect()``'s
        (``subprotocols=``, ``additional_headers=``...). Needs websockets:
        ``pip install websockets``."""
        try:
            client = importlib.import_module("websockets.asyncio.client")
        except ImportError:
            raise ImportError(
                "TestClient.websocket_connect needs websockets: pip install websockets"
            ) from None
        options.setdefault("proxy", None)
        return client.connect(f"ws://127.0.0.1:{self.server.port}{path}", **options)
