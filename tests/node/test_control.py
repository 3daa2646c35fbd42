"""The control channel (node.control) on real Unix sockets: protocol, limits, the socket's
life cycle and permissions, the Node hook, and `kinswarm run` + `kinswarm status` processes."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from node.control import (
    LOCK_NAME,
    MAX_LINE_BYTES,
    SOCKET_NAME,
    CommandFailed,
    ControlError,
    ControlServer,
    ControlStartError,
    NodeNotRunning,
    call,
    call_sync,
    stream,
)
from node.errors import UserError
from node.network import StreamAddress
from node.node import Node, NodeConfig, NodeStartError
from node.realnet import TrioNetwork
from wire.identity import LocalIdentity

KINSWARM = [sys.executable, "-m", "node.cli"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    path.chmod(0o700)
    return path


async def echo(params: dict[str, Any]) -> dict[str, Any]:
    return {"echo": params}


async def count(params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    for n in range(params["n"]):
        yield {"n": n}
    if params.get("fail"):
        raise UserError("ran out of numbers")


async def broken(params: dict[str, Any]) -> dict[str, Any]:
    raise KeyError("a bug")


def make_server(data_dir: Path, **limits: Any) -> ControlServer:
    server = ControlServer(data_dir, **limits)
    server.register("echo", echo)
    server.register("count", count)
    server.register("broken", broken)
    return server


@asynccontextmanager
async def serving(server: ControlServer) -> AsyncIterator[ControlServer]:
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


class RawClient:
    """Speaks the protocol by hand, as `socat` would."""

    def __init__(self, connection: trio.SocketStream) -> None:
        self.connection = connection
        self.buffer = b""

    async def send(self, data: bytes) -> None:
        await self.connection.send_all(data)

    async def line(self) -> dict[str, Any] | None:
        with trio.fail_after(5):
            while b"\n" not in self.buffer:
                data = await self.connection.receive_some(65536)
                if not data:
                    return None
                self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def ask(self, data: bytes) -> dict[str, Any]:
        await self.send(data)
        reply = await self.line()
        assert reply is not None
        return reply


@asynccontextmanager
async def raw(data_dir: Path) -> AsyncIterator[RawClient]:
    connection = await trio.open_unix_socket(str(data_dir / SOCKET_NAME))
    async with connection:
        yield RawClient(connection)


# -- protocol ------------------------------------------------------------------------------


async def test_request_response(data_dir: Path) -> None:
    async with serving(make_server(data_dir)):
        assert await call(data_dir, "echo", {"a": [1, "two"]}) == {"echo": {"a": [1, "two"]}}
        assert await call(data_dir, "echo") == {"echo": {}}
        # The CLI's synchronous helper runs its own Trio loop (here in a worker thread).
        result = await trio.to_thread.run_sync(lambda: call_sync(data_dir, "echo", {"x": 1}))
        assert result == {"echo": {"x": 1}}
        async with raw(data_dir) as client:  # pipelined requests are answered in order
            await client.send(b'{"id": 7, "command": "echo"}\n\n{"id": "b", "command": "echo"}\n')
            assert await client.line() == {"id": 7, "ok": True, "result": {"echo": {}}}
            assert await client.line() == {"id": "b", "ok": True, "result": {"echo": {}}}


async def test_streaming(data_dir: Path) -> None:
    async def countdown(params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """A coroutine returning an iterator is a streaming handler too."""
        return count({"n": 2})

    server = make_server(data_dir)
    server.register("countdown", countdown)
    async with serving(server):
        assert [e async for e in stream(data_dir, "count", {"n": 3})] == [
            {"n": 0},
            {"n": 1},
            {"n": 2},
        ]
        assert [e async for e in stream(data_dir, "countdown")] == [{"n": 0}, {"n": 1}]
        seen: list[dict[str, Any]] = []
        with pytest.raises(CommandFailed, match="ran out of numbers"):
            async for event in stream(data_dir, "count", {"n": 2, "fail": True}):
                seen.append(event)
        assert seen == [{"n": 0}, {"n": 1}]
        # `call` on a streaming command skips the events and returns the final result.
        assert await call(data_dir, "count", {"n": 5}) == {}
        async with raw(data_dir) as client:
            await client.send(b'{"id": 1, "command": "count", "params": {"n": 2}}\n')
            assert await client.line() == {"id": 1, "event": {"n": 0}}
            assert await client.line() == {"id": 1, "event": {"n": 1}}
            assert await client.line() == {"id": 1, "ok": True, "result": {}}


async def test_a_streaming_handler_is_closed_when_the_client_leaves(data_dir: Path) -> None:
    closed = trio.Event()

    async def forever(params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            n = 0
            while True:
                yield {"n": n}
                n += 1
                await trio.sleep(0.01)
        finally:
            closed.set()

    server = make_server(data_dir)
    server.register("forever", forever)
    async with serving(server):
        async with raw(data_dir) as client:
            await client.send(b'{"id": 1, "command": "forever"}\n')
            assert await client.line() == {"id": 1, "event": {"n": 0}}
        with trio.fail_after(5):
            await closed.wait()
        assert await call(data_dir, "echo") == {"echo": {}}


@pytest.mark.parametrize(
    ("request_line", "expected_id", "error"),
    [
        (b"{not json\n", None, "not valid JSON"),
        (b"\xff\xfe\n", None, "not UTF-8"),
        (b"[1, 2]\n", None, "JSON object"),
        (b'{"id": 1, "command": "echo", "params": NaN}\n', None, "not valid JSON"),
        (b"[" * 100_000 + b"\n", None, "not valid JSON"),
        (b'{"id": true, "command": "echo"}\n', None, '"id"'),
        (b'{"id": 3, "command": 5}\n', 3, '"command"'),
        (b'{"id": 4, "command": "echo", "params": [1]}\n', 4, '"params"'),
        (b'{"id": 5, "command": "echo", "extra": 1}\n', 5, "unknown request fields: extra"),
        (b'{"id": 6, "command": "nope"}\n', 6, "unknown command 'nope'"),
        (b'{"id": 7, "command": "broken"}\n', 7, "internal error in 'broken': KeyError"),
    ],
)
async def test_bad_requests_get_an_error_and_the_connection_lives_on(
    data_dir: Path, request_line: bytes, expected_id: object, error: str
) -> None:
    async with serving(make_server(data_dir)), raw(data_dir) as client:
        reply = await client.ask(request_line)
        assert reply["id"] == expected_id
        assert reply["ok"] is False
        assert error in reply["error"]
        good = await client.ask(b'{"id": 9, "command": "echo"}\n')
        assert good == {"id": 9, "ok": True, "result": {"echo": {}}}


async def test_handler_errors_are_logged_and_reported(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def not_json(params: dict[str, Any]) -> dict[str, Any]:
        return {"value": object()}

    async def user_error(params: dict[str, Any]) -> dict[str, Any]:
        raise UserError("no such container")

    server = make_server(data_dir)
    server.register("not-json", not_json)
    server.register("user-error", user_error)
    caplog.set_level(logging.INFO, logger="kinswarm.control")
    async with serving(server):
        with pytest.raises(CommandFailed, match="internal error in 'broken'"):
            await call(data_dir, "broken")
        assert any(record.exc_info for record in caplog.records)  # the traceback is logged
        with pytest.raises(CommandFailed, match="internal error in 'not-json'"):
            await call(data_dir, "not-json")
        with pytest.raises(CommandFailed, match=r"^no such container$"):
            await call(data_dir, "user-error")
        with pytest.raises(CommandFailed, match="unknown command"):
            await call(data_dir, "nope")
        assert await call(data_dir, "echo") == {"echo": {}}


async def test_an_oversize_line_closes_only_that_connection(data_dir: Path) -> None:
    async with serving(make_server(data_dir)):
        async with raw(data_dir) as client:
            with trio.fail_after(5):
                # The server may close before reading all of it: that is the point.
                try:
                    await client.send(b"x" * (MAX_LINE_BYTES + 2))
                except trio.BrokenResourceError:
                    pass
            reply = await client.line()
            assert reply is not None
            assert "longer than" in reply["error"]
            assert await client.line() is None
        # A line of exactly the limit is still read (and here is bad JSON, not too long).
        async with raw(data_dir) as client:
            reply = await client.ask(b"x" * MAX_LINE_BYTES + b"\n")
            assert "not valid JSON" in reply["error"]
        assert await call(data_dir, "echo") == {"echo": {}}


async def test_idle_connections_are_closed(data_dir: Path) -> None:
    async with serving(make_server(data_dir, idle_timeout=0.2)), raw(data_dir) as client:
        assert (await client.ask(b'{"id": 1, "command": "echo"}\n'))["ok"]
        reply = await client.line()
        assert reply is not None
        assert reply["id"] is None
        assert "idle" in reply["error"]
        assert await client.line() is None


async def test_requests_and_connections_are_bounded(data_dir: Path) -> None:
    async with serving(make_server(data_dir, max_requests=3, max_connections=1)):
        async with raw(data_dir) as client:
            for n in range(3):
                assert (await client.ask(b'{"id": %d, "command": "echo"}\n' % n))["ok"]
            async with raw(data_dir) as second:  # one connection at most
                refused = await second.line()
                assert refused is not None
                assert "too many control connections" in refused["error"]
                assert await second.line() is None
            with pytest.raises(CommandFailed, match="too many control connections"):
                await call(data_dir, "echo")
            reply = await client.ask(b'{"id": 4, "command": "echo"}\n')
            assert "more than 3 requests" in reply["error"]
            assert await client.line() is None
        assert await call(data_dir, "echo") == {"echo": {}}


async def test_register_refuses_duplicates_and_bad_names(data_dir: Path) -> None:
    server = make_server(data_dir)
    with pytest.raises(ValueError, match="already registered"):
        server.register("echo", echo)
    for bad in ("", " echo", "a\nb"):
        with pytest.raises(ValueError, match="bad command name"):
            server.register(bad, echo)


# -- the socket's life cycle ---------------------------------------------------------------


async def test_socket_is_owner_only_and_removed_on_shutdown(data_dir: Path) -> None:
    path = data_dir / SOCKET_NAME
    async with serving(make_server(data_dir)) as server:
        mode = path.lstat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE((data_dir / LOCK_NAME).stat().st_mode) == 0o600
        assert (data_dir / LOCK_NAME).read_text().strip() == str(os.getpid())
        assert server.socket_path == path
    assert not path.exists()
    async with serving(make_server(data_dir)):  # the lock was released too
        assert await call(data_dir, "echo") == {"echo": {}}


@pytest.mark.parametrize("mode", [0o750, 0o701, 0o707])
async def test_a_data_dir_others_can_enter_is_refused(data_dir: Path, mode: int) -> None:
    data_dir.chmod(mode)  # noqa: ASYNC240 (setting up, nothing else runs)
    with pytest.raises(ControlStartError, match=f"chmod 700 {data_dir}"):
        await make_server(data_dir).serve()
    assert not (data_dir / SOCKET_NAME).exists()


async def test_a_missing_data_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ControlStartError, match="does not exist"):
        await make_server(tmp_path / "absent").serve()


def make_stale_socket(path: Path) -> None:
    """What a crashed node leaves: a socket file nobody listens on."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()


