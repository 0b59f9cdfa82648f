"""Typed errors. Each one that reaches a client carries the status it deserves.

`HTTPException` is the one handlers raise; the engine's own request errors
subclass it so that a single `except HTTPException` turns any of them into an
answer. `ConfigError` is for bad settings and never reaches a client.
"""

from __future__ import annotations

from http import HTTPStatus


class AserveError(Exception):
    """Base of every error aserve raises."""


class ConfigError(AserveError, ValueError):
    """A setting is unknown or has a bad value."""


class ListenError(AserveError, OSError):
    """The server could not bind or listen on its address (port in use, say)."""


class HTTPException(AserveError):
    """Answer the request with `status` and a short plain-text `detail`.

    `detail` defaults to the status phrase (`404` -> "Not Found").
    """

    def __init__(
        self, status: int, detail: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        if detail is None:
            try:
                detail = HTTPStatus(status).phrase
            except ValueError:
                detail = ""
        super().__init__(status, detail)
        self.status = status
        self.detail = detail
        self.headers = headers

    def __str__(self) -> str:
        return f"{self.status} {self.detail}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status!r}, {self.detail!r})"


class BodyTooLarge(HTTPException):
    """The request body passed `max_body_size`."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body larger than {limit} bytes")


class BadRequestBody(HTTPException):
    """The request body could not be decoded (bad chunk framing, bad JSON...)."""

    def __init__(self, detail: str = "Malformed request body") -> None:
        super().__init__(400, detail)


class ClientDisconnected(AserveError, ConnectionError):
    """The client went away; reading the body or writing the response stopped."""


class BadRequest(HTTPException):
    """Part of the request head is malformed (path encoding, query, Host...)."""

    def __init__(self, detail: str = "Bad Request") -> None:
        super().__init__(400, detail)


class ContentTooLarge(HTTPException):
    """Part of the request (a form, a field, an upload) passed one of its limits."""

    def __init__(self, detail: str = "Content Too Large") -> None:
        super().__init__(413, detail)
