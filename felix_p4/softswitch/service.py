"""The embedded target as a process: P4Runtime plus the felix_p4.Target trace/ports service.

felix_p4.Target is a small gRPC service whose requests and replies are JSON documents
(so no extra bindings are needed): Trace runs one packet through the engine (the behavioural
model, or P4-DPDK's SWX pipeline), PortOf hands out stable port numbers for interface names
(the "target" and "auto" ports modes): the bound port of an interface bound with
`--port NAME=N`, else a free test port.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs
import grpc

from felix_p4.pipeline import DEFAULT_AFFINITY_SECONDS, PIPELINE, PROFILE_AFFINITY
from felix_p4.softswitch.behavioural import FelixPipeline
from felix_p4.softswitch.client import SERVICE, decode, encode
from felix_p4.softswitch.packet import PacketError, build, describe
from felix_p4.softswitch.server import GRPC_SERVER_OPTIONS, EmbeddedTarget, add_p4runtime

if TYPE_CHECKING:
    from felix_p4.softswitch.dpdk import DpdkEngine, DpdkSettings
    from felix_p4.softswitch.interfaces import InterfacePorts

log = logging.getLogger(__name__)

FIRST_AUTO_PORT = 1


class TargetService:
    def __init__(
        self,
        target: EmbeddedTarget,
        dpdk: DpdkEngine | None = None,
        affinity_seconds: int = DEFAULT_AFFINITY_SECONDS,
        bound: Mapping[str, int] | None = None,
    ) -> None:
        self.target = target
        self.affinity_seconds = affinity_seconds
        self.dpdk = dpdk  # set: packets run through P4-DPDK instead of the behavioural model
        # Interfaces bound to ports keep their numbers; other names get free test ports.
        self.ports: dict[str, int] = dict(bound or {})
        self._pipeline: FelixPipeline | None = None
        # A new pipeline means a new table store: flows learned so far are gone with it.
        target.on_pipeline.append(self._reset)

    def _reset(self) -> None:
        self._pipeline = None

    def pipeline(self) -> FelixPipeline:
        pipeline = self.current_pipeline()
        if pipeline is None:
            raise RuntimeError("no pipeline has been set on the target")
        return pipeline

    def current_pipeline(self) -> FelixPipeline | None:
        """The behavioural model of the current pipeline; None while none is set."""
        if self._pipeline is None:
            if self.target.tables is None:
                return None
            self._pipeline = FelixPipeline(
                self.target.tables, profile_seconds={PROFILE_AFFINITY: self.affinity_seconds}
            )
        return self._pipeline

    def port_of(self, request: dict[str, Any], context: grpc.ServicerContext) -> dict[str, Any]:
        name = str(request.get("name", ""))
        if not name:
            raise ValueError("PortOf needs a name")
        if name not in self.ports:
            # Numbers the asker pinned by name elsewhere (its static map, the ports its other
            # names hold) are never handed out.
            reserved = {int(p) for p in request.get("reserved", ())}
            taken = reserved | set(self.ports.values())
            port = FIRST_AUTO_PORT
            held = request.get("port")
            if held is not None and int(held) not in taken and int(held) >= FIRST_AUTO_PORT:
                # The asker already uses this number for the name (this target restarted).
                port = int(held)
            while port in taken:
                port += 1
            if self.dpdk is not None and port >= self.dpdk.settings.n_ports:
                n_ports = self.dpdk.settings.n_ports
                raise ValueError(f"no port left for {name!r}: the DPDK target has {n_ports}")
            self.ports[name] = port
        return {"name": name, "port": self.ports[name]}

    def trace(self, request: dict[str, Any], context: grpc.ServicerContext) -> dict[str, Any]:
        in_port = request["in_port"]
        if isinstance(in_port, str) and not in_port.isdigit():
            if in_port not in self.ports:
                raise ValueError(f"no port is known for interface {in_port!r}")
            in_port = self.ports[in_port]
        raw = bytes.fromhex(request["hex"]) if "hex" in request else build(request["packet"])
        commit = bool(request.get("commit", False))
        if self.dpdk is not None:
            out = self.dpdk.trace(int(in_port), raw, commit)
        else:
            out = self.pipeline().process(int(in_port), raw, commit=commit).to_json(describe)
        out["in_packet"] = describe(raw)
        return out


def _unary(handler: Any) -> grpc.RpcMethodHandler:
    async def call(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            return encode(handler(decode(raw), context))
        except (ValueError, KeyError, PacketError, json.JSONDecodeError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{type(exc).__name__}: {exc}")
        except RuntimeError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        raise AssertionError("unreachable")

    return grpc.unary_unary_rpc_method_handler(call)


def add_target_service(server: grpc.aio.Server, service: TargetService) -> None:
    handlers = {"Trace": _unary(service.trace), "PortOf": _unary(service.port_of)}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])


@attrs.frozen(slots=True)
class ServerTls:
    cert: Path
    key: Path
    client_ca: Path | None = None  # set: clients must present a certificate it signed


async def start_target(
    listen: str,
    device_id: int = 1,
    tls: ServerTls | None = None,
    table_limits: dict[str, int] | None = None,
    engine: Literal["model", "dpdk"] = "model",
    dpdk: DpdkSettings | None = None,
    affinity_seconds: int = DEFAULT_AFFINITY_SECONDS,
    interfaces: InterfacePorts | None = None,
) -> tuple[grpc.aio.Server, int, EmbeddedTarget]:
    """Start P4Runtime + felix_p4.Target on `listen`; returns the server and the bound port.
    `table_limits` makes tables hold fewer entries than the P4Info says (as some devices do).
    engine "dpdk" runs packets on P4-DPDK's SWX pipeline (`dpdk` settings; the table limits
    then size SWX's tables); SwxUnavailable says why it cannot run here. `interfaces`: ports
    bound to Linux interfaces, served by this event loop from here on (the caller closes
    them)."""
    dpdk_engine: DpdkEngine | None = None
    if engine == "dpdk":
        if interfaces is not None:
            dpdk = attrs.evolve(dpdk or _dpdk_settings(), port_fds=interfaces.fds)
        target, dpdk_engine = _dpdk_target(device_id, table_limits, dpdk, affinity_seconds)
    else:
        target = EmbeddedTarget(
            device_id, initial_defaults_for=initial_defaults, table_limits=table_limits
        )
    server = grpc.aio.server(options=GRPC_SERVER_OPTIONS)
    add_p4runtime(server, target)
    service = TargetService(
        target, dpdk_engine, affinity_seconds, interfaces.names if interfaces else None
    )
    add_target_service(server, service)
    if tls is None:
        port = server.add_insecure_port(listen)
    else:
        credentials = grpc.ssl_server_credentials(
            [(tls.key.read_bytes(), tls.cert.read_bytes())],
            root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
            require_client_auth=tls.client_ca is not None,
        )
        port = server.add_secure_port(listen, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    where = listen if listen.startswith("unix:") else f"{listen} (port {port})"
    log.info("embedded target listening on %s", where)
    if interfaces is not None:
        if dpdk_engine is not None:
            interfaces.serve_dpdk(dpdk_engine)
        else:
            interfaces.serve_model(service.current_pipeline)
    return server, port, target


def _dpdk_settings() -> DpdkSettings:
    from felix_p4.softswitch.dpdk import DpdkSettings

    return DpdkSettings()


def _dpdk_target(
    device_id: int,
    table_limits: dict[str, int] | None,
    settings: DpdkSettings | None,
    affinity_seconds: int,
) -> tuple[EmbeddedTarget, DpdkEngine]:
    from felix_p4.softswitch.dpdk import DpdkEngine, DpdkSettings
    from felix_p4.swx import SwxUnavailable, availability

    reason = availability()
    if reason is not None:
        raise SwxUnavailable(reason)
    settings = attrs.evolve(settings or DpdkSettings(), affinity_seconds=affinity_seconds)
    if table_limits:
        settings = attrs.evolve(settings, table_limits={**settings.table_limits, **table_limits})
    engine = DpdkEngine(settings)
    target = EmbeddedTarget(device_id, initial_defaults_for=engine.initial_defaults, engine=engine)
    return target, engine


def initial_defaults(p4info: Any) -> dict[str, tuple[str, dict[str, int]]]:
    """Default actions the program declares that the P4Info cannot carry (the P4Info names
    only a table's const default)."""
    names = {t.preamble.name for t in p4info.tables}
    return {
        # A default with parameters starts with all of them zero, as the program declares
        # (the node table's).
        t.name: (t.default.name, {p.name: 0 for p in t.default.params})
        for t in PIPELINE.tables
        if not t.const_default and not t.profile and t.name in names
    }