async def test_a_stale_socket_is_replaced(data_dir: Path) -> None:
    path = data_dir / SOCKET_NAME
    make_stale_socket(path)
    path.chmod(0o777)
    with pytest.raises(NodeNotRunning):
        await call(data_dir, "echo")
    async with serving(make_server(data_dir)):
        assert await call(data_dir, "echo") == {"echo": {}}
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600


async def test_a_file_that_is_not_a_socket_is_left_alone(data_dir: Path) -> None:
    path = data_dir / SOCKET_NAME
    path.write_text("precious")
    with pytest.raises(ControlStartError, match="not a socket"):
        await make_server(data_dir).serve()
    assert path.read_text() == "precious"


async def test_a_second_server_on_the_same_data_dir_is_refused(data_dir: Path) -> None:
    async with serving(make_server(data_dir)):
        with pytest.raises(ControlStartError, match=rf"pid {os.getpid()}\) is already running"):
            await make_server(data_dir).serve()
        # The refused one touched nothing: the first still serves on its socket.
        assert await call(data_dir, "echo") == {"echo": {}}


async def test_a_live_socket_without_the_lock_is_refused(data_dir: Path) -> None:
    """Someone answers on the socket but holds no lock (an older build, say): not stale."""
    path = data_dir / SOCKET_NAME
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    try:
        with pytest.raises(ControlStartError, match=r"another process listens on .* and answers"):
            await make_server(data_dir).serve()
        assert path.exists()
    finally:
        listener.close()


