"""The Felix configuration keys felix-p4 honours, parsed from ConfigUpdate's string map."""

from __future__ import annotations

import ipaddress
import logging

import attrs

from felix_p4.model.values import IPNetwork

log = logging.getLogger(__name__)

# Felix's LogSeverityScreen values mapped onto stdlib levels.
_SEVERITY = {
    "TRACE": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
    "PANIC": logging.CRITICAL,
}


NAT_EXCLUSIONS = ("IPPoolsOnly", "IPPoolsAndHostIPs")


@attrs.frozen(slots=True)
class NetworkConfig:
    """What Felix's configuration says about other nodes and leaving the cluster. ConfigUpdate
    carries only the keys someone set, so Felix's defaults (config_params.go) are applied here."""

    vxlan_vni: int = 4096
    vxlan_port: int = 4789
    external_nodes: tuple[IPNetwork, ...] = ()  # ExternalNodesCIDRList: may send us tunnels
    nat_outgoing_address: ipaddress.IPv4Address | None = None
    nat_port_range: tuple[int, int] | None = None
    nat_exclusions: str = "IPPoolsOnly"
    ipv6_support: bool = True


@attrs.frozen(slots=True)
class FelixConfig:
    hostname: str = ""
    reporting_interval_secs: float = 30.0
    log_level: int | None = None
    network: NetworkConfig = attrs.Factory(NetworkConfig)
    raw: dict[str, str] = attrs.field(factory=dict, eq=False, repr=False)

    @classmethod
    def from_map(cls, config: dict[str, str]) -> FelixConfig:
        return cls(
            hostname=config.get("FelixHostname", ""),
            reporting_interval_secs=_seconds(config.get("ReportingIntervalSecs"), 30.0),
            log_level=_SEVERITY.get(config.get("LogSeverityScreen", "").upper()),
            network=_network(config),
            raw=config,
        )


def _network(config: dict[str, str]) -> NetworkConfig:
    """Felix's keys, each parsed on its own: a bad value is logged and its default kept."""
    out = NetworkConfig()
    vni = _int(config, "VXLANVNI", 1, (1 << 24) - 1)
    port = _int(config, "VXLANPort", 1, 65535)
    external: list[IPNetwork] = []
    for text in filter(
        None, (t.strip() for t in config.get("ExternalNodesCIDRList", "").split(","))
    ):
        try:
            external.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            log.error("ignoring ExternalNodesCIDRList entry %r: not a CIDR", text)
    nat_address = None
    if config.get("NATOutgoingAddress"):
        try:
            nat_address = ipaddress.IPv4Address(config["NATOutgoingAddress"])
        except ValueError:
            log.error(
                "ignoring NATOutgoingAddress=%r: not an IPv4 address", config["NATOutgoingAddress"]
            )
    exclusions = config.get("NATOutgoingExclusions", out.nat_exclusions)
    if exclusions not in NAT_EXCLUSIONS:
        log.error("ignoring NATOutgoingExclusions=%r: not one of %s", exclusions, NAT_EXCLUSIONS)
        exclusions = out.nat_exclusions
    return attrs.evolve(
        out,
        vxlan_vni=out.vxlan_vni if vni is None else vni,
        vxlan_port=out.vxlan_port if port is None else port,
        external_nodes=tuple(external),
        nat_outgoing_address=nat_address,
        nat_port_range=_port_range(config.get("NATPortRange", "")),
        nat_exclusions=exclusions,
        ipv6_support=config.get("Ipv6Support", "true").lower() != "false",
    )


def _int(config: dict[str, str], key: str, low: int, high: int) -> int | None:
    text = config.get(key)
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        log.error("ignoring %s=%r: not a number from %d to %d", key, text, low, high)
        return None
    return value


def _port_range(text: str) -> tuple[int, int] | None:
    """Felix's portrange: "min:max" or "min-max" (or one port)."""
    if not text:
        return None
    low, _, high = text.replace("-", ":").partition(":")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        first, last = 0, -1
    if not 1 <= first <= last <= 65535:
        log.error("ignoring NATPortRange=%r: not a port range", text)
        return None
    return first, last


def _seconds(text: str | None, default: float) -> float:
    if not text:
        return default
    try:
        # Felix renders durations either as a bare number of seconds or Go-style ("30s").
        value = float(text[:-1]) if text.endswith("s") else float(text)
    except ValueError:
        log.error("ignoring unparseable ReportingIntervalSecs=%r", text)
        return default
    return value if value >= 0 else default
