"""Which Felix payloads change the model and which are deliberately ignored, and why."""

from __future__ import annotations

# Payloads felix-p4 does not apply, with the reason given in docs/felix-payloads.md.
IGNORED: dict[str, str] = {
    "ipset_update": "policy is not in pipeline v0",
    "ipset_delta_update": "policy is not in pipeline v0",
    "ipset_remove": "policy is not in pipeline v0",
    "active_policy_update": "policy is not in pipeline v0",
    "active_policy_remove": "policy is not in pipeline v0",
    "active_profile_update": "policy is not in pipeline v0",
    "active_profile_remove": "policy is not in pipeline v0",
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
    "service_update": "services are not in pipeline v0",
    "service_remove": "services are not in pipeline v0",
}
