"""Jinja2 templates for handlers: ``templates.response("page.html", {...})``.

`Templates(directory)` owns one ``jinja2.Environment`` over a folder (or
several) and turns a template and a context into a `Response`. Jinja2 is an
optional dependency (``pip install aserve[templates]``); without it,
`Templates` raises `ConfigError` when made, and importing this module still
works.

- Autoescaping is on for every template (``autoescape=True``): a value that
  reaches the page is escaped unless marked safe. Any other environment
  option may be passed through (``Templates("t", trim_blocks=True)``).
- The context of every template has ``request`` (when given) and
  ``url_for(name, **params)``: the path of the route called `name` in the
  request's `App` (``App.url_path_for``), behind the root path the request
  came through (a proxy's prefix, App mounts), so links hold wherever the
  app is mounted. ``url_for("static", path="/site.css")`` reaches a mount
  named ``static``. Context processors (``def p(request) -> dict``) add their
  own names.
- The media type comes from the template's name (``.html`` is ``text/html``,
  ``.txt`` ``text/plain``, ``.xml``, ``.json``...; ``text/html`` when the
  name says nothing), always with ``charset=utf-8``.
- `error_handler(name)` is an exception handler for `App.exception_handler`
  that renders `name` with ``status``, ``detail`` and ``exc``: error pages
  from templates through the App's own error handling, for 404, 405 (its
  ``Allow`` kept), 500 (``detail`` is then "Internal Server Error", never the
  exception's text) or any status.

Rendering is synchronous and happens on the event loop, as Jinja2 renders:
templates are compiled once and cached (reloaded when their file changes,
``auto_reload``), so a render costs CPU, not disk.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, HTTPException
from .headers import HeadersInput
from .request import Request
from .response import HTMLResponse, Response

if TYPE_CHECKING:
    import jinja2

    from .app import App

__all__ = ["Templates"]

ContextProcessor = Callable[[Request], Mapping[str, Any]]

# Types a template's name may give, beyond what mimetypes knows everywhere.
_TYPES = {
    ".html": "text/html",
    ".htm": "text/html",
    ".xhtml": "application/xhtml+xml",
    ".txt": "text/plain",
    ".xml": "application/xml",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".css": "text/css",
    ".js": "text/javascript",
    ".csv": "text/csv",
    ".md": "text/markdown",
}


def _media_type(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    media_type = _TYPES.get(ext) or mimetypes.guess_type(name)[0]
    if media_type is None or not (
        media_type.startswith("text/") or media_type.endswith(("+xml", "/json", "/xml"))
    ):
        return "text/html"
    return media_type


class TemplateResponse(HTMLResponse):
    """A rendered template: the `template` and `context` stay on it for tests."""

    __slots__ = ("template", "context")

    def __init__(
        self,
        content: str,
        template: jinja2.Template,
        context: dict[str, Any],
        status: int = 200,
        headers: HeadersInput = None,
        media_type: str | None = None,
    ) -> None:
        super().__init__(content, status=status, headers=headers, media_type=media_type)
        self.template = template
        self.context = context


class Templates:
    """A folder of Jinja2 templates: ``Templates("templates")``.

    `directory` may be a list of folders, searched in order; `env` an
    environment of your own instead (its loader and options are then yours).
    `app` gives ``url_for`` an App to look routes up in when a template is
    rendered without a request.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        *,
        env: jinja2.Environment | None = None,
        context_processors: Sequence[ContextProcessor] = (),
        app: App | None = None,
        **options: Any,
    ) -> None:
        try:
            import jinja2
        except ImportError:
            raise ConfigError(
                "aserve.templating needs Jinja2: pip install 'aserve[templates]'"
            ) from None
        if env is None:
            if directory is None:
                raise ConfigError("Templates needs a directory (or an env)")
            folders = [directory] if isinstance(directory, str | os.PathLike) else list(directory)
            for folder in folders:
                if not os.path.isdir(folder):
                    raise ConfigError(f"template folder {os.fspath(folder)!r} is not a directory")
            options.setdefault("autoescape", True)
            env = jinja2.Environment(loader=jinja2.FileSystemLoader(folders), **options)
        elif directory is not None or options:
            raise ConfigError("give Templates a directory and options, or an env: not both")
        self.env = env
        self.context_processors = list(context_processors)
        self.app = app

    def get_template(self, name: str) -> jinja2.Template:
        return self.env.get_template(name)

    def url_for(self, request: Request | None, name: str, /, **params: Any) -> str:
        """The path of the route `name` of `request`'s App (or `app`), from the
        root the request came through. Raises `aserve.NoMatchFound`."""
        from .routing import Mount, NoMatchFound

        app = request.app if request is not None and request.app is not None else self.app
        if app is None:
            raise NoMatchFound(f"url_for({name!r}): no App to look routes up in")
        # The root path holds every prefix the client's URL has before the
        # App's routes, whether a proxy passed it on or stripped it.
        root = request.root_path if request is not None else ""
        try:
            return root + app.url_path_for(name, **params)
        except NoMatchFound:
            sub = params.get("path")
            if isinstance(sub, str) and set(params) == {"path"}:
                for entry in app.router.routes:
                    if isinstance(entry, Mount) and entry.name == name:
                        return root + entry.prefix + "/" + sub.lstrip("/")
            raise

    def context(self, request: Request | None, context: Mapping[str, Any] | None) -> dict[str, Any]:
        """What a template is rendered with: `context`, ``request``,
        ``url_for``, and what the context processors add."""
        full: dict[str, Any] = {}
        if request is not None:
            full["request"] = request
            for processor in self.context_processors:
                full.update(processor(request))

        def url_for(name: str, /, **params: Any) -> str:
            return self.url_for(request, name, **params)

        full["url_for"] = url_for
        if context:
            full.update(context)
        return full

    def render(
        self, name: str, context: Mapping[str, Any] | None = None, *, request: Request | None = None
    ) -> str:
        """Template `name` rendered to a string."""
        if request is None and context is not None:
            request = context.get("request")
        return self.get_template(name).render(self.context(request, context))

    def response(
        self,
        name: str,
        context: Mapping[str, Any] | None = None,
        *,
        status: int = 200,
        headers: HeadersInput = None,
        media_type: str | None = None,
        request: Request | None = None,
    ) -> TemplateResponse:
        """Template `name` rendered as a response. The request comes as
        `request` or as ``context["request"]``; ``url_for`` needs one (or `app`)."""
        if request is None and context is not None:
            request = context.get("request")
        template = self.get_template(name)
        full = self.context(request, context)
        return TemplateResponse(
            template.render(full),
            template,
            full,
            status=status,
            headers=headers,
            media_type=media_type or _media_type(name),
        )

    def error_handler(
        self, name: str, context: Mapping[str, Any] | None = None
    ) -> Callable[[Request, BaseException], Any]:
        """An exception handler rendering `name` for `App.exception_handler`::

            app.add_exception_handler(404, templates.error_handler("404.html"))

        The template gets ``status``, ``detail`` (the `HTTPException`'s text;
        "Internal Server Error" for any other exception) and ``exc``.
        """

        async def handle(request: Request, exc: BaseException) -> Response:
            if isinstance(exc, HTTPException):
                status, detail, headers = exc.status, exc.detail, exc.headers
            else:
                status, detail, headers = 500, HTTPStatus(500).phrase, None
            extra = {"status": status, "detail": detail, "exc": exc}
            if context:
                extra = {**context, **extra}
            if status < 200 or status in (204, 304):
                return Response(b"", status=status, headers=headers)
            return self.response(name, extra, status=status, headers=headers, request=request)

        return handle
