"""The `kinswarm` command line.

Every command takes `--data-dir` (else `KINSWARM_DATA_DIR`, else the platform default) and
prints errors as one readable line with a non-zero exit status, never a traceback, unless
`--debug` asks for one.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path

import trio

from node import cli_dht, cli_node, cli_store, cli_swarm
from node.datadir import (
    DataDirError,
    ensure_data_dir,
    load_or_create_identity,
    read_capability_key,
    resolve_data_dir,
    resolve_download_dir,
)
from node.errors import UserError
from node.network import StreamAddress, is_loopback
from node.node import (
    DEFAULT_MAX_PEERS,
    DEFAULT_TCP_LISTEN,
    DEFAULT_WS_LISTEN,
    DhtConfig,
    Node,
    NodeConfig,
    NodeStartError,
)
from node.peer import PeerGone
from node.realnet import TrioNetwork
from node.store import Store, StoreError
from node.swarm.engine import SwarmEngine
from node.swarm_commands import register_swarm_commands

log = logging.getLogger("kinswarm.cli")

CONNECT_TIMEOUT_SECONDS = 15.0
DHT_STATE_FILE = "dht-routing.msgpack"
PLUGIN_GROUP = "kinswarm.commands"
Job = Callable[[Node, SwarmEngine], Awaitable[bool]]
"""A foreground job for `serve`: returns whether the node should keep running afterwards."""
"""Entry points in this group add subcommands: `register(subparsers, add_common)`, setting
`handler=function(args) -> exit status` on their parser (see `simulations.cli`)."""


class CommandError(UserError):
    """A failure to report to the user as one line."""


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="node state directory (default: $KINSWARM_DATA_DIR or the platform data dir)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _address(default_transport: str) -> type:
    def parse(text: str) -> StreamAddress:
        try:
            return StreamAddress.parse(text, default_transport=default_transport)  # type: ignore[arg-type]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse  # type: ignore[return-value]


def add_node_options(parser: argparse.ArgumentParser) -> None:
    """The options of a running node (`kinswarm run`, and `kinswarm get` without a node)."""
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        type=_address("tcp"),
        action="append",
        help=f"TCP listen address (default {DEFAULT_TCP_LISTEN.host}:"
        f"{DEFAULT_TCP_LISTEN.port}); repeatable",
    )
    parser.add_argument(
        "--ws-listen",
        metavar="HOST:PORT",
        type=_address("ws"),
        action="append",
        help=f"WebSocket listen address (default {DEFAULT_WS_LISTEN.host}:"
        f"{DEFAULT_WS_LISTEN.port}); repeatable",
    )
    parser.add_argument("--no-tcp", action="store_true", help="do not listen on TCP")
    parser.add_argument("--no-ws", action="store_true", help="do not listen on WebSocket")
    parser.add_argument(
        "--network-key-file",
        metavar="FILE",
        type=Path,
        help="only talk to holders of this network capability key (64 hex digits)",
    )
    parser.add_argument(
        "--dht-listen",
        metavar="HOST:PORT",
        type=_address("tcp"),
        help="UDP address of the DHT (default: the first TCP listen address, as UDP)",
    )
    parser.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        type=_address("tcp"),
        action="append",
        default=[],
        help="a DHT node to join through (repeatable; the saved routing table is used too)",
    )
    parser.add_argument("--no-dht", action="store_true", help="do not run the DHT")
    parser.add_argument(
        "--connect",
        metavar="ADDRESS",
        type=_address("tcp"),
        action="append",
        default=[],
        help="dial this peer at start (repeatable)",
    )
    parser.add_argument(
        "--download-dir",
        metavar="DIR",
        help="where downloads go (default: $KINSWARM_DOWNLOAD_DIR or your Downloads folder)",
    )
    parser.add_argument(
        "--upload-limit",
        metavar="RATE",
        type=_rate,
        help="upload at most this many bytes per second (suffixes K, M, G: 1000s), e.g. 95%% "
        "of your line: a full uplink delays your own requests and stalls your downloads",
    )
    parser.add_argument(
        "--max-peers",
        metavar="N",
        type=_positive_int,
        default=DEFAULT_MAX_PEERS,
        help=f"accept at most N connections (default {DEFAULT_MAX_PEERS}): each costs its "
        "setup on your uplink",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _rate(text: str) -> float:
    """'500K', '2.5M', '1G' or plain bytes per second, decimal units, > 0."""
    scale = {"K": 1e3, "M": 1e6, "G": 1e9}.get(text[-1:].upper(), 1.0)
    number = text[:-1] if scale != 1.0 else text
    try:
        value = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (e.g. 500K, 2M)") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"a rate must be positive: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kinswarm", description="A peer-to-peer node for sharing containers of files."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a node in the foreground")
    _add_common(run)
    add_node_options(run)

    connect = commands.add_parser("connect", help="dial a node, authenticate, print its id")
    _add_common(connect)
    connect.add_argument("address", type=_address("tcp"), metavar="ADDRESS")
    connect.add_argument("--network-key-file", metavar="FILE", type=Path)
    connect.add_argument("--expect", metavar="NODE_ID", help="fail unless the peer has this id")

    node_id = commands.add_parser("id", help="print this node's id (creating the identity)")
    _add_common(node_id)
    cli_store.register(commands, _add_common)
    cli_dht.register(commands, _add_common)
    cli_swarm.register(commands, _add_common, add_node_options)
    cli_node.register(commands, _add_common)
    for entry_point in entry_points(group=PLUGIN_GROUP):
        entry_point.load()(commands, _add_common)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _capability_keys(path: Path | None) -> tuple[bytes, ...]:
    return () if path is None else (read_capability_key(path),)


def command_id(args: argparse.Namespace) -> int:
    identity = load_or_create_identity(resolve_data_dir(args.data_dir))
    print(identity.node_id.hex())
    return 0


def _listen_addresses(args: argparse.Namespace) -> tuple[StreamAddress, ...]:
    tcp = [] if args.no_tcp else (args.listen or [DEFAULT_TCP_LISTEN])
    ws = [] if args.no_ws else (args.ws_listen or [DEFAULT_WS_LISTEN])
    for address in [*tcp, *ws]:
        if not is_loopback(address.host):
            log.warning("listening on %s: reachable from other machines", address)
    return (*tcp, *ws)


def _dht_config(
    args: argparse.Namespace, listen: tuple[StreamAddress, ...], data_dir: Path
) -> DhtConfig:
    if args.dht_listen is not None:
        bind = args.dht_listen.host_port
    else:
        # UDP on the TCP listen address and port number (an ephemeral TCP port: ephemeral).
        first = listen[0] if listen else DEFAULT_TCP_LISTEN
        bind = (first.host, first.port)
    if not is_loopback(bind[0]):
        log.warning("the DHT listens on %s:%d: reachable from other machines", *bind)
    return DhtConfig(
        bind=bind,
        bootstrap=tuple(address.host_port for address in args.bootstrap),
        state_file=data_dir / DHT_STATE_FILE,
    )


def node_config(args: argparse.Namespace, data_dir: Path) -> NodeConfig:
    """The NodeConfig `kinswarm run` (and `kinswarm get` in the foreground) build from flags."""
    keys = _capability_keys(args.network_key_file)
    listen = _listen_addresses(args)
    return NodeConfig(
        listen=listen,
        capability_keys=keys,
        allow_open=not keys,
        dht=None if args.no_dht else _dht_config(args, listen, data_dir),
        max_peers=args.max_peers,
        control=True,
        data_dir=data_dir,
    )


async def serve(args: argparse.Namespace, job: Job | None = None) -> int:
    """Run a full node (store, swarm engine, DHT, control socket) until SIGINT/SIGTERM, or
    until `job` (given the running node and engine) returns False."""
    data_dir = ensure_data_dir(resolve_data_dir(args.data_dir))
    identity = load_or_create_identity(data_dir)
    config = node_config(args, data_dir)
    try:
        store = Store(data_dir)
    except (BlockingIOError, StoreError) as exc:
        raise CommandError(
            f"cannot open the store: another kinswarm node may be already running with data "
            f"directory {data_dir} ({exc})"
        ) from exc
    with store, trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with TrioNetwork() as network, trio.open_nursery() as nursery:
            node = Node(network=network, identity=identity, config=config)
            engine = SwarmEngine(
                node,
                store,
                download_dir=resolve_download_dir(args.download_dir),
                upload_limit=args.upload_limit,
            )
            if node.control is not None:
                register_swarm_commands(node.control, engine, store)
            bound = await nursery.start(node.run)
            print(f"node id {identity.node_id.hex()}", flush=True)
            for address in bound:
                print(f"listening {address}", flush=True)
            if node.dht is not None and node.dht.local_address is not None:
                host, port = node.dht.local_address
                print(f"dht udp://{host}:{port}", flush=True)
            for address in args.connect:
                nursery.start_soon(_dial_and_report, node, address)

            async def until_job_done() -> None:
                assert job is not None
                if not await job(node, engine):
                    nursery.cancel_scope.cancel()

            if job is not None:
                nursery.start_soon(until_job_done)
            async for signum in signals:
                print(f"received {signal.Signals(signum).name}; shutting down", flush=True)
                nursery.cancel_scope.cancel()
                break
    print("stopped", flush=True)
    return 0


async def _run_node(args: argparse.Namespace) -> int:
    return await serve(args)


async def _dial_and_report(node: Node, address: StreamAddress) -> None:
    try:
        with trio.fail_after(CONNECT_TIMEOUT_SECONDS):
            peer = await node.connect(address)
        print(f"connected {peer.node_id.hex()} at {address}", flush=True)
    except (OSError, PeerGone, trio.TooSlowError) as exc:
        print(f"could not connect to {address}: {_reason(exc)}", flush=True)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PeerGone):
        return exc.reason
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    return str(exc) or type(exc).__name__


async def _connect_once(args: argparse.Namespace) -> int:
    identity = load_or_create_identity(resolve_data_dir(args.data_dir))
    keys = _capability_keys(args.network_key_file)
    expected = None
    if args.expect:
        try:
            expected = bytes.fromhex(args.expect)
        except ValueError as exc:
            raise CommandError(f"--expect must be a hex node id: {exc}") from exc
    config = NodeConfig(listen=(), capability_keys=keys, allow_open=not keys)
    async with TrioNetwork() as network, trio.open_nursery() as nursery:
        node = Node(network=network, identity=identity, config=config)
        await nursery.start(node.run)
        try:
            with trio.fail_after(CONNECT_TIMEOUT_SECONDS):
                peer = await node.connect(args.address, expected_node_id=expected)
        except (OSError, PeerGone, trio.TooSlowError) as exc:
            raise CommandError(f"could not connect to {args.address}: {_reason(exc)}") from exc
        print(peer.node_id.hex(), flush=True)
        await peer.aclose("done")
        node.stop()
    return 0


def _user_error(error: BaseException) -> Exception | None:
    """The error to show the user, looking inside Trio's exception groups; None if the
    failure is a bug (which should keep its traceback)."""
    if isinstance(error, CommandError | DataDirError | NodeStartError | UserError):
        return error
    if isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        return _user_error(error.exceptions[0])
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    commands = {
        "id": lambda: command_id(args),
        "run": lambda: trio.run(_run_node, args),
        "connect": lambda: trio.run(_connect_once, args),
    }
    try:
        if args.command not in commands:
            return int(args.handler(args))
        return commands[args.command]()
    except KeyboardInterrupt:
        return 130
    except BaseException as error:
        shown = _user_error(error)
        if shown is None or args.debug:
            raise
        print(f"kinswarm {args.command}: {shown}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
