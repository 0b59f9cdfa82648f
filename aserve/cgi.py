"""CGI/1.1 scripts (RFC 3875) seen as an aserve handler.

`CGIHandler(directory)` runs the executable files under `directory` for the
paths below where it is mounted, as ``CGIHTTPRequestHandler`` did before it
was deprecated: ``/cgi-bin/hello.py/extra?x=1`` runs ``hello.py`` with
``PATH_INFO=/extra`` and ``QUERY_STRING=x=1``. This module owns the mapping
from a path to a script, the meta-variables, the parsing of what a script
prints, and the life of its process. It knows nothing of sockets or h11.

Pure parts, testable without a process or a loop
-------------------------------------------------
- `find_script(root, raw_path, prefix)`: the script a path names and the
  rest of the path. Segment by segment, percent-decoded one at a time: ``..``,
  ``.``, empty segments, names starting with ``.``, encoded ``/`` or ``\\``
  and NUL answer 404; a folder, or a file that is not executable, 403; a
  symlink that leads outside the folder, 404.
- `cgi_environ(request, script, ...)`: the environment, built from nothing
  but an allow-list (``PATH`` and what ``env=`` adds): the RFC 3875 section 4
  meta-variables, ``HTTP_*`` for each header field (repeated ones joined),
  never one whose name holds ``_`` (it would land on the same variable as its
  ``-`` twin), never ``HTTP_PROXY`` (a script's HTTP client would take it for
  its proxy), never ``Authorization`` unless ``pass_authorization=True``
  (section 4.1.18). Values keep their bytes (UTF-8 with surrogate escapes,
  which the environment encodes back as they came).
- `CGIResponseParser`: the header section of the script's output, fed as
  it comes, capped at `MAX_HEADER_SECTION` bytes; LF or CRLF line ends.
  ``Status:`` gives the status; ``Location:`` alone with a path is a local
  redirect, any other ``Location:`` a client redirect (302 unless ``Status``
  says otherwise); the other fields pass on, less those about one hop
  (``Connection``, ``Transfer-Encoding``...) and ``Server``/``Date``, which
  the server sends.

The process
-----------
`asyncio.create_subprocess_exec` on the script itself, no shell and no
arguments (a query is never a command line), in its own folder and its own
process group, so that a timeout kills whatever it started too. Its stdin is
fed from the request body with ``drain()`` after each chunk; a chunked upload
is read whole first (within ``max_body_size``), since ``CONTENT_LENGTH``
must be given. Its stderr goes to the ``aserve.error`` log a line at a time
(lines capped at `MAX_LOG_LINE`). Its stdout is read only when the engine
asks for the next chunk of the body, so the script waits on a slow client
through the pipe, and nothing piles up here.

- ``max_processes`` scripts run at once; past it the answer is 503 with
  ``Retry-After``, at once.
- ``timeout`` is the longest a script may go without writing anything while
  it is waited for (its stdin being fed counts as progress); then its process
  group is killed: 504 before its header section, a cut connection after.
- A script that ends, or fails, before its header section is complete is a
  500, with its exit status logged; a malformed header section too.
- A local redirect is served again here, as a GET, when the path is below
  this handler; else by the `App` the handler is mounted in (routed from its
  root); at most `MAX_LOCAL_REDIRECTS` in a row.
- When the client goes away, or the server shuts down, the script is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote_to_bytes

from .errors import ConfigError, HTTPException
from .headers import HEADER_NAME_RE, REFRAMED_FIELDS, encode_header
from .request import Request
from .response import Response, StreamingResponse

__all__ = [
    "CGIError",
    "CGIHandler",
    "CGIResponseParser",
    "Script",
    "cgi_environ",
    "find_script",
]

error_log = logging.getLogger("aserve.error")

#: The largest header section a script may print.
MAX_HEADER_SECTION: Final = 64 * 1024
#: A longer line of a script's stderr is cut there in the log.
MAX_LOG_LINE: Final = 4096
MAX_LOCAL_REDIRECTS: Final = 10
DEFAULT_MAX_PROCESSES: Final = 16
DEFAULT_TIMEOUT: Final = 30.0
_READ_SIZE: Final = 64 * 1024
_DEFAULT_PATH: Final = "/usr/local/bin:/usr/bin:/bin"

_NO_BODY_STATUS: Final = frozenset({204, 304})
# Request fields that never become HTTP_* variables: the body's own (they are
# CONTENT_*, or the body is gone by then) and Proxy, which a script's HTTP
# client would take for its proxy setting.
_NOT_PASSED: Final = frozenset(
    {b"content-type", b"content-length", b"transfer-encoding", b"expect", b"proxy"}
)


class CGIError(Exception):
    """A script printed something that is not a CGI response."""


# --------------------------------------------------------------------------- the script


@dataclass(frozen=True, slots=True)
class Script:
    """Where a request path leads: the script and what is left of the path."""

    #: The script's file, resolved (no symlink left).
    filename: str
    #: The URL path of the script, root path included (``SCRIPT_NAME``).
    script_name: str
    #: The decoded rest of the path: "" or starting with "/" (``PATH_INFO``).
    path_info: str


def _segment(raw: bytes) -> str | None:
    """A percent-decoded path segment, or None when it may not name a file."""
    name = unquote_to_bytes(raw)
    if not name or name.startswith(b".") or b"/" in name or b"\\" in name or b"\0" in name:
        return None
    return name.decode("utf-8", "surrogateescape")


def find_script(root: str, raw_path: bytes, prefix: str = "") -> Script:
    """The script `raw_path` (the path below `prefix`, as sent) names in the
    folder `root` (a resolved path). Raises `HTTPException` 404 or 403.

    Reads the file system: call it off the event loop.
    """
    segments = raw_path.split(b"/")
    if segments[0]:
        raise HTTPException(404)
    current = root
    names: list[str] = []
    for index in range(1, len(segments)):
        if not segments[index] and index == len(segments) - 1:
            break  # a folder's URL, with its trailing slash
        name = _segment(segments[index])
        if name is None:
            raise HTTPException(404)
        candidate = os.path.join(current, name)
        try:
            mode = os.stat(candidate).st_mode
        except (OSError, ValueError):
            raise HTTPException(404) from None
        names.append(name)
        if stat.S_ISDIR(mode):
            current = candidate
            continue
        real = os.path.realpath(candidate)
        if not real.startswith(root + os.sep):
            raise HTTPException(404)  # a symlink out of the folder
        if not stat.S_ISREG(mode) or not os.access(real, os.X_OK):
            raise HTTPException(403, "Forbidden: not an executable script")
        rest = segments[index + 1 :]
        path_info = ""
        if rest:
            path_info = "/" + "/".join(
                unquote_to_bytes(part).decode("utf-8", "surrogateescape") for part in rest
            )
        return Script(real, prefix + "/" + "/".join(names), path_info)
    raise HTTPException(403, "Forbidden: a folder is not a script")


# --------------------------------------------------------------------------- the environment


def _text(raw: bytes) -> str:
    # The environment encodes str with surrogate escapes: the bytes come out as they went in.
    return raw.decode("utf-8", "surrogateescape")


def _split_host(host: str, scheme: str) -> tuple[str, str]:
    default = "443" if scheme == "https" else "80"
    if host.startswith("["):  # an IPv6 literal
        end = host.find("]")
        name, rest = host[: end + 1], host[end + 1 :]
        return name, rest[1:] if rest.startswith(":") else default
    name, _, port = host.partition(":")
    return name, port or default


def cgi_environ(
    request: Request,
    script: Script,
    *,
    method: str | None = None,
    target: bytes | None = None,
    content_length: int | None = None,
    base: Mapping[str, str] | None = None,
    pass_authorization: bool = False,
    server_software: str = "aserve",
) -> dict[str, str]:
    """The environment of `script` run for `request` (RFC 3875 section 4).

    `method` and `target` (path and query, as sent) replace the request's
    own: a local redirect is a GET of another URL. `content_length` is the
    body's length, None when there is none. `base` is what the environment
    starts from.
    """
    env = dict(base or {})
    headers = request.headers
    scheme = request.scheme
    env["GATEWAY_INTERFACE"] = "CGI/1.1"
    env["SERVER_SOFTWARE"] = server_software
    env["SERVER_PROTOCOL"] = "HTTP/" + request.http_version
    env["REQUEST_METHOD"] = method or request.method
    env["REQUEST_SCHEME"] = scheme
    if scheme == "https":
        env["HTTPS"] = "on"
    env["SCRIPT_NAME"] = script.script_name
    env["SCRIPT_FILENAME"] = script.filename
    env["PATH_INFO"] = script.path_info
    if target is None:
        target = request.target
    env["QUERY_STRING"] = _text(target.partition(b"?")[2])
    env["REQUEST_URI"] = _text(target)
    if content_length is not None:
        env["CONTENT_LENGTH"] = str(content_length)
        for name, value in headers.raw:
            if name == b"content-type":
                env["CONTENT_TYPE"] = _text(value)
                break
    client = request.client
    env["REMOTE_ADDR"] = client[0] if client is not None else ""
    env["REMOTE_HOST"] = env["REMOTE_ADDR"]  # no reverse lookup (section 4.1.9 allows it)
    if client is not None:
        env["REMOTE_PORT"] = str(client[1])
    host = headers.get("host")
    server = request.server
    if host:
        env["SERVER_NAME"], env["SERVER_PORT"] = _split_host(host, scheme)
    elif server is not None:
        env["SERVER_NAME"], env["SERVER_PORT"] = server[0], str(server[1])
    else:
        env["SERVER_NAME"], env["SERVER_PORT"] = _split_host("localhost", scheme)
    if server is not None:
        env["SERVER_ADDR"] = server[0]
    user = getattr(request.state, "user", None)  # set by BasicAuthMiddleware
    if isinstance(user, str):
        env["AUTH_TYPE"] = "Basic"
        env["REMOTE_USER"] = user
    for raw_name, raw_value in headers.raw:
        if raw_name in _NOT_PASSED or b"_" in raw_name:
            continue
        if raw_name in (b"authorization", b"proxy-authorization") and not pass_authorization:
            continue
        key = "HTTP_" + raw_name.decode("ascii").upper().replace("-", "_")
        text = _text(raw_value)
        previous = env.get(key)
        if previous is not None:
            text = previous + ("; " if key == "HTTP_COOKIE" else ", ") + text
        env[key] = text
    return env


# --------------------------------------------------------------------------- the output


class CGIResponseParser:
    """The header section of a script's output (RFC 3875 section 6), fed as
    it comes. `feed` returns True once it is complete; `body` then holds the
    bytes after it. Raises `CGIError` for what is not a header section."""

    __slots__ = (
        "_buffer",
        "_pos",
        "_max_size",
        "done",
        "status",
        "location",
        "fields",
        "body",
        "content_length",
    )

    def __init__(self, max_size: int = MAX_HEADER_SECTION) -> None:
        self._buffer = bytearray()
        self._pos = 0
        self._max_size = max_size
        self.done = False
        self.status: int | None = None
        self.location: bytes | None = None
        #: The fields to pass on, checked, names lowercased (Status and Location aside).
        self.fields: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.content_length: int | None = None

    def feed(self, data: bytes) -> bool:
        if self.done:
            raise CGIError("the header section is already complete")
        buffer = self._buffer
        buffer += data
        while True:
            end = buffer.find(b"\n", self._pos)
            if end < 0:
                break
            line = bytes(buffer[self._pos : end])
            self._pos = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                self.done = True
                self.body = bytes(buffer[self._pos :])
                buffer.clear()
                return True
            if self._pos > self._max_size:
                break
            self._field(line)
        if self._pos > self._max_size or len(buffer) - self._pos > self._max_size:
            raise CGIError(f"header section larger than {self._max_size} bytes")
        return False

    def _field(self, line: bytes) -> None:
        if line[:1] in (b" ", b"\t"):
            raise CGIError("obsolete line folding in the header section")
        name, colon, value = line.partition(b":")
        if not colon or HEADER_NAME_RE.fullmatch(name) is None:
            raise CGIError(f"malformed header line {line[:100]!r}")
        lower = name.lower()
        value = value.strip(b" \t")
        if lower == b"status":
            code = value[:3]
            if self.status is not None:
                raise CGIError("Status given twice")
            if len(code) != 3 or not code.isdigit() or value[3:4] not in (b"", b" "):
                raise CGIError(f"malformed Status {value[:100]!r}")
            self.status = int(code)
            if not 200 <= self.status <= 999:
                raise CGIError(f"Status {self.status} is not a final status")
            return
        if lower == b"location":
            if self.location is not None:
                raise CGIError("Location given twice")
            self._check(name, value)
            self.location = value
            return
        if lower == b"content-length":
            if not value.isdigit():
                raise CGIError(f"malformed Content-Length {value[:100]!r}")
            self.content_length = int(value)
        if lower in REFRAMED_FIELDS:
            return
        self.fields.append(self._check(lower, value))

    @staticmethod
    def _check(name: bytes, value: bytes) -> tuple[bytes, bytes]:
        try:
            return encode_header(name.decode("latin-1"), value.decode("latin-1"))
        except ValueError as exc:
            raise CGIError(str(exc)) from None

    @property
    def local_redirect(self) -> bytes | None:
        """The path and query of a local redirect (a ``Location`` path and no
        other field), else None."""
        location = self.location
        if (
            location is not None
            and location.startswith(b"/")
            and not location.startswith(b"//")
            and self.status is None
            and not self.fields
        ):
            return location
        return None

    def response_head(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        """The status and header fields of a document or client redirect response."""
        fields = list(self.fields)
        status = self.status
        if self.location is not None:
            fields.append((b"location", self.location))
            if status is None:
                status = 302
        return status or 200, fields


# --------------------------------------------------------------------------- the process


class _ScriptTimeout(Exception):
    pass


class _Run:
    """One running script: its process, its stdin feeder and stderr logger."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        name: str,
        timeout: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.proc = proc
        self.name = name
        self.timeout = timeout
        self.loop = loop
        self.progress = loop.time()
        self.body_error: BaseException | None = None
        self.feeder: asyncio.Task[None] | None = None
        self.logger = loop.create_task(self._log_stderr())
        self.ended = False

    async def read(self) -> bytes:
        """The next bytes of stdout; `_ScriptTimeout` after `timeout` seconds
        without any, or without stdin taking any."""
        stdout = self.proc.stdout
        assert stdout is not None
        started = self.loop.time()
        while True:
            deadline = max(started, self.progress) + self.timeout
            if self.loop.time() >= deadline:
                raise _ScriptTimeout
            try:
                async with asyncio.timeout_at(deadline):
                    data = await stdout.read(_READ_SIZE)
            except TimeoutError:
                continue  # stdin may have moved meanwhile: look again
            self.progress = self.loop.time()
            return data

    def at_eof(self) -> bool:
        stdout = self.proc.stdout
        return stdout is not None and stdout.at_eof()

    def feed(self, body: bytes | AsyncIterator[bytes]) -> None:
        self.feeder = self.loop.create_task(self._feed(body))

    async def _feed(self, body: bytes | AsyncIterator[bytes]) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            if isinstance(body, bytes):
                stdin.write(body)
                await stdin.drain()
            else:
                async for chunk in body:
                    stdin.write(chunk)
                    await stdin.drain()
                    self.progress = self.loop.time()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the script stopped reading; the engine drops the rest of the body
        except Exception as exc:  # too large, malformed, the client left
            self.body_error = exc
            self.kill()
        finally:
            with contextlib.suppress(OSError):
                stdin.close()
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _log_stderr(self) -> None:
        stderr = self.proc.stderr
        assert stderr is not None
        pending = b""
        while chunk := await stderr.read(_READ_SIZE):
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            if len(pending) > MAX_LOG_LINE:
                lines.append(pending)
                pending = b""
            for line in lines:
                self._log_line(line)
        if pending:
            self._log_line(pending)

    def _log_line(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if line:
            text = line[:MAX_LOG_LINE].decode("utf-8", "replace")
            error_log.warning("cgi %s: %s", self.name, text)

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def end(self, *, kill: bool) -> int | None:
        """Reap the process (killing it first with `kill`, or when it does
        not exit within its timeout) and stop the helper tasks; its exit status."""
        if self.ended:
            return self.proc.returncode
        self.ended = True
        try:
            if kill:
                self.kill()
            try:
                async with asyncio.timeout(self.timeout):
                    status = await self.proc.wait()
            except TimeoutError:
                self.kill()
                status = await self.proc.wait()
            # Whatever it started may still hold its stderr: a short grace.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await asyncio.shield(self.logger)
            return status
        finally:
            for task in (self.feeder, self.logger):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task


class _Output:
    """The body after the header section, read from stdout as the engine asks."""

    __slots__ = ("_handler", "_run", "_first", "_left", "_done")

    def __init__(self, handler: CGIHandler, run: _Run, first: bytes, length: int | None) -> None:
        self._handler = handler
        self._run = run
        self._first = first
        self._left = length
        self._done = False

    def __aiter__(self) -> _Output:
        return self

    def _cut(self, data: bytes) -> bytes:
        if self._left is None:
            return data
        data = data[: self._left]
        self._left -= len(data)
        return data

    async def __anext__(self) -> bytes:
        if self._first:
            first, self._first = self._first, b""
            return self._cut(first)
        run = self._run
        while self._left != 0:
            try:
                data = await run.read()
            except _ScriptTimeout:
                error_log.error(
                    "cgi %s wrote nothing for %.1f s after its headers: killed",
                    run.name,
                    run.timeout,
                )
                await self._close(kill=True)
                raise HTTPException(504, "CGI script timed out") from None
            if not data:
                await self._close(kill=False)
                if run.body_error is not None:
                    raise run.body_error
                if self._left:
                    raise HTTPException(502, "CGI script wrote less than its Content-Length")
                raise StopAsyncIteration
            data = self._cut(data)
            if data:
                return data
        await self._close(kill=False)
        raise StopAsyncIteration

    async def _close(self, *, kill: bool) -> None:
        if not self._done:
            self._done = True
            await self._handler._end(self._run, kill=kill)

    async def aclose(self) -> None:
        # Still running here: the client left, or the body was not wanted (HEAD).
        await self._close(kill=True)


class CGIHandler:
    """Run the executable scripts under `directory` as CGI/1.1:
    ``app.mount("/cgi-bin", CGIHandler("cgi-bin"))``.

    ``max_processes``: scripts running at once, past it 503. ``timeout``:
    seconds a script may go without writing (see the module docstring), then
    it is killed: 504. ``env``: variables added to every script's
    environment (which otherwise holds only ``PATH`` and the meta-variables).
    ``pass_authorization``: give scripts ``HTTP_AUTHORIZATION`` too.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_processes: int = DEFAULT_MAX_PROCESSES,
        timeout: float = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
        pass_authorization: bool = False,
    ) -> None:
        folder = os.path.realpath(os.fspath(directory))
        if not os.path.isdir(folder):
            raise ConfigError(f"CGI folder {os.fspath(directory)!r} is not a directory")
        if isinstance(max_processes, bool) or not isinstance(max_processes, int):
            raise ConfigError(f"max_processes must be an integer, not {max_processes!r}")
        if max_processes < 1:
            raise ConfigError(f"max_processes must be at least 1, not {max_processes}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise ConfigError(f"timeout must be a number of seconds, not {timeout!r}")
        if not 0 < timeout < float("inf"):
            raise ConfigError(f"timeout must be a positive finite number of seconds, not {timeout}")
        from . import __version__

        self.directory = folder
        self.max_processes = max_processes
        self.timeout = float(timeout)
        self.pass_authorization = pass_authorization
        self.base_env = {"PATH": os.environ.get("PATH", _DEFAULT_PATH), **(env or {})}
        self.server_software = f"aserve/{__version__}"
        self._runs: set[_Run] = set()

    @property
    def running(self) -> int:
        """Scripts running now."""
        return len(self._runs)

    async def shutdown(self) -> None:
        """Kill the scripts still running (the server has closed their connections)."""
        runs = list(self._runs)
        for run in runs:
            run.kill()
        for run in runs:
            await self._end(run, kill=True)

    async def __call__(self, request: Request) -> Response:
        if request.root_path:
            split = request.split_root()
            prefix, raw_path = split.root_path, split.raw_rest
        else:
            prefix, raw_path = "", request.raw_path
        headers = request.headers
        body: bytes | AsyncIterator[bytes] | None = None
        length: int | None = None
        if "transfer-encoding" in headers:
            body = await request.body()
            length = len(body)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            body = request.stream() if length else None
        return await self._serve(request, prefix, raw_path, None, None, body, length, 0)

    async def _serve(
        self,
        request: Request,
        prefix: str,
        raw_path: bytes,
        method: str | None,
        target: bytes | None,
        body: bytes | AsyncIterator[bytes] | None,
        length: int | None,
        redirects: int,
    ) -> Response:
        script = await asyncio.to_thread(find_script, self.directory, raw_path, prefix)
        if len(self._runs) >= self.max_processes:
            raise HTTPException(503, "Too many CGI scripts running", {"Retry-After": "1"})
        env = cgi_environ(
            request,
            script,
            method=method,
            target=target,
            content_length=length,
            base=self.base_env,
            pass_authorization=self.pass_authorization,
            server_software=self.server_software,
        )
        run = await self._start(script, env, body)
        parser = CGIResponseParser()
        try:
            while True:
                data = await run.read()
                if not data:
                    break
                if parser.feed(data):
                    break
        except _ScriptTimeout:
            error_log.error("cgi %s wrote no headers within %.1f s: killed", run.name, self.timeout)
            await self._end(run, kill=True)
            raise HTTPException(504, "CGI script timed out") from None
        except CGIError as exc:
            await self._end(run, kill=True)
            error_log.error("cgi %s: %s", run.name, exc)
            raise HTTPException(500) from None
        except BaseException:
            await self._end(run, kill=True)
            raise
        if not parser.done:
            status = await self._end(run, kill=False)
            if run.body_error is not None:
                raise run.body_error
            error_log.error(
                "cgi %s ended before its header section was complete (exit status %s)",
                run.name,
                status,
            )
            raise HTTPException(500)
        location = parser.local_redirect
        if location is not None:
            await self._end(run, kill=True)
            if run.body_error is not None:
                raise run.body_error
            return await self._redirect(request, prefix, location, redirects)
        status, fields = parser.response_head()
        first = parser.body
        if status in _NO_BODY_STATUS:
            # No body may follow this status, whatever the script writes.
            await self._end(run, kill=not run.at_eof())
            return Response.from_parts(status, fields, b"")
        if run.at_eof() and (parser.content_length is None or len(first) >= parser.content_length):
            # All of it is here: one plain response.
            await self._end(run, kill=False)
            if run.body_error is not None:
                raise run.body_error
            if parser.content_length is not None:
                first = first[: parser.content_length]
            elif request.method != "HEAD":
                fields.append((b"content-length", b"%d" % len(first)))
            return Response.from_parts(status, fields, first)
        body_out = _Output(self, run, first, parser.content_length)
        return StreamingResponse.from_stream(status, fields, body_out)

    async def _start(
        self, script: Script, env: dict[str, str], body: bytes | AsyncIterator[bytes] | None
    ) -> _Run:
        loop = asyncio.get_running_loop()
        try:
            proc = await asyncio.create_subprocess_exec(
                script.filename,
                cwd=os.path.dirname(script.filename),
                env=env,
                stdin=asyncio.subprocess.PIPE if body is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:  # no interpreter line, a missing interpreter...
            error_log.error("cgi %s could not start: %s", script.script_name, exc)
            raise HTTPException(500) from None
        run = _Run(proc, script.script_name, self.timeout, loop)
        self._runs.add(run)
        if body is not None:
            run.feed(body)
        return run

    async def _end(self, run: _Run, *, kill: bool) -> int | None:
        """End `run` (see `_Run.end`) and log a failing exit status; that status."""
        try:
            status = await run.end(kill=kill)
        finally:
            self._runs.discard(run)
        if status and not kill:
            error_log.warning("cgi %s exited with status %d", run.name, status)
        return status

    async def _redirect(
        self, request: Request, prefix: str, location: bytes, redirects: int
    ) -> Response:
        """A local redirect: the response to a GET of `location` (RFC 3875 6.2.2)."""
        if redirects >= MAX_LOCAL_REDIRECTS:
            error_log.error("cgi: more than %d local redirects in a row", MAX_LOCAL_REDIRECTS)
            raise HTTPException(500)
        location = location.partition(b"#")[0]
        path, _, query = location.partition(b"?")
        root = prefix.encode("utf-8")
        if not root or path == root or path.startswith(root + b"/"):
            return await self._serve(
                request, prefix, path[len(root) :], "GET", location, None, None, redirects + 1
            )
        app = request.app
        if app is None:
            error_log.error(
                "cgi: local redirect to %r, outside %s, and no App to serve it",
                location.decode("latin-1"),
                prefix,
            )
            raise HTTPException(500)
        headers = [
            (name, value)
            for name, value in request.headers.raw
            if name not in (b"content-length", b"content-type", b"transfer-encoding", b"expect")
        ]
        again = Request(
            b"GET",
            location,
            headers,
            request.http_version.encode("ascii"),
            client=request.client,
            scheme=request.scheme,
        )
        return await app(again)
