"""Workload endpoints as Felix describes them, validated into typed values."""

from __future__ import annotations

import ipaddress

import attrs

from calico_proto import felixbackend_pb2 as fb
from felix_p4.model.policy import TierInfo
from felix_p4.model.values import InvalidObject, IPNetwork, parse_mac, parse_net


@attrs.frozen(slots=True, order=True)
class WorkloadEndpointKey:
    orchestrator_id: str
    workload_id: str
    endpoint_id: str

    @classmethod
    def from_proto(cls, pb: fb.WorkloadEndpointID) -> WorkloadEndpointKey:
        return cls(pb.orchestrator_id, pb.workload_id, pb.endpoint_id)

    def to_proto(self) -> fb.WorkloadEndpointID:
        return fb.WorkloadEndpointID(
            orchestrator_id=self.orchestrator_id,
            workload_id=self.workload_id,
            endpoint_id=self.endpoint_id,
        )

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
    proto: fb.WorkloadEndpoint = attrs.field(factory=fb.WorkloadEndpoint, eq=False, repr=False)


def _nets_of_version(texts: list[str], field: str, version: int) -> tuple[IPNetwork, ...]:
    nets = tuple(parse_net(t, field) for t in texts)
    for net in nets:
        if net.version != version:
            raise InvalidObject(f"{field} holds {net}, which is not IPv{version}")
    return nets


def workload_endpoint_from_proto(
    key: WorkloadEndpointKey, pb: fb.WorkloadEndpoint
) -> WorkloadEndpoint:
    """Validate everything the pipeline relies on; raises InvalidObject naming the field."""
    if not pb.name:
        raise InvalidObject("endpoint has no interface name")
    v4 = _nets_of_version(list(pb.ipv4_nets), "ipv4_nets", 4)
    v6 = _nets_of_version(list(pb.ipv6_nets), "ipv6_nets", 6)
    spoof = tuple(
        parse_net(t, "allow_spoofed_source_prefixes") for t in pb.allow_spoofed_source_prefixes
    )
    return WorkloadEndpoint(
        key=key,
        name=pb.name,
        mac=parse_mac(pb.mac) if pb.mac else None,
        ipv4_nets=v4,  # type: ignore[arg-type]
        ipv6_nets=v6,  # type: ignore[arg-type]
        allow_spoofed_source_prefixes=spoof,
        profile_ids=tuple(pb.profile_ids),
        state=pb.state,
        tiers=tuple(TierInfo.from_proto(t) for t in pb.tiers),
        proto=pb,
    )
