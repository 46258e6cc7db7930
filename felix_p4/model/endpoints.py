"""Workload endpoints: a local pod's interface, addresses, MAC, and the policy it is subject to."""

from __future__ import annotations

import ipaddress

import attrs

from felix_p4.model.policy import TierInfo
from felix_p4.model.values import IPNetwork


@attrs.frozen(slots=True, order=True)
class WorkloadEndpointKey:
    orchestrator_id: str
    workload_id: str
    endpoint_id: str

    def __str__(self) -> str:
        return f"{self.orchestrator_id}/{self.workload_id}/{self.endpoint_id}"


@attrs.frozen(slots=True)
class WorkloadEndpoint:
    key: WorkloadEndpointKey
    name: str  # host-side interface name, e.g. cali1234abcd
    mac: int | None
    ipv4_nets: tuple[ipaddress.IPv4Network, ...]
    ipv6_nets: tuple[ipaddress.IPv6Network, ...]
    allow_spoofed_source_prefixes: tuple[IPNetwork, ...]
    profile_ids: tuple[str, ...]
    state: str
    tiers: tuple[TierInfo, ...] = ()
