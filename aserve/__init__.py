"""aserve: an asyncio HTTP/1.1 server on h11.

One `asyncio.Protocol` per connection drives an h11 state machine, hands each
request to an async handler and streams the response back with keep-alive and
backpressure. See README.md for the guide and docs/engine.md for the engine.
"""

from .app import App
from .config import Config
from .datastructures import URL, MultiDict, QueryParams, State
from .errors import (
    AserveError,
    BadRequest,
    ClientDisconnected,
    ConfigError,
    ContentTooLarge,
    HTTPException,
)
from .exchange import Observer
from .forms import FormData, UploadFile
from .request import Request
from .response import (
    EventSourceResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    ServerSentEvent,
    StreamingResponse,
)
from .routing import Mount, NoMatchFound, Route
from .server import Server, run
from .static import FileResponse, StaticFiles
from .websocket import WebSocket, WebSocketDisconnect, WebSocketRoute, WebSocketState

__version__ = "0.1.0"

__all__ = [
    "URL",
    "App",
    "AserveError",
    "BadRequest",
    "ClientDisconnected",
    "Config",
    "ConfigError",
    "ContentTooLarge",
    "EventSourceResponse",
    "FileResponse",
    "FormData",
    "HTMLResponse",
    "HTTPException",
    "JSONResponse",
    "Mount",
    "MultiDict",
    "NoMatchFound",
    "Observer",
    "PlainTextResponse",
    "QueryParams",
    "RedirectResponse",
    "Request",
    "Response",
    "Route",
    "Server",
    "ServerSentEvent",
    "State",
    "StaticFiles",
    "StreamingResponse",
    "UploadFile",
    "WebSocket",
    "WebSocketDisconnect",
    "WebSocketRoute",
    "WebSocketState",
    "__version__",
    "run",
]
