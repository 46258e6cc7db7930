"""natOutgoing: pods leaving the cluster get the node's address, in the host's own NAT.

Traffic to outside the cluster leaves a pod through the pipeline's default route to the host,
whose stack routes it out (the pipeline bridges the host's traffic to the uplink). So the
source translation is done where Calico's own dataplane does it, by the host's connection
tracking: an nftables table with Felix's rule (rules/nat.go): source in a masquerading pool,
destination in no pool (and, with NATOutgoingExclusions=IPPoolsAndHostIPs, no node address),
MASQUERADE or SNAT to NATOutgoingAddress, with NATPortRange for TCP and UDP. Replies are
translated back by the same conntrack entry. The table is replaced atomically (`nft -f`)
whenever pools, nodes or the configuration change.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Sequence

from felix_p4.model.felix_config import NetworkConfig
from felix_p4.model.state import DataplaneState

log = logging.getLogger(__name__)

TABLE = "felix-p4"


def nat_ruleset(state: DataplaneState) -> str:
    """The nftables script that replaces felix-p4's NAT tables (IPv4 and IPv6)."""
    network = state.config.network
    pools = [p for p in state.pools.values() if not p.load_balancer_only]
    lines: list[str] = []
    for family, version in (("ip", 4), ("ip6", 6)):
        masq = sorted(
            {p.cidr for p in pools if p.masquerade and p.cidr.version == version}, key=str
        )
        every = sorted({p.cidr for p in pools if p.cidr.version == version}, key=str)
        hosts = sorted(
            {
                addr
                for h in state.hosts.values()
                for addr in (h.ipv4, h.ipv6)
                if addr is not None and addr.version == version
            },
            key=str,
        )
        lines += [f"table {family} {TABLE} {{}}", f"delete table {family} {TABLE}"]
        if version == 6 and not network.ipv6_support:
            continue
        lines.append(f"table {family} {TABLE} {{")
        kind = "ipv4_addr" if version == 4 else "ipv6_addr"
        lines += _set("masq-pools", kind, masq, interval=True)
        lines += _set("all-pools", kind, every, interval=True)
        exclude_hosts = network.nat_exclusions == "IPPoolsAndHostIPs"
        if exclude_hosts:
            lines += _set("all-hosts", kind, hosts, interval=False)
        lines += [
            "  chain nat-outgoing {",
            "    type nat hook postrouting priority srcnat; policy accept;",
        ]
        if masq:
            match = f"{family} saddr @masq-pools {family} daddr != @all-pools"
            if exclude_hosts:
                match += f" {family} daddr != @all-hosts"
            lines += [f"    {rule}" for rule in _actions(match, network, version)]
        lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def _set(name: str, kind: str, members: Sequence[object], interval: bool) -> list[str]:
    flags = " flags interval;" if interval else ""
    out = [f"  set {name} {{ type {kind};{flags}"]
    if members:
        out.append(f"    elements = {{ {', '.join(str(m) for m in members)} }}")
    out.append("  }")
    return out


def _actions(match: str, network: NetworkConfig, version: int) -> list[str]:
    """Felix's: with a port range, TCP and UDP get it and everything else none."""
    address = network.nat_outgoing_address if version == 4 else None
    base = f"snat to {address}" if address is not None else "masquerade"
    if network.nat_port_range is None:
        return [f"{match} {base} fully-random"]
    low, high = network.nat_port_range
    ports = f"{address}:{low}-{high}" if address is not None else f":{low}-{high}"
    ranged = f"snat to {ports}" if address is not None else f"masquerade to {ports}"
    return [
        f"{match} meta l4proto {{ tcp, udp }} {ranged} fully-random",
        f"{match} {base} fully-random",
    ]


class HostNat:
    """Keeps the host's felix-p4 NAT tables equal to `nat_ruleset(state)`."""

    def __init__(self, enabled: bool) -> None:
        self.nft = shutil.which("nft") if enabled else None
        self.enabled = enabled
        self._applied: str | None = None
        self._failed: str | None = None
        if enabled and self.nft is None:
            log.error("natOutgoing: no `nft` command on this host; pods are not masqueraded")

    async def apply(self, state: DataplaneState) -> bool:
        """Replace the tables if they changed; False when that failed (retried next time)."""
        if self.nft is None:
            return True
        if self._applied is None and not any(p.masquerade for p in state.pools.values()):
            return True  # nothing to masquerade and nothing of ours on the host yet
        script = nat_ruleset(state)
        if script == self._applied:
            return True
        proc = await asyncio.create_subprocess_exec(
            self.nft,
            "-f",
            "-",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate(script.encode())
        if proc.returncode:
            reason = err.decode(errors="replace").strip()
            if reason != self._failed:
                log.error("natOutgoing: nft refused the ruleset: %s", reason)
            self._failed = reason
            return False
        self._applied, self._failed = script, None
        log.info("natOutgoing: host NAT tables updated")
        return True
