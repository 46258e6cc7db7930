"""Which Felix payloads change the model and which are deliberately ignored, and why."""

from __future__ import annotations

# Payloads applied to the model, and what they drive (docs/felix-payloads.md lists both).
HANDLED: dict[str, str] = {
    "in_sync": "ends the snapshot: the first apply runs, then DataplaneInSync",
    "config_update": "hostname, ReportingIntervalSecs, LogSeverityScreen",
    "workload_endpoint_update": "port classification, source check and routes of a local pod",
    "workload_endpoint_remove": "removes those entries; WorkloadEndpointStatusRemove",
    "host_metadata_update": "node addresses; this node's are where NodePorts listen",
    "host_metadata_remove": "node addresses; this node's are where NodePorts listen",
    "host_metadata_v6_update": "node addresses; this node's are where NodePorts listen",
    "host_metadata_v6_remove": "node addresses; this node's are where NodePorts listen",
    "host_metadata_v4v6_update": "node addresses; this node's are where NodePorts listen",
    "host_metadata_v4v6_remove": "node addresses; this node's are where NodePorts listen",
    "route_update": "routes (model only: non-local destinations go to the host port)",
    "route_remove": "routes (model only: non-local destinations go to the host port)",
    "ipam_pool_update": "IP pools (kept in the model; no pipeline entry depends on them)",
    "ipam_pool_remove": "IP pools (kept in the model; no pipeline entry depends on them)",
    "ipset_update": "IP-set classification entries (only sets that rules reference)",
    "ipset_delta_update": "the changed members' classification entries only",
    "ipset_remove": "classification entries of the set",
    "active_policy_update": "policy programs of the endpoints whose tiers list the policy",
    "active_policy_remove": "policy programs of the endpoints whose tiers listed the policy",
    "active_profile_update": "policy programs of the endpoints that list the profile",
    "active_profile_remove": "policy programs of the endpoints that listed the profile",
    "service_update": "service front ends when no Kubernetes Service object is known",
    "service_remove": "service front ends when no Kubernetes Service object is known",
}

# Payloads felix-p4 does not apply, with the reason.
IGNORED: dict[str, str] = {
    "host_endpoint_update": "host interfaces stay with the host's own stack",
    "host_endpoint_remove": "host interfaces stay with the host's own stack",
    "service_account_update": "Felix already resolves service-account selectors into IP sets",
    "service_account_remove": "Felix already resolves service-account selectors into IP sets",
    "namespace_update": "Felix already resolves namespace selectors into IP sets",
    "namespace_remove": "Felix already resolves namespace selectors into IP sets",
    "vtep_update": "off-node traffic is handed to the host port, whose stack encapsulates",
    "vtep_remove": "off-node traffic is handed to the host port, whose stack encapsulates",
    "wireguard_endpoint_update": "WireGuard stays in the host's kernel",
    "wireguard_endpoint_remove": "WireGuard stays in the host's kernel",
    "wireguard_endpoint_v6_update": "WireGuard stays in the host's kernel",
    "wireguard_endpoint_v6_remove": "WireGuard stays in the host's kernel",
    "global_bgp_config_update": "BGP is the BGP daemon's job, not the dataplane's",
    "encapsulation": "off-node traffic is handed to the host port, whose stack encapsulates",
}
