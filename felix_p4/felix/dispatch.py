"""Which manager each Felix payload drives, how it enters the model, or why it is ignored.

This table is the only place a payload is routed; docs/felix-payloads.md is checked against it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from felix_p4.felix import convert
from felix_p4.model.state import DataplaneState
from felix_p4.pipeline import Owner

Apply = Callable[[DataplaneState, Any], None]


@attrs.frozen(slots=True)
class Payload:
    apply: Apply | None  # None: the payload only changes the session (in_sync) or is ignored
    managers: tuple[Owner, ...]  # the managers whose work it changes
    does: str  # what it drives, or why it is ignored


def _in_sync(state: DataplaneState, pb: Any) -> None:
    state.in_sync = True
    state.changes.node = True


_ENDPOINT = (Owner.FORWARDING, Owner.POLICY)
_POLICY = (Owner.POLICY,)
_NODE = (Owner.SERVICES, Owner.ROUTES)
_ROUTES = (Owner.ROUTES,)
_HOST_WORDS = (
    "node addresses: this node's are where NodePorts listen and tunnels start; the others may "
    "send IP-in-IP"
)

PAYLOADS: dict[str, Payload] = {
    "in_sync": Payload(
        _in_sync,
        (Owner.FORWARDING, Owner.SERVICES, Owner.ROUTES),
        "ends the snapshot: the first apply runs, then DataplaneInSync",
    ),
    "config_update": Payload(
        convert.apply_config,
        (Owner.SERVICES, Owner.ROUTES),
        "hostname (which endpoints are local to services), ReportingIntervalSecs, "
        "LogSeverityScreen; VXLANVNI, VXLANPort, ExternalNodesCIDRList (tunnels)",
    ),
    "workload_endpoint_update": Payload(
        convert.apply_endpoint_update,
        _ENDPOINT,
        "port classification, source check and routes of a local pod; its policy programs. "
        "Floating IPs (`ipv4_nat`, `ipv6_nat`) and QoS (`qos_controls`, `qos_policies`) are "
        "not programmed: logged once per change, counted in "
        "`felix_p4_unsupported_fields_total`",
    ),
    "workload_endpoint_remove": Payload(
        convert.apply_endpoint_remove,
        _ENDPOINT,
        "removes those entries; WorkloadEndpointStatusRemove",
    ),
    "host_metadata_update": Payload(convert.apply_host_metadata, _NODE, _HOST_WORDS),
    "host_metadata_remove": Payload(convert.apply_host_remove, _NODE, _HOST_WORDS),
    "host_metadata_v6_update": Payload(convert.apply_host_metadata_v6, _NODE, _HOST_WORDS),
    "host_metadata_v6_remove": Payload(convert.apply_host_remove, _NODE, _HOST_WORDS),
    "host_metadata_v4v6_update": Payload(convert.apply_host_metadata_v4v6, _NODE, _HOST_WORDS),
    "host_metadata_v4v6_remove": Payload(convert.apply_host_remove, _NODE, _HOST_WORDS),
    "route_update": Payload(
        convert.apply_route_update,
        _ROUTES,
        "other nodes' blocks over VXLAN, IP-in-IP or unencapsulated; blackholes for this "
        "node's unused block addresses; this node's tunnel addresses to the host",
    ),
    "route_remove": Payload(convert.apply_route_remove, _ROUTES, "removes the route's entry"),
    "ipam_pool_update": Payload(
        convert.apply_pool_update,
        _ROUTES,
        "IP pools: which pools masquerade (natOutgoing) and which addresses are the cluster's",
    ),
    "ipam_pool_remove": Payload(
        convert.apply_pool_remove,
        _ROUTES,
        "IP pools: which pools masquerade (natOutgoing) and which addresses are the cluster's",
    ),
    "ipset_update": Payload(
        convert.apply_ipset_update,
        (Owner.IPSETS,),
        "IP-set classification entries (only sets that rules reference)",
    ),
    "ipset_delta_update": Payload(
        convert.apply_ipset_delta,
        (Owner.IPSETS,),
        "the changed members' classification entries only",
    ),
    "ipset_remove": Payload(
        convert.apply_ipset_remove, (Owner.IPSETS,), "classification entries of the set"
    ),
    "active_policy_update": Payload(
        convert.apply_policy_update,
        _POLICY,
        "policy programs of the endpoints whose tiers list the policy",
    ),
    "active_policy_remove": Payload(
        convert.apply_policy_remove,
        _POLICY,
        "policy programs of the endpoints whose tiers listed the policy",
    ),
    "active_profile_update": Payload(
        convert.apply_profile_update,
        _POLICY,
        "policy programs of the endpoints that list the profile",
    ),
    "active_profile_remove": Payload(
        convert.apply_profile_remove,
        _POLICY,
        "policy programs of the endpoints that listed the profile",
    ),
    "service_update": Payload(
        convert.apply_service_update,
        (Owner.SERVICES,),
        "service front ends when no Kubernetes Service object is known",
    ),
    "service_remove": Payload(
        convert.apply_service_remove,
        (Owner.SERVICES,),
        "service front ends when no Kubernetes Service object is known",
    ),
    # Deliberately ignored, with the reason.
    "host_endpoint_update": Payload(None, (), "host interfaces stay with the host's own stack"),
    "host_endpoint_remove": Payload(None, (), "host interfaces stay with the host's own stack"),
    "service_account_update": Payload(
        None, (), "Felix already resolves service-account selectors into IP sets"
    ),
    "service_account_remove": Payload(
        None, (), "Felix already resolves service-account selectors into IP sets"
    ),
    "namespace_update": Payload(
        None, (), "Felix already resolves namespace selectors into IP sets"
    ),
    "namespace_remove": Payload(
        None, (), "Felix already resolves namespace selectors into IP sets"
    ),
    "vtep_update": Payload(
        convert.apply_vtep_update,
        _ROUTES,
        "VXLAN to the node's VTEP (its MAC, parent address); ours: the outer source and MACs; "
        "the parents may send us VXLAN",
    ),
    "vtep_remove": Payload(convert.apply_vtep_remove, _ROUTES, "the node's VXLAN routes go"),
    "wireguard_endpoint_update": Payload(None, (), "WireGuard stays in the host's kernel"),
    "wireguard_endpoint_remove": Payload(None, (), "WireGuard stays in the host's kernel"),
    "wireguard_endpoint_v6_update": Payload(None, (), "WireGuard stays in the host's kernel"),
    "wireguard_endpoint_v6_remove": Payload(None, (), "WireGuard stays in the host's kernel"),
    "global_bgp_config_update": Payload(
        None, (), "BGP is the BGP daemon's job, not the dataplane's"
    ),
    "encapsulation": Payload(
        None,
        (),
        "each route says its pool's encapsulation; Felix restarts the driver when this changes",
    ),
}


def handled(name: str) -> bool:
    payload = PAYLOADS.get(name)
    return payload is not None and (payload.apply is not None or bool(payload.managers))
