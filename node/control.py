"""The node's local control channel: how `kinswarm status`, `kinswarm get`... talk to the
`kinswarm run` node of the same data directory.

**Why a Unix domain socket.** The channel carries commands that act as the node's owner, so
only the owner may reach it. A socket file inside the data directory gets that from the file
system: the directory is 0700 (checked; the server refuses to start otherwise) and the socket
is 0600, made so between `bind()` and `listen()`, while connecting is still refused. The
server also checks the caller's uid (`SO_PEERCRED`) where the platform tells it. Nothing here
ever listens on the network: no TCP, not even on loopback, where any local user could connect.
This is also why it does not go through the `Network` seam: it is a host-local OS channel for
the person at the keyboard, not part of the peer network, and the simulator never enables it.

**One node per data directory.** The server holds an exclusive `flock` on
`<data dir>/control.lock` (released by the kernel when the process dies, so a crash never
leaves it stale) and writes its pid there. A socket file found at start is therefore left by a
crashed node; it is removed, unless something still answers on it (then we refuse, as for a
file that is not a socket at all). On a clean shutdown the socket is deleted, if it is still
the one we created.

**Protocol.** Newline-delimited JSON (UTF-8), so it can be driven by hand::

    $ socat - UNIX-CONNECT:$HOME/.local/share/kinswarm/control.sock
    {"id": 1, "command": "ping"}
    {"id":1,"ok":true,"result":{"node_id":"5f3a…","pid":4242,"agent":"kinswarm/0.1","listen":[…]}}

* Request, one line: ``{"id": n, "command": "name", "params": {...}}``. ``id`` is an integer
  or a string (or absent, then replies carry ``null``); ``params`` is an object (default
  ``{}``); no other fields.
* Reply: ``{"id": n, "ok": true, "result": {...}}`` or ``{"id": n, "ok": false, "error":
  "one readable line"}``.
* A streaming command first sends any number of ``{"id": n, "event": {...}}`` lines, then the
  final ok (result ``{}``) or error line.
* Requests on one connection are answered one at a time, in order; open more connections for
  parallel calls. Blank lines are ignored.
* Limits: a request line is at most `MAX_LINE_BYTES` (1 MiB; a longer one gets an error and
  the connection is closed, as it cannot be resynchronised cheaply); at most
  `MAX_REQUESTS_PER_CONNECTION` lines per connection and `MAX_CONNECTIONS` connections at once;
  a connection idle for `IDLE_TIMEOUT_SECONDS` between requests is closed (with an error line
  saying so); a client that stops reading for `SEND_TIMEOUT_SECONDS` is dropped. Replies
  addressed to no request (``"id": null``) report such connection-level errors.
* Malformed JSON, unknown commands and failing handlers get an error reply; none of them can
  stop the server. A handler raising `UserError` reports its message; any other exception is a
  bug: it is logged with its traceback and reported as an internal error.

**Never.** This module never listens on a network address, never follows a request into
another user's files, and never lets one client's mistake end the server or another client.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import json
import logging
import os
import stat
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

from node.errors import UserError

if TYPE_CHECKING:
    from node.node import Node
    from node.peer import PeerConnection

log = logging.getLogger("kinswarm.control")

SOCKET_NAME: Final = "control.sock"
LOCK_NAME: Final = "control.lock"

MAX_LINE_BYTES: Final = 1024 * 1024
"""Longest request line the server reads."""
MAX_REPLY_LINE_BYTES: Final = 64 * 1024 * 1024
"""Longest reply line the client reads (and the server sends): peer tables can be long."""
MAX_REQUESTS_PER_CONNECTION: Final = 10_000
MAX_CONNECTIONS: Final = 64
IDLE_TIMEOUT_SECONDS: Final = 60.0
SEND_TIMEOUT_SECONDS: Final = 10.0
PROBE_TIMEOUT_SECONDS: Final = 2.0
"""How long to wait for a connect to an existing socket file before calling it live."""
DEFAULT_CALL_TIMEOUT_SECONDS: Final = 10.0
RECEIVE_CHUNK_BYTES: Final = 64 * 1024
LISTEN_BACKLOG: Final = 16
_SUN_PATH_MAX: Final = 108 if sys.platform.startswith("linux") else 104
"""sockaddr_un.sun_path size, terminating NUL included."""

Params = dict[str, Any]
Result = dict[str, Any]
Handler = Callable[[Params], Awaitable[Result | AsyncIterator[Result]] | AsyncIterator[Result]]
"""`async def handler(params) -> dict` for one reply, or returning an async iterator of event
dicts (an async generator function works too) for a streaming reply."""


class ControlError(UserError):
    """The control channel failed; the message is one line for the user."""


class NodeNotRunning(ControlError):
    """No node answers on the data directory's control socket."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(
            f"no kinswarm node is running with data directory {data_dir}; "
            f"start one with `kinswarm run --data-dir {data_dir}`"
        )
        self.data_dir = data_dir


