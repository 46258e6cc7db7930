"""Felix's dataplane-driver wire protocol (felixbackend.proto, Calico v3.32+) and its bindings."""