async def test_node_not_running(data_dir: Path, tmp_path: Path) -> None:
    for where in (data_dir, tmp_path / "absent"):
        with pytest.raises(NodeNotRunning) as raised:
            await call(where, "ping")
        assert isinstance(raised.value, UserError)
        assert f"kinswarm run --data-dir {where}" in str(raised.value)
        assert "\n" not in str(raised.value)
        with pytest.raises(NodeNotRunning):
            async for _ in stream(where, "count"):
                pass


async def test_a_node_that_never_answers_times_out(data_dir: Path) -> None:
    async def slow(params: dict[str, Any]) -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError

    server = make_server(data_dir)
    server.register("slow", slow)
    async with serving(server):
        with pytest.raises(ControlError, match=r"did not answer 'slow' within 0\.2 s"):
            await call(data_dir, "slow", timeout=0.2)


async def test_a_data_dir_past_the_socket_path_limit_works(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["d" * 40] * 4)
    deep.mkdir(parents=True, mode=0o700)
    deep.chmod(0o700)
    assert len(str(deep / SOCKET_NAME)) > 108
    async with serving(make_server(deep)):
        assert (deep / SOCKET_NAME).exists()
        assert await call(deep, "echo") == {"echo": {}}
    assert not (deep / SOCKET_NAME).exists()