class CommandFailed(ControlError):
    """The node answered a command with an error."""


class ControlStartError(ControlError):
    """The control server cannot start (unsafe data directory, another node running...)."""


# -- the line format shared by both sides --------------------------------------------------


class _LineTooLong(Exception):
    pass


class _LineReader:
    """Splits a byte stream into newline-terminated lines of bounded length."""

    def __init__(self, stream: trio.abc.ReceiveStream, max_bytes: int) -> None:
        self._stream = stream
        self._max_bytes = max_bytes
        self._buffer = bytearray()
        self._scanned = 0  # bytes of _buffer known to hold no newline

    async def read_line(self) -> bytes | None:
        """The next line without its newline; None at end of stream (a partial last line
        is dropped: only complete lines are requests). Raises _LineTooLong."""
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if end >= 0:
                if end > self._max_bytes:
                    raise _LineTooLong
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                self._scanned = 0
                return line
            self._scanned = len(self._buffer)
            if self._scanned > self._max_bytes:
                raise _LineTooLong
            data = await self._stream.receive_some(RECEIVE_CHUNK_BYTES)
            if not data:
                return None
            self._buffer += data


def _encode(message: dict[str, Any]) -> bytes:
    """One protocol line. Raises TypeError/ValueError if `message` is not plain JSON data."""
    text = json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8") + b"\n"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode(line: bytes) -> Any:
    """Parse one line strictly (no NaN/Infinity). Raises ValueError with a readable reason."""
    try:
        return json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc.reason}") from exc
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc


def _error(request_id: object, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": message}


@contextlib.contextmanager
def _unix_address(path: Path) -> Iterator[str]:
    """An address for bind/connect that reaches `path`, even past the ~107-byte limit of
    socket paths: on Linux a long path is reached through `/proc/self/fd/<dir fd>/<name>`
    (the descriptor only has to stay open for the bind or connect call itself)."""
    text = os.fsdecode(path)
    if len(os.fsencode(text)) < _SUN_PATH_MAX:
        yield text
        return
    if not sys.platform.startswith("linux"):
        raise OSError(errno.ENAMETOOLONG, "path too long for a socket; use a shorter data dir")
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{directory}/{path.name}"
    finally:
        os.close(directory)


async def _open_socket(path: Path) -> trio.SocketStream:
    """Connect to the socket at `path`. Raises OSError (FileNotFoundError if absent,
    ConnectionRefusedError if nobody listens)."""
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        with _unix_address(path) as address:
            await sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


# -- the server ----------------------------------------------------------------------------


class _BadRequest(Exception):
    def __init__(self, request_id: object, message: str) -> None:
        super().__init__(message)
        self.request_id = request_id


def _parse_request(line: bytes) -> tuple[object, str, Params]:
    try:
        request = _decode(line)
    except ValueError as exc:
        raise _BadRequest(None, f"request is not valid JSON: {exc}") from exc
    if not isinstance(request, dict):
        raise _BadRequest(None, "a request must be a JSON object")
    request_id = request.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str | None):
        raise _BadRequest(None, '"id" must be an integer or a string')
    unknown = sorted(set(request) - {"id", "command", "params"})
    if unknown:
        raise _BadRequest(request_id, f"unknown request fields: {', '.join(unknown)}")
    command = request.get("command")
    if not isinstance(command, str):
        raise _BadRequest(request_id, '"command" must be a string')
    params = request.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise _BadRequest(request_id, '"params" must be an object')
    return request_id, command, params


