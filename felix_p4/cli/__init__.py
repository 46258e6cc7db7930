"""The felix-p4 command: the driver (no arguments, as Felix runs it), target, trace, sim, tables."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _setup_logging(level: str) -> None:
    # Felix forwards our stderr into its own log: one plain line per event.
    logging.basicConfig(stream=sys.stderr, level=level.upper() or "INFO", format=LOG_FORMAT)


def _driver(args: argparse.Namespace) -> int:
    from felix_p4.cli.inspect_config import check
    from felix_p4.driver import Process
    from felix_p4.felix.session import FelixPipesMissing, check_felix_fds
    from felix_p4.p4.artefacts import ArtefactError
    from felix_p4.p4.schema import SchemaError
    from felix_p4.ports import make_resolver
    from felix_p4.settings import ConfigError, load_settings
    from felix_p4.softswitch.client import TargetPorts

    overrides: dict[str, Any] = {}
    if getattr(args, "p4runtime_address", None):
        overrides.setdefault("p4runtime", {})["address"] = args.p4runtime_address
    if getattr(args, "ports_mode", None):
        overrides.setdefault("ports", {})["mode"] = args.ports_mode
    if getattr(args, "log_level", None):
        overrides["log_level"] = args.log_level
    try:
        settings = load_settings(overrides, path=getattr(args, "config", None))
    except ConfigError as exc:
        _setup_logging("ERROR")
        logging.getLogger("felix_p4").error("configuration: %s", exc)
        return 2
    _setup_logging(settings.log_level or "INFO")
    socket_path = getattr(args, "felix_socket", "") or ""
    try:
        # Settings first: a misconfigured driver fails before it touches Felix's pipes.
        check(settings)
        if not socket_path:
            check_felix_fds()
    except (ConfigError, FelixPipesMissing, ArtefactError, SchemaError) as exc:
        logging.getLogger("felix_p4").error("configuration: %s", exc)
        return 2

    async def run() -> int:
        try:
            target = TargetPorts(settings.p4runtime.address)
            resolver = make_resolver(settings.ports, target.resolve, target.announce)
            return await Process(settings, resolver).run(socket_path)
        except (ConfigError, FelixPipesMissing, ArtefactError, SchemaError) as exc:
            logging.getLogger("felix_p4").error("configuration: %s", exc)
            return 2

    return asyncio.run(run())


def _settings_or_exit(args: argparse.Namespace, path: str | None) -> Any:
    from felix_p4.settings import ConfigError, load_settings

    try:
        return load_settings(path=path)
    except ConfigError as exc:
        print(f"felix-p4: configuration: {exc}", file=sys.stderr)
        return None


def _check_config(args: argparse.Namespace) -> int:
    from felix_p4.cli.inspect_config import check
    from felix_p4.p4.artefacts import ArtefactError
    from felix_p4.p4.schema import SchemaError
    from felix_p4.settings import ConfigError

    settings = _settings_or_exit(args, args.file)
    if settings is None:
        return 2
    try:
        summary = check(settings)
    except (ConfigError, ArtefactError, SchemaError) as exc:
        print(f"felix-p4 check-config: {exc}", file=sys.stderr)
        return 2
    for line in summary:
        print(line)
    print("configuration OK")
    return 0


def _version(args: argparse.Namespace) -> int:
    from felix_p4.cli.inspect_config import version_lines
    from felix_p4.p4.artefacts import ArtefactError

    settings = _settings_or_exit(args, None)
    if settings is None:
        return 2
    try:
        lines = version_lines(settings)
    except ArtefactError as exc:
        print(f"felix-p4 version: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def _target(args: argparse.Namespace) -> int:
    from felix_p4.softswitch.interfaces import (
        DEFAULT_MAX_FRAME,
        InterfaceError,
        InterfacePorts,
        PortBinding,
        check_bindings,
    )
    from felix_p4.softswitch.service import ServerTls, start_target

    _setup_logging(args.log_level)
    try:
        bindings = check_bindings(PortBinding.parse(item) for item in args.port or [])
    except InterfaceError as exc:
        print(f"felix-p4 target: --port: {exc}", file=sys.stderr)
        return 2
    dpdk = None
    if args.engine == "dpdk":
        from felix_p4.softswitch.dpdk import DpdkSettings
        from felix_p4.swx import availability

        reason = availability()
        if reason is not None:
            print(f"felix-p4 target: --engine dpdk: {reason}", file=sys.stderr)
            return 2
        dpdk = DpdkSettings(n_ports=args.dpdk_ports, memory_mb=args.dpdk_memory_mb)
        for binding in bindings:
            if binding.port >= dpdk.n_ports:
                print(
                    f"felix-p4 target: --port {binding.interface}={binding.port}: the DPDK "
                    f"target has ports 0..{dpdk.n_ports - 1} (--dpdk-ports)",
                    file=sys.stderr,
                )
                return 2
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            print("felix-p4 target: --tls-cert and --tls-key go together", file=sys.stderr)
            return 2
        tls = ServerTls(
            Path(args.tls_cert), Path(args.tls_key), Path(args.tls_ca) if args.tls_ca else None
        )

    limits: dict[str, int] = {}
    for item in args.table_limit or []:
        table, _, size = item.partition("=")
        if not size.isdigit():
            print(f"felix-p4 target: --table-limit {item!r} is not TABLE=N", file=sys.stderr)
            return 2
        limits[table] = int(size)

    async def run() -> int:
        max_frame = dpdk.mtu if dpdk is not None else DEFAULT_MAX_FRAME
        interfaces = InterfacePorts(bindings, max_frame) if bindings else None
        try:
            server, _, _ = await start_target(
                args.listen,
                args.device_id,
                tls,
                limits,
                engine=args.engine,
                dpdk=dpdk,
                affinity_seconds=args.affinity_seconds,
                interfaces=interfaces,
            )
            await server.wait_for_termination()
        finally:
            if interfaces is not None:
                interfaces.close()
        return 0

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return 0
    except (ValueError, InterfaceError) as exc:  # what the engine or the kernel refuses
        print(f"felix-p4 target: {exc}", file=sys.stderr)
        return 2


def _parse_spec(text: str) -> dict[str, Any]:
    spec = yaml.safe_load(text)
    if not isinstance(spec, dict):
        raise SystemExit(f"--packet must be a JSON or YAML mapping, got {text!r}")
    return spec


def _trace(args: argparse.Namespace) -> int:
    import grpc

    from felix_p4.cli.sim import format_result
    from felix_p4.softswitch.client import TargetClient

    request: dict[str, Any] = {"in_port": args.in_port, "commit": args.commit}
    if args.hex:
        request["hex"] = args.hex
    else:
        request["packet"] = _parse_spec(args.packet)

    async def run() -> dict[str, Any]:
        async with grpc.aio.insecure_channel(args.target) as channel:
            return await TargetClient(channel).trace(request)

    try:
        result = asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        print(f"trace failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"packets": [result]}, indent=2))
    else:
        print(format_result("packet", result))
    return 0


def _tables(args: argparse.Namespace) -> int:
    from felix_p4.cli.tables import dump_tables

    return asyncio.run(dump_tables(args.target, args.device_id, args.json))


def _sim(args: argparse.Namespace) -> int:
    from felix_p4.cli.sim import run_scenario_file

    _setup_logging(args.log_level)
    return asyncio.run(run_scenario_file(args.scenario, args.json))


def _replay(args: argparse.Namespace) -> int:
    from felix_p4.cli.replay import main as replay_main

    _setup_logging(args.log_level)
    return replay_main(args.file, args.target, args.plaintext)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="felix-p4", description=__doc__)
    sub = parser.add_subparsers(dest="command")

    driver = sub.add_parser("driver", help="run the dataplane driver (what Felix runs)")
    driver.add_argument("--config", help="YAML settings file (default $FELIX_P4_CONFIG)")
    driver.add_argument("--p4runtime-address")
    driver.add_argument("--ports-mode", choices=["static", "netlink", "target", "auto"])
    driver.add_argument("--log-level")
    driver.add_argument(
        "--felix-socket",
        metavar="PATH",
        help="serve Felix sessions arriving through felix-p4-shim on this Unix socket",
    )
    driver.set_defaults(func=_driver)

    target = sub.add_parser("target", help="run the embedded P4Runtime target")
    target.add_argument("--listen", default="127.0.0.1:9559")
    target.add_argument("--device-id", type=int, default=1)
    target.add_argument("--log-level", default="INFO")
    target.add_argument("--tls-cert", help="serve TLS with this certificate (PEM)")
    target.add_argument("--tls-key", help="private key of --tls-cert (PEM)")
    target.add_argument("--tls-ca", help="require client certificates signed by this CA")
    target.add_argument(
        "--table-limit",
        action="append",
        metavar="TABLE=N",
        help="hold at most N entries in TABLE, fewer than the P4Info says (testing)",
    )
    target.add_argument(
        "--engine",
        choices=["model", "dpdk"],
        default="model",
        help="run packets on the behavioural model or on P4-DPDK's SWX pipeline",
    )
    target.add_argument(
        "--dpdk-ports", type=int, default=256, metavar="N", help="dpdk: P4 ports 0..N-1"
    )
    target.add_argument(
        "--dpdk-memory-mb", type=int, default=1024, metavar="MB", help="dpdk: DPDK's memory"
    )
    target.add_argument(
        "--port",
        action="append",
        metavar="NAME=N",
        help="P4 port N is the Linux interface NAME: frames arriving there run through the "
        "pipeline, frames it sends to port N leave there (repeatable; needs CAP_NET_RAW)",
    )
    target.add_argument(
        "--affinity-seconds",
        type=int,
        default=10800,
        metavar="SECONDS",
        help="how long a ClientIP service affinity lasts, for every service (the expiry "
        "profile's one timeout; match the driver's services.affinity_seconds)",
    )
    target.set_defaults(func=_target)

    trace = sub.add_parser("trace", help="run one packet through the embedded target")
    trace.add_argument("--target", default="127.0.0.1:9559")
    trace.add_argument("--in-port", required=True, help="port number or interface name")
    group = trace.add_mutually_exclusive_group(required=True)
    group.add_argument("--packet", help="packet keys as a JSON or YAML flow mapping")
    group.add_argument("--hex", help="raw frame bytes in hex")
    trace.add_argument("--json", action="store_true")
    trace.add_argument("--commit", action="store_true", help="let the packet change state")
    trace.set_defaults(func=_trace)

    sim = sub.add_parser("sim", help="run a scenario: target + driver + Felix messages + packets")
    sim.add_argument("scenario")
    sim.add_argument("--json", action="store_true")
    sim.add_argument("--log-level", default="WARNING")
    sim.set_defaults(func=_sim)

    replay = sub.add_parser("replay", help="feed a recorded Felix stream into a fresh driver")
    replay.add_argument("file")
    replay.add_argument("--target", default="127.0.0.1:9559")
    replay.add_argument("--plaintext", action="store_true", help="talk to the target without TLS")
    replay.add_argument("--log-level", default="WARNING")
    replay.set_defaults(func=_replay)

    check = sub.add_parser(
        "check-config", help="load and check the settings a driver would use, without starting"
    )
    check.add_argument("file", nargs="?", help="YAML settings file (default $FELIX_P4_CONFIG)")
    check.set_defaults(func=_check_config)

    version = sub.add_parser("version", help="package version and the pipeline it programs")
    version.set_defaults(func=_version)

    tables = sub.add_parser("tables", help="list installed entries by name")
    tables.add_argument("--target", default="127.0.0.1:9559")
    tables.add_argument("--device-id", type=int, default=1)
    tables.add_argument("--json", action="store_true")
    tables.set_defaults(func=_tables)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        # Felix execs us with no arguments.
        return _driver(args)
    result: int = args.func(args)
    return result