# -- the Node hook -------------------------------------------------------------------------


def local_node(network: TrioNetwork, data_dir: Path | None, seed: int) -> Node:
    config = NodeConfig(
        listen=(StreamAddress("tcp", "127.0.0.1", 0),),
        control=data_dir is not None,
        data_dir=data_dir,
    )
    return Node(network=network, identity=LocalIdentity(bytes([seed]) * 32), config=config)


async def test_node_serves_ping_and_peers(tmp_path: Path) -> None:
    a_dir = tmp_path / "a"
    a_dir.mkdir(mode=0o700)
    async with TrioNetwork() as network, trio.open_nursery() as nursery:
        a = local_node(network, a_dir, 1)
        b = local_node(network, None, 2)
        assert b.control is None
        assert a.control is not None

        async def hello(params: dict[str, Any]) -> dict[str, Any]:
            return {"hello": "from a service"}

        a.control.register("hello", hello)  # what services do with node.control
        await nursery.start(a.run)
        b_addresses = await nursery.start(b.run)
        await a.connect(b_addresses[0])

        ping = await call(a_dir, "ping")
        assert ping["node_id"] == a.node_id.hex()
        assert ping["pid"] == os.getpid()
        assert ping["listen"] == [str(address) for address in a.listen_addresses]
        assert await call(a_dir, "hello") == {"hello": "from a service"}
        (peer,) = (await call(a_dir, "peers"))["peers"]
        assert peer["node_id"] == b.node_id.hex()
        assert peer["direction"] == "initiator"
        assert peer["address"] == str(b_addresses[0])
        assert peer["connected_seconds"] >= 0
        assert peer["bytes_sent"] > 0 and peer["bytes_received"] > 0
        assert peer["agent"] == "kinswarm/0.1"

        # A second node on the same data dir fails to start, naming the reason.
        twin = local_node(network, a_dir, 3)
        with pytest.raises(NodeStartError, match="already running with data directory"):
            await nursery.start(twin.run)
        assert (await call(a_dir, "ping"))["node_id"] == a.node_id.hex()
        nursery.cancel_scope.cancel()
    assert not (a_dir / SOCKET_NAME).exists()