class ControlServer:
    """Serves registered commands on `<data_dir>/control.sock` (see the module docstring).

    Register commands with `register` (before or while serving); run `serve` as a service of
    the node (`nursery.start(server.serve)`): it reports the socket path once connectable.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
        max_requests: int = MAX_REQUESTS_PER_CONNECTION,
    ) -> None:
        self.data_dir = data_dir
        self.socket_path = data_dir / SOCKET_NAME
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._max_requests = max_requests
        self._handlers: dict[str, Handler] = {}
        self._connections = 0

    def register(self, command: str, handler: Handler) -> None:
        """Answer `command` with `handler`. Names are unique: registering one twice is a bug
        (two services fighting over a name), so it raises ValueError."""
        if not command or not command.isprintable() or command != command.strip():
            raise ValueError(f"bad command name {command!r}")
        if command in self._handlers:
            raise ValueError(f"control command {command!r} is already registered")
        self._handlers[command] = handler

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    # -- lifecycle --------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; remove the socket on the way out. Raises ControlStartError
        before `started` if the data directory is unsafe or another node uses it."""
        _check_data_dir(self.data_dir)
        lock = _acquire_lock(self.data_dir / LOCK_NAME, self.data_dir)
        try:
            await _remove_stale_socket(self.socket_path)
            sock, created = await self._bind()
            try:
                listener = trio.SocketListener(sock)
                async with trio.open_nursery() as nursery:
                    await nursery.start(trio.serve_listeners, self._connection, [listener])
                    log.info("control channel on %s", self.socket_path)
                    task_status.started(self.socket_path)
            finally:
                sock.close()
                _unlink_if_same(self.socket_path, created)
        finally:
            os.close(lock)

    async def _bind(self) -> tuple[trio.socket.SocketType, os.stat_result]:
        path = self.socket_path
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        created: os.stat_result | None = None
        bound = False
        try:
            with _unix_address(path) as address:
                await sock.bind(address)
            bound = True
            # Before listen(): until then every connect is refused, so nobody ever reaches
            # the node through a socket with the umask's looser mode.
            os.chmod(path, 0o600)
            created = os.lstat(path)
            sock.listen(LISTEN_BACKLOG)
        except BaseException as exc:
            sock.close()
            if bound:  # we hold the lock, so the file at `path` is the one we just bound
                with contextlib.suppress(OSError):
                    os.unlink(path)
            if isinstance(exc, OSError):
                message = f"cannot listen on {path}: {exc.strerror or exc}"
                raise ControlStartError(message) from exc
            raise
        assert created is not None
        return sock, created

    # -- connections ------------------------------------------------------------------------

    async def _connection(self, stream: trio.SocketStream) -> None:
        """Serve one client until it leaves. Never raises (but for cancellation): whatever a
        client does ends at most its own connection."""
        async with stream:
            if self._connections >= self._max_connections:
                with contextlib.suppress(trio.BrokenResourceError, trio.TooSlowError):
                    await self._send(stream, _error(None, "too many control connections"))
                return
            self._connections += 1
            try:
                if _same_user(stream):
                    await self._converse(stream)
                else:
                    log.warning("control connection from another user refused")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.debug("control client went away")
            except trio.TooSlowError:
                log.info("control client stopped reading replies; dropped it")
            except Exception:
                log.exception("control connection failed")
            finally:
                self._connections -= 1

    async def _converse(self, stream: trio.SocketStream) -> None:
        reader = _LineReader(stream, MAX_LINE_BYTES)
        lines = 0
        while True:
            line: bytes | None = None
            with trio.move_on_after(self._idle_timeout) as idle:
                try:
                    line = await reader.read_line()
                except _LineTooLong:
                    await self._send(
                        stream, _error(None, f"request longer than {MAX_LINE_BYTES} bytes")
                    )
                    return
            if idle.cancelled_caught:
                message = f"idle for {self._idle_timeout:g} s; closing"
                await self._send(stream, _error(None, message))
                return
            if line is None:
                return
            lines += 1
            if lines > self._max_requests:
                message = f"more than {self._max_requests} requests on one connection; reconnect"
                await self._send(stream, _error(None, message))
                return
            if line.strip():
                await self._answer(stream, line)

    async def _answer(self, stream: trio.SocketStream, line: bytes) -> None:
        try:
            request_id, command, params = _parse_request(line)
        except _BadRequest as bad:
            await self._send(stream, _error(bad.request_id, str(bad)))
            return
        handler = self._handlers.get(command)
        if handler is None:
            known = ", ".join(self.commands) or "none"
            message = f"unknown command {command!r} (known: {known})"
            await self._send(stream, _error(request_id, message))
            return
        try:
            returned = handler(params)
            outcome = await returned if inspect.isawaitable(returned) else returned
        except Exception as exc:
            await self._send(stream, _error(request_id, _failure(command, exc)))
            return
        if isinstance(outcome, AsyncIterator):
            await self._stream_events(stream, request_id, command, outcome)
        elif isinstance(outcome, dict):
            await self._send_checked(stream, request_id, command, {"ok": True, "result": outcome})
        else:
            log.error("control command %r returned %s", command, type(outcome).__name__)
            await self._send(stream, _error(request_id, f"internal error in {command!r}"))

    async def _stream_events(
        self,
        stream: trio.SocketStream,
        request_id: object,
        command: str,
        events: AsyncIterator[Result],
    ) -> None:
        """Relay a handler's events; the handler's iterator is closed however this ends (the
        client leaving included), so its cleanup runs."""
        try:
            while True:
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    await self._send(stream, _error(request_id, _failure(command, exc)))
                    return
                if not isinstance(event, dict):
                    log.error("control command %r yielded %s", command, type(event).__name__)
                    await self._send(stream, _error(request_id, f"internal error in {command!r}"))
                    return
                if not await self._send_checked(stream, request_id, command, {"event": event}):
                    return
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        await self._send(stream, {"id": request_id, "ok": True, "result": {}})

    async def _send_checked(
        self, stream: trio.SocketStream, request_id: object, command: str, body: dict[str, Any]
    ) -> bool:
        """Send a reply the handler built; if it is not plain JSON or too long (a bug in the
        handler), send an error instead and return False."""
        try:
            data = _encode({"id": request_id, **body})
        except (TypeError, ValueError):
            log.exception("control command %r produced a reply that is not JSON", command)
            await self._send(stream, _error(request_id, f"internal error in {command!r}"))
            return False
        if len(data) > MAX_REPLY_LINE_BYTES:
            log.error("control command %r produced a %d-byte reply", command, len(data))
            await self._send(stream, _error(request_id, f"reply of {command!r} is too long"))
            return False
        await self._send_bytes(stream, data)
        return True

    async def _send(self, stream: trio.SocketStream, message: dict[str, Any]) -> None:
        await self._send_bytes(stream, _encode(message))

    async def _send_bytes(self, stream: trio.SocketStream, data: bytes) -> None:
        with trio.fail_after(SEND_TIMEOUT_SECONDS):
            await stream.send_all(data)


