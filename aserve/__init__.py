"""aserve: an asyncio HTTP/1.1 server on h11.

One `asyncio.Protocol` per connection drives an h11 state machine, hands each
request to an async handler and streams the response back with keep-alive and
backpressure. See README.md for the guide and docs/engine.md for the engine.
"""

from .config import Config
from .errors import AserveError, ClientDisconnected, ConfigError, HTTPException
from .request import Request
from .response import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from .server import Server, run

__version__ = "0.1.0"

__all__ = [
    "AserveError",
    "ClientDisconnected",
    "Config",
    "ConfigError",
    "HTMLResponse",
    "HTTPException",
    "JSONResponse",
    "PlainTextResponse",
    "RedirectResponse",
    "Request",
    "Response",
    "Server",
    "StreamingResponse",
    "__version__",
    "run",
]
