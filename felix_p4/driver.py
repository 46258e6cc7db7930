"""The driver's composition root: settings, device session, managers, Felix session, apply loop.

`Driver` wires the pieces together and runs the loop that applies Felix's changes to the
device and reports the outcome; each piece does one job (felix/ the stream, p4/ the device,
dataplane/ the managers, k8s/ the services source).
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import signal

from felix_p4 import metrics
from felix_p4.dataplane import Dataplane
from felix_p4.dataplane.forwarding import NodeSettings
from felix_p4.felix.session import FelixReader, FelixSession, serve_fds, serve_socket
from felix_p4.felix.status import FrameSink
from felix_p4.hostnat import HostNat
from felix_p4.k8s.convert import endpoint_slice_from_k8s, service_from_k8s
from felix_p4.k8s.source import FileSource, KubeEvent, KubeSource
from felix_p4.model.services import ServiceKey
from felix_p4.model.state import DataplaneState
from felix_p4.model.values import InvalidObject, parse_mac
from felix_p4.neighbours import NextHops, interface_mac
from felix_p4.p4.client import P4RuntimeClientError
from felix_p4.p4.session import DeviceSession
from felix_p4.pipeline import Owner
from felix_p4.ports import PortResolver
from felix_p4.settings import ConfigError, ServicesSettings, Settings, host_port, uplink_port

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
# Everything a fresh read of the device must be diffed against again.
ALL_MANAGERS = frozenset(
    {Owner.FORWARDING, Owner.POLICY, Owner.IPSETS, Owner.SERVICES, Owner.ROUTES}
)


class Driver:
    """One driver process: a device session shared by the Felix session it serves."""

    def __init__(self, settings: Settings, ports: PortResolver) -> None:
        self.settings = settings
        self.ports = ports
        # Settings first: a misconfigured driver must fail before it touches Felix's pipes.
        try:
            self.gateway_mac = parse_mac(settings.forwarding.gateway_mac)
        except InvalidObject as exc:
            raise ConfigError(f"forwarding.gateway_mac: {exc}") from None
        host = host_port(settings.ports)
        if isinstance(host, int) and host in ports.reserved and ports.static.get("host") != host:
            owner = next(n for n, p in ports.static.items() if p == host)
            raise ConfigError(f"ports.host is port {host}, which ports.map gives to {owner}")
        self.hairpin = {
            4: _address(settings.services.hairpin_v4, "services.hairpin_v4"),
            6: _address(settings.services.hairpin_v6, "services.hairpin_v6"),
        }
        network = settings.network
        try:
            self.node_mac = parse_mac(network.node_mac) if network.node_mac else None
            static_hops = {a: parse_mac(m) for a, m in network.next_hops.items()}
            for address in static_hops:
                ipaddress.ip_address(address)
        except (InvalidObject, ValueError) as exc:
            raise ConfigError(f"network: {exc}") from None
        self.next_hops = NextHops(
            static_hops, network.netlink, self._next_hops_changed, network.poll_seconds
        )
        self._found_mac: dict[str, int] = {}
        self.host_nat = HostNat(network.nat_outgoing)
        self.device = DeviceSession(settings.p4runtime, settings.pipeline, self._wake_up)
        self.state = DataplaneState()
        self.felix: FelixSession | None = None
        self.dataplane: Dataplane | None = None
        self.service_source = service_source(settings.services)
        self._wake = asyncio.Event()
        self._config_changed = asyncio.Event()
        self._done = asyncio.Event()
        self._services_listed = asyncio.Event()
        self._in_sync_reported = False

    def _wake_up(self) -> None:
        self._wake.set()

    def _next_hops_changed(self) -> None:
        self.state.changes.touched.add(Owner.ROUTES)
        if self.state.in_sync:
            self._wake.set()

    async def _node_mac(self, state: DataplaneState) -> int:
        """network.node_mac, else the MAC of the host's interface holding this node's IPv4
        (or IPv6) address, from netlink; 0 while neither is known."""
        if self.node_mac is not None:
            return self.node_mac
        host = state.hosts.get(state.config.hostname)
        address = (host.ipv4 or host.ipv6) if host else None
        if address is None or not self.settings.network.netlink:
            return 0
        text = str(address)
        if text not in self._found_mac:
            mac = await interface_mac(text)
            if mac is None:
                return 0
            self._found_mac[text] = mac
        return self._found_mac[text]

    @property
    def in_sync(self) -> bool:
        """This Felix session is live and DataplaneInSync has been sent in it (readiness)."""
        return self._in_sync_reported and not self._done.is_set()

    # --- device side ------------------------------------------------------------------

    async def _connect(self) -> Dataplane:
        sync = await self.device.connect()
        # A restarted embedded target forgot the ports it handed out: give it them again.
        await self.ports.reannounce()
        dataplane = Dataplane(
            sync,
            self.ports,
            NodeSettings(
                self.gateway_mac,
                host_port(self.settings.ports),
                self.settings.limits.endpoint_share,
                uplink_port(self.settings.ports),
            ),
            hairpin=self.hairpin,
            services_enabled=self.service_source is not None,
            affinity_seconds=self.settings.services.affinity_seconds,
            next_hops=self.next_hops,
            node_mac=self._node_mac,
        )
        dataplane.recover()
        self.dataplane = dataplane
        return dataplane

    async def _reconnect(self) -> Dataplane:
        """A fresh session with the device; everything is diffed against it again."""
        await self.device.close()
        dataplane = await self._connect()
        changes = self.state.changes
        changes.endpoints.update(self.state.endpoints)
        changes.node = True
        changes.touched.update(ALL_MANAGERS)
        self._wake.set()
        return dataplane

    async def apply(self, dataplane: Dataplane) -> None:
        """Apply what changed and tell Felix the outcome for every touched endpoint."""
        felix = self.felix
        assert felix is not None
        nat_changed = Owner.ROUTES in self.state.changes.touched
        outcome = await dataplane.apply(self.state, set(felix.invalid))
        if nat_changed and self.state.in_sync and not await self.host_nat.apply(self.state):
            # Retried at the next apply of the routes manager's concerns.
            self.state.changes.touched.add(Owner.ROUTES)
            outcome.retry = True
        metrics.APPLIES.inc()
        metrics.WRITES.labels("ok").inc(outcome.written)
        metrics.WRITES.labels("error").inc(outcome.failed)
        for key, status in outcome.statuses.items():
            felix.endpoint_status(key, status)
        for key in outcome.removed:
            felix.endpoint_removed(key)
        if outcome.retry:
            asyncio.get_running_loop().call_later(RETRY_SECONDS, self._retry)

    def _retry(self) -> None:
        # Endpoints that are not up are revisited by the forwarding and policy managers.
        self.state.changes.touched.update({Owner.FORWARDING, Owner.POLICY})
        self._wake.set()

    async def _apply_loop(self) -> None:
        dataplane = await self._connect()
        coalesce = self.settings.felix.coalesce_ms / 1000
        while True:
            await self._wake.wait()
            # Let a burst of updates land before compiling them together (at least the
            # frames already read); updates arriving during an apply wait for the next one.
            await asyncio.sleep(coalesce)
            self._wake.clear()
            if not self.device.usable:
                # The stream ended (target restarted, connection dropped), another controller
                # took over, or the TLS files rotated: reconnect, re-read, converge.
                log.error("P4Runtime session must be re-established; reconnecting")
                dataplane = await self._reconnect()
            if not self.state.in_sync:
                continue
            if not self._in_sync_reported and self.service_source is not None:
                await self._first_service_list()
            try:
                await self.apply(dataplane)
            except P4RuntimeClientError as exc:
                # The session is lost (a silent target included): reconnect; Felix's updates
                # keep accumulating in the model meanwhile.
                self.device.failed(exc)
                dataplane = await self._reconnect()
                continue
            except Exception:
                # A bug, not bad input (that is rejected earlier): keep what is programmed,
                # keep serving Felix, and try again from a fresh read of the device.
                log.exception("apply failed unexpectedly; re-reading the device and retrying")
                metrics.BAD_INPUT.labels("apply_failure").inc()
                dataplane = await self._reconnect()
                continue
            if not self._in_sync_reported:
                self._in_sync_reported = True
                log.info("first apply after InSync done; telling Felix DataplaneInSync")
                assert self.felix is not None
                self.felix.status.dataplane_in_sync()
                metrics.IN_SYNC.set(1)
                # The snapshot's state lives as long as the driver: keep the cyclic garbage
                # collector from walking it again and again (pauses in later applies).
                gc.freeze()

    # --- services ---------------------------------------------------------------------

    async def _first_service_list(self) -> None:
        """Let the first apply include services, unless their source takes too long."""
        timeout = self.settings.services.sync_timeout_seconds
        try:
            await asyncio.wait_for(self._services_listed.wait(), timeout)
        except TimeoutError:
            log.error(
                "service source has not listed everything after %.0fs; programming without "
                "services until it has",
                timeout,
            )

    def _on_kube_event(self, event: KubeEvent) -> None:
        state = self.state
        if event.type == "SYNCED":
            if not state.services_synced:
                log.info("service source listed everything; services will be programmed")
            state.services_synced = True
            state.changes.services.update(state.kube_services)
            self._services_listed.set()
        else:
            try:
                apply_kube_event(state, event)
            except InvalidObject as exc:
                metrics.BAD_INPUT.labels(f"kubernetes_{event.kind}").inc()
                meta = event.obj.get("metadata") or {}
                log.error(
                    "rejected %s %s/%s: %s",
                    event.kind,
                    meta.get("namespace", ""),
                    meta.get("name", ""),
                    exc,
                )
                return
        state.changes.touched.add(Owner.SERVICES)
        if state.in_sync:
            self._wake.set()

    async def _watch_services(self) -> None:
        if self.service_source is None:
            await asyncio.Event().wait()  # nothing to watch; park until the driver stops
            return
        await self.service_source.run(self._on_kube_event)

    # --- Felix side -------------------------------------------------------------------

    async def _liveness(self) -> None:
        """ProcessStatusUpdate at start and every ReportingIntervalSecs (0: start only)."""
        assert self.felix is not None
        self.felix.status.process_status()
        while True:
            interval = self.state.config.reporting_interval_secs
            self._config_changed.clear()
            try:
                await asyncio.wait_for(self._config_changed.wait(), interval or None)
            except TimeoutError:
                self.felix.status.process_status()

    def _on_config(self) -> None:
        if not self.settings.log_level and self.state.config.log_level is not None:
            logging.getLogger().setLevel(self.state.config.log_level)
        self._config_changed.set()

    async def run(self, reader: FelixReader, out: FrameSink) -> int:
        """Serve one Felix session: `reader` feeds Felix's stream into it, `out` carries our
        reports. Returns the exit status."""
        # The driver allocates hundreds of thousands of long-lived objects while it builds a
        # snapshot; the default thresholds make the cyclic collector rescan them constantly.
        gc.set_threshold(100_000, 50, 100)
        metrics.SESSIONS.inc()
        metrics.IN_SYNC.set(0)
        self.felix = FelixSession(
            self.state,
            out,
            max_frame=self.settings.felix.max_frame_bytes,
            record=self.settings.record,
            on_change=self._wake.set,
            on_config=self._on_config,
        )
        tasks = [
            asyncio.create_task(reader(self.felix), name="felix-reader"),
            asyncio.create_task(self._apply_loop(), name="apply"),
            asyncio.create_task(self._liveness(), name="liveness"),
            asyncio.create_task(self._watch_services(), name="services"),
            asyncio.create_task(self.next_hops.run(), name="next-hops"),
            asyncio.create_task(self.device.watch_tls(self._wake.set), name="tls"),
            asyncio.create_task(self._done.wait(), name="signal"),
        ]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        self._done.set()
        metrics.IN_SYNC.set(0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.device.close()
        code = 0
        for task in done:
            exc = task.exception()
            if isinstance(exc, SystemExit):
                code = int(exc.code or 0)
            elif exc is not None:
                log.error("driver task %s failed: %r", task.get_name(), exc)
                code = 1
        # Entries stay on the device: traffic keeps flowing while Felix restarts us.
        log.info("driver exiting with status %d; the pipeline stays programmed", code)
        return code

    def stop(self) -> None:
        self._done.set()


def apply_kube_event(state: DataplaneState, event: KubeEvent) -> None:
    """A Service or EndpointSlice event from the Kubernetes source, into the model."""
    if event.kind == "Service":
        service = service_from_k8s(event.obj)
        if event.type == "DELETED":
            state.remove_kube_service(service.key)
        else:
            state.upsert_kube_service(service)
        return
    meta = event.obj.get("metadata") or {}
    endpoint_slice = None if event.type == "DELETED" else endpoint_slice_from_k8s(event.obj)
    if endpoint_slice is None:
        # Deleted, or no longer usable (FQDN, no service): its backends are gone.
        state.remove_slice(
            ServiceKey(str(meta.get("namespace") or "default"), str(meta.get("name")))
        )
        return
    state.upsert_slice(endpoint_slice)


def service_source(settings: ServicesSettings) -> KubeSource | None:
    """The configured source of Services and EndpointSlices, or None when disabled."""
    source = settings.source
    if source == "auto":
        source = "kubernetes" if os.environ.get("KUBERNETES_SERVICE_HOST") else "none"
    if source == "none":
        return None
    if source == "file":
        return FileSource(list(settings.files), settings.poll_seconds)
    from felix_p4.k8s.watch import KubeWatcher

    return KubeWatcher(kubeconfig=settings.kubeconfig or None)


def _address(text: str, setting: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{setting}: {text!r} is not an IP address") from None


class Process:
    """The driver process: serves Felix sessions (one over fds 3/4 when Felix exec'd it, or
    each connection on the shim's socket) and the metrics and health endpoint."""

    def __init__(self, settings: Settings, ports: PortResolver) -> None:
        self.settings = settings
        self.ports = ports
        self.current: Driver | None = None
        self.stopped = asyncio.Event()

    def new_session(self) -> Driver:
        self.current = Driver(self.settings, self.ports)
        return self.current

    def ready(self) -> bool:
        return self.current is not None and self.current.in_sync

    def stop(self) -> None:
        self.stopped.set()
        if self.current is not None:
            self.current.stop()

    async def run(self, felix_socket: str = "") -> int:
        """Settings errors raise before Felix's stream is touched (ConfigError and kin)."""
        first = self.new_session()  # built now so bad settings fail before anything is served
        runner = None
        if self.settings.metrics.address:
            runner = await metrics.serve(self.settings.metrics.address, self.ready)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):  # a clean exit leaves the pipeline programmed
            loop.add_signal_handler(sig, self.stop)
        try:
            if felix_socket:
                self.current = None
                return await serve_socket(felix_socket, self.new_session, self.stopped)
            return await serve_fds(first.run)
        finally:
            if runner is not None:
                await runner.cleanup()