def _failure(command: str, exc: Exception) -> str:
    """The error line for a handler's exception: a UserError is the handler speaking to the
    user; anything else is a bug, logged with its traceback."""
    if isinstance(exc, UserError):
        log.info("control command %r failed: %s", command, exc)
        return str(exc)
    log.error("control command %r raised", command, exc_info=exc)
    return f"internal error in {command!r}: {type(exc).__name__}: {exc}"


def _same_user(stream: trio.SocketStream) -> bool:
    """Defence in depth behind the 0700/0600 modes: the caller's uid, where the OS says."""
    peercred = getattr(trio.socket, "SO_PEERCRED", None)
    if peercred is None:
        return True
    raw = stream.socket.getsockopt(trio.socket.SOL_SOCKET, peercred, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return bool(uid == os.geteuid())


def _check_data_dir(data_dir: Path) -> None:
    try:
        info = os.stat(data_dir)
    except FileNotFoundError as exc:
        raise ControlStartError(f"data directory {data_dir} does not exist") from exc
    except OSError as exc:
        raise ControlStartError(f"cannot use data directory {data_dir}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise ControlStartError(f"data directory {data_dir} is not a directory")
    if info.st_uid != os.geteuid():
        raise ControlStartError(f"data directory {data_dir} belongs to another user")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ControlStartError(
            f"data directory {data_dir} is accessible by other users; run `chmod 700 {data_dir}`"
        )


def _acquire_lock(path: Path, data_dir: Path) -> int:
    """Hold `path` locked (flock) and write our pid in it; the descriptor is the lock."""
    try:
        import fcntl
    except ImportError:  # no flock: the live-socket probe alone guards the data directory
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ControlStartError(f"cannot open {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_pid(descriptor)
        os.close(descriptor)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            pid = f" (pid {holder})" if holder else ""
            raise ControlStartError(
                f"another kinswarm node{pid} is already running with data directory {data_dir}"
            ) from exc
        raise ControlStartError(f"cannot lock {path}: {exc.strerror}") from exc
    try:  # only to name the holder in the message above: the flock is the lock
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError:
        log.warning("cannot write our pid into %s", path)
    return descriptor


def _read_pid(descriptor: int) -> int | None:
    try:
        text = os.pread(descriptor, 32, 0).decode("ascii").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


async def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file left by a crashed node. Refuse a live one or a non-socket."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ControlStartError(f"{path} exists and is not a socket; move it out of the way")
    try:
        with trio.move_on_after(PROBE_TIMEOUT_SECONDS) as probe:
            stream = await _open_socket(path)
            await stream.aclose()
        answered = True  # connected, or a backlog so full that connect hung: alive either way
    except (ConnectionRefusedError, FileNotFoundError):
        answered = False
    except OSError as exc:
        raise ControlStartError(f"cannot check {path}: {exc.strerror or exc}") from exc
    if answered:
        how = "but does not accept connections" if probe.cancelled_caught else "and answers"
        raise ControlStartError(f"another process listens on {path} {how}; stop it first")
    log.info("removing the stale control socket %s", path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _unlink_if_same(path: Path, created: os.stat_result) -> None:
    """Delete the socket file if it is still the one we bound (not a successor's)."""
    with contextlib.suppress(OSError):
        now = os.lstat(path)
        same = (now.st_dev, now.st_ino, now.st_ctime_ns)
        if same == (created.st_dev, created.st_ino, created.st_ctime_ns):
            os.unlink(path)


# -- the client ----------------------------------------------------------------------------


async def _connect(data_dir: Path) -> trio.SocketStream:
    path = data_dir / SOCKET_NAME
    try:
        return await _open_socket(path)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise NodeNotRunning(data_dir) from exc
    except OSError as exc:
        raise ControlError(f"cannot reach the node through {path}: {exc.strerror or exc}") from exc


async def _send_request(stream: trio.SocketStream, command: str, params: Params | None) -> None:
    try:
        request = _encode({"id": 1, "command": command, "params": params or {}})
    except (TypeError, ValueError) as exc:
        raise ControlError(f"parameters of {command!r} are not JSON: {exc}") from exc
    try:
        await stream.send_all(request)
    except trio.BrokenResourceError as exc:
        raise ControlError("the node closed the control connection") from exc


async def _read_reply(reader: _LineReader) -> dict[str, Any]:
    """The next reply line for our request (id 1), or CommandFailed for an error addressed
    to the connection (id null: idle, too many connections...)."""
    try:
        line = await reader.read_line()
    except _LineTooLong:
        raise ControlError("the node sent a reply longer than the limit") from None
    except trio.BrokenResourceError as exc:
        raise ControlError("the control connection to the node broke") from exc
    if line is None:
        raise ControlError("the node closed the control connection without answering")
    try:
        reply = _decode(line)
    except ValueError as exc:
        raise ControlError(f"the node sent a malformed reply: {exc}") from exc
    if not isinstance(reply, dict) or reply.get("id") not in (1, None):
        raise ControlError("the node sent a malformed reply")
    if reply.get("ok") is False:
        raise CommandFailed(str(reply.get("error", "unknown error")))
    if reply.get("id") is None:
        raise ControlError("the node sent a malformed reply")
    return reply


def _final_result(reply: dict[str, Any]) -> Result:
    result = reply.get("result")
    if reply.get("ok") is not True or not isinstance(result, dict):
        raise ControlError("the node sent a malformed reply")
    return result


async def call(
    data_dir: Path,
    command: str,
    params: Params | None = None,
    *,
    # The deadline is part of the call (ASYNC109 prefers the caller's scope): every CLI use
    # needs one, and the error then names the command that did not answer.
    timeout: float = DEFAULT_CALL_TIMEOUT_SECONDS,  # noqa: ASYNC109
) -> Result:
    """Run `command` on the node of `data_dir` and return its result. Events of a streaming
    command are skipped. Raises NodeNotRunning, CommandFailed (the node's error message) or
    ControlError (no answer within `timeout` seconds, a broken connection)."""
    try:
        with trio.fail_after(timeout):
            stream = await _connect(data_dir)
            async with stream:
                await _send_request(stream, command, params)
                reader = _LineReader(stream, MAX_REPLY_LINE_BYTES)
                while True:
                    reply = await _read_reply(reader)
                    if "event" not in reply:
                        return _final_result(reply)
    except trio.TooSlowError:
        raise ControlError(f"the node did not answer {command!r} within {timeout:g} s") from None


async def stream(
    data_dir: Path,
    command: str,
    params: Params | None = None,
    *,
    connect_timeout: float = DEFAULT_CALL_TIMEOUT_SECONDS,
) -> AsyncIterator[Result]:
    """Run a streaming `command` and yield its events until it ends; raises CommandFailed if
    it ends in error. There is no overall deadline (a download's progress can take hours);
    wrap the loop in your own if you need one. Close it early with `aclosing`."""
    try:
        with trio.fail_after(connect_timeout):
            connection = await _connect(data_dir)
    except trio.TooSlowError:
        raise ControlError(
            f"the node did not accept a connection within {connect_timeout:g} s"
        ) from None
    async with connection:
        with trio.fail_after(connect_timeout):
            await _send_request(connection, command, params)
        reader = _LineReader(connection, MAX_REPLY_LINE_BYTES)
        while True:
            reply = await _read_reply(reader)
            if "event" not in reply:
                _final_result(reply)
                return
            event = reply["event"]
            if not isinstance(event, dict):
                raise ControlError("the node sent a malformed event")
            yield event


def call_sync(
    data_dir: Path,
    command: str,
    params: Params | None = None,
    *,
    timeout: float = DEFAULT_CALL_TIMEOUT_SECONDS,
) -> Result:
    """`call` for synchronous code such as the CLI (runs its own Trio loop)."""
    return trio.run(functools.partial(call, data_dir, command, params, timeout=timeout))


# -- the node's built-in commands ----------------------------------------------------------


def register_node_commands(server: ControlServer, node: Node) -> None:
    """`ping` (who is this node) and `peers` (its connections), read from the live Node."""

    async def ping(params: Params) -> Result:
        return {
            "node_id": node.node_id.hex(),
            "pid": os.getpid(),
            "agent": node.config.agent,
            "listen": [str(address) for address in node.listen_addresses],
        }

    async def peers(params: Params) -> Result:
        now = node.network.now()
        return {"peers": [_peer_summary(peer, now) for peer in list(node.peers.values())]}

    server.register("ping", ping)
    server.register("peers", peers)


def _peer_summary(peer: PeerConnection, now: float) -> Result:
    connected = 0.0 if peer.connected_at is None else max(0.0, now - peer.connected_at)
    return {
        "node_id": peer.node_id.hex(),
        "address": peer.remote_address,
        "direction": "initiator" if peer.is_initiator else "responder",
        "connected_seconds": round(connected, 3),
        "bytes_sent": peer.bytes_sent,
        "bytes_received": peer.bytes_received,
        "round_trip_seconds": peer.round_trip_seconds,
        "agent": peer.hello.agent if peer.hello is not None else None,
    }