def test_control_needs_a_data_dir() -> None:
    with pytest.raises(ValueError, match="data_dir"):
        Node(
            network=TrioNetwork(),
            identity=LocalIdentity(b"\x01" * 32),
            config=NodeConfig(control=True),
        )


# -- real processes ------------------------------------------------------------------------


class Process:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []

    def read_until(self, prefix: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                assert self.process.stderr is not None
                raise AssertionError(f"node exited: {self.process.stderr.read()}")
            self.lines.append(line.rstrip("\n"))
            if line.startswith(prefix):
                return line.rstrip("\n")
        raise AssertionError(f"no line starting with {prefix!r}: {self.lines}")


@contextmanager
def kinswarm_run(data_dir: Path, *extra: str) -> Iterator[Process]:
    process = subprocess.Popen(
        [
            *KINSWARM,
            "run",
            "--data-dir",
            str(data_dir),
            "--listen",
            "127.0.0.1:0",
            "--no-ws",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        node = Process(process)
        node.read_until("listening tcp://")
        yield node
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def kinswarm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KINSWARM, *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_kinswarm_status_against_real_nodes(tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    with kinswarm_run(a_dir) as a:
        a_id = a.lines[0].split()[-1]
        address = a.lines[-1].split()[-1]
        with kinswarm_run(b_dir, "--connect", address) as b:
            b_id = b.lines[0].split()[-1]
            assert b.read_until("connected ").split()[1] == a_id

            deadline = time.monotonic() + 10
            while True:  # a's side of the connection may register a moment after b's
                status = kinswarm("status", "--data-dir", str(a_dir))
                assert status.returncode == 0, status.stderr
                if b_id[:16] in status.stdout or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert f"node {a_id}" in status.stdout
            assert "1 peer" in status.stdout
            assert b_id[:16] in status.stdout

            as_json = kinswarm("status", "--data-dir", str(b_dir), "--json")
            assert as_json.returncode == 0, as_json.stderr
            answer = json.loads(as_json.stdout)
            assert answer["node"]["node_id"] == b_id
            (peer,) = answer["peers"]
            assert peer["node_id"] == a_id
            assert peer["direction"] == "initiator"

            twin = kinswarm("run", "--data-dir", str(a_dir), "--listen", "127.0.0.1:0", "--no-ws")
            assert twin.returncode == 1
            assert "already running with data directory" in twin.stderr
            assert "Traceback" not in twin.stderr

            b.process.send_signal(signal.SIGINT)
            assert b.process.wait(timeout=5) == 0
        assert not (b_dir / SOCKET_NAME).exists()
        assert (a_dir / SOCKET_NAME).exists()
        a.process.send_signal(signal.SIGINT)
        assert a.process.wait(timeout=5) == 0
    assert not (a_dir / SOCKET_NAME).exists()

    gone = kinswarm("status", "--data-dir", str(a_dir))
    assert gone.returncode == 1
    assert gone.stderr.strip() == (
        f"kinswarm status: no kinswarm node is running with data directory {a_dir}; "
        f"start one with `kinswarm run --data-dir {a_dir}`"
    )
