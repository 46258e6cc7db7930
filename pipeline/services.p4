// Kubernetes Services (PNA): front-end lookup, backend choice by a hash of the flow into the
// service port's buckets, session affinity and flow pinning in learned tables, and the learned
// reverse mapping that translates replies back. Uses PNA externs (Hash, add_entry), so only
// the PNA wrapper includes it.
//
// Backends are chosen without an ActionSelector: P4-DPDK's selector needs member ids below
// its per-group maximum and memory of groups x members, which bounds every service by the
// largest one. Instead each service port's backends fill a power-of-two number of buckets
// (the control plane spreads them evenly) and the flow's hash picks a bucket.
#ifndef FELIX_P4_SERVICES_P4
#define FELIX_P4_SERVICES_P4

#include <pna.p4>
#include "headers.p4"

struct backend_params_t {
    bit<64> addr_hi;
    bit<64> addr_lo;
    bit<16> port;
}

struct reverse_params_t {
    bit<64> service_hi;
    bit<64> service_lo;
    bit<16> service_port;
    bit<8>  hairpin;
}

control FelixServices(inout headers_t hdr, inout metadata_t meta) {

    // A front end (cluster IP, external IP, load-balancer IP or node address with a node
    // port): its buckets (group, mask), its affinity scope (service_id: the control plane
    // gives one per service port, family and scope), whether it has ClientIP
    // affinity (the timeout is the target's affinity profile), and the hairpin source.
    @id(0x01000040) @name(".to_service")
    action to_service(@id(1) bit<32> group, @id(2) bit<32> service_id,
                      @id(3) bit<32> affinity_seconds, @id(4) bit<64> hairpin_hi,
                      @id(5) bit<64> hairpin_lo, @id(6) bit<16> bucket_mask) {
        meta.is_service = 1;
        meta.service_group = group;
        hdr.affinity_key.service = service_id;
        meta.affinity = 0;
        if (affinity_seconds != 0) {
            meta.affinity = 1;
        }
        hdr.nat.hairpin_hi = hairpin_hi;
        hdr.nat.hairpin_lo = hairpin_lo;
        meta.bucket_mask = bucket_mask;
    }

    // A service with no usable endpoints: new connections are dropped.
    @id(0x01000041) @name(".service_reject")
    action service_reject() {
        meta.drop = 1;
    }

    @id(0x01000042) @name(".not_service")
    action not_service() {
    }

    @id(0x02000050) @name(".services")
    table services {
        key = {
            hdr.port_key.ip_version : exact @id(1) @name("ip_version");
            hdr.port_key.addr_hi    : exact @id(2) @name("addr_hi");
            hdr.port_key.addr_lo    : exact @id(3) @name("addr_lo");
            hdr.port_key.proto      : exact @id(4) @name("proto");
            hdr.port_key.port       : exact @id(5) @name("port");
        }
        actions = { to_service; service_reject; @defaultonly not_service; }
        const default_action = not_service;
        size = 65536;
    }

    @id(0x01000043) @name(".set_backend")
    action set_backend(@id(1) bit<64> addr_hi, @id(2) bit<64> addr_lo, @id(3) bit<16> port) {
        hdr.nat.dst_hi = addr_hi;
        hdr.nat.dst_lo = addr_lo;
        hdr.nat.dst_port = port;
    }

    // A bucket the control plane did not fill: fail closed.
    @id(0x0100004a) @name(".no_backend")
    action no_backend() {
        meta.drop = 1;
    }

    // Buckets of every service port: (group, bucket) -> backend.
    @id(0x02000051) @name(".service_backends")
    table service_backends {
        key = {
            meta.service_group : exact @id(1) @name("group");
            meta.bucket        : exact @id(2) @name("bucket");
        }
        actions = { set_backend; @defaultonly no_backend; }
        const default_action = no_backend;
        size = 262144;
    }

    @id(0x01000044) @name(".affine")
    action affine(@id(1) bit<64> addr_hi, @id(2) bit<64> addr_lo, @id(3) bit<16> port) {
        restart_expire_timer();
        hdr.nat.dst_hi = addr_hi;
        hdr.nat.dst_lo = addr_lo;
        hdr.nat.dst_port = port;
    }

    @id(0x01000045) @name(".affinity_learn")
    action affinity_learn() {
        add_entry(action_name = "affine",
                  action_params = (backend_params_t){addr_hi = hdr.nat.dst_hi,
                                                     addr_lo = hdr.nat.dst_lo,
                                                     port = hdr.nat.dst_port},
                  expire_time_profile_id = (ExpireTimeProfileId_t)PROFILE_AFFINITY);
    }

    // ClientIP affinity: a client keeps its backend for the affinity profile's timeout.
    @id(0x02000052) @name(".service_affinity")
    table service_affinity {
        key = {
            hdr.affinity_key.ip_version : exact @id(1) @name("ip_version");
            hdr.affinity_key.client_hi  : exact @id(2) @name("client_hi");
            hdr.affinity_key.client_lo  : exact @id(3) @name("client_lo");
            hdr.affinity_key.service    : exact @id(4) @name("service");
        }
        actions = { affine; @defaultonly affinity_learn; }
        add_on_miss = true;
        idle_timeout_with_auto_delete = true;
        const default_action = affinity_learn;
        size = 65536;
    }

    @id(0x01000046) @name(".pinned")
    action pinned(@id(1) bit<64> addr_hi, @id(2) bit<64> addr_lo, @id(3) bit<16> port) {
        restart_expire_timer();
        hdr.nat.dst_hi = addr_hi;
        hdr.nat.dst_lo = addr_lo;
        hdr.nat.dst_port = port;
    }

    @id(0x01000047) @name(".pin_learn")
    action pin_learn() {
        add_entry(action_name = "pinned",
                  action_params = (backend_params_t){addr_hi = hdr.nat.dst_hi,
                                                     addr_lo = hdr.nat.dst_lo,
                                                     port = hdr.nat.dst_port},
                  expire_time_profile_id = (ExpireTimeProfileId_t)meta.profile);
    }

    // Flow pinning: a connection keeps its backend when the service's backends change.
    @id(0x02000053) @name(".service_flows")
    table service_flows {
        key = {
            hdr.flow_key.ip_version : exact @id(1) @name("ip_version");
            hdr.flow_key.proto      : exact @id(2) @name("proto");
            hdr.flow_key.a_hi       : exact @id(3) @name("src_hi");
            hdr.flow_key.a_lo       : exact @id(4) @name("src_lo");
            hdr.flow_key.a_port     : exact @id(5) @name("src_port");
            hdr.flow_key.b_hi       : exact @id(6) @name("dst_hi");
            hdr.flow_key.b_lo       : exact @id(7) @name("dst_lo");
            hdr.flow_key.b_port     : exact @id(8) @name("dst_port");
        }
        actions = { pinned; @defaultonly pin_learn; }
        add_on_miss = true;
        idle_timeout_with_auto_delete = true;
        const default_action = pin_learn;
        size = 65536;
    }

    // Replies (backend to client) come from the service again. With hairpin (a pod that
    // reached itself) the reply is addressed to the hairpin address, and goes back to the
    // pod: the reply's own source, the port unchanged.
    @id(0x01000048) @name(".un_nat")
    action un_nat(@id(1) bit<64> service_hi, @id(2) bit<64> service_lo,
                  @id(3) bit<16> service_port, @id(4) bit<8> hairpin) {
        restart_expire_timer();
        if (meta.is_service == 0) {
            meta.reply_nat = 1;
            meta.hairpin = hairpin;
            hdr.nat.src_hi = service_hi;
            hdr.nat.src_lo = service_lo;
            hdr.nat.src_port = service_port;
        }
    }

    // Learned by a request, keyed as its reply will arrive: the service it asked for (the
    // request's destination as received) and whether it was a pod reaching itself.
    @id(0x01000049) @name(".reverse_learn")
    action reverse_learn() {
        if (meta.is_service == 1) {
            add_entry(action_name = "un_nat",
                      action_params = (reverse_params_t){
                          service_hi = hdr.flow.dst_hi, service_lo = hdr.flow.dst_lo,
                          service_port = hdr.flow.dst_port, hairpin = meta.hairpin},
                      expire_time_profile_id = (ExpireTimeProfileId_t)meta.profile);
        }
    }

    @id(0x02000054) @name(".service_replies")
    table service_replies {
        key = {
            hdr.flow_key.ip_version : exact @id(1) @name("ip_version");
            hdr.flow_key.proto      : exact @id(2) @name("proto");
            hdr.flow_key.a_hi       : exact @id(3) @name("src_hi");
            hdr.flow_key.a_lo       : exact @id(4) @name("src_lo");
            hdr.flow_key.a_port     : exact @id(5) @name("src_port");
            hdr.flow_key.b_hi       : exact @id(6) @name("dst_hi");
            hdr.flow_key.b_lo       : exact @id(7) @name("dst_lo");
            hdr.flow_key.b_port     : exact @id(8) @name("dst_port");
        }
        actions = { un_nat; @defaultonly reverse_learn; }
        add_on_miss = true;
        idle_timeout_with_auto_delete = true;
        const default_action = reverse_learn;
        size = 65536;
    }

    // The hash picks a bucket per connection (the destination is the front end, the same for
    // every flow of it): the client's address and port are what vary.
    Hash<bit<16>>(PNA_HashAlgorithm_t.TARGET_DEFAULT) flow_hash;

    apply {
        meta.is_service = 0;
        meta.reply_nat = 0;
        meta.hairpin = 0;
        hdr.port_key.ip_version = hdr.flow.ip_version;
        hdr.port_key.addr_hi = hdr.flow.dst_hi;
        hdr.port_key.addr_lo = hdr.flow.dst_lo;
        hdr.port_key.proto = hdr.flow.proto;
        hdr.port_key.port = hdr.flow.dst_port;
        services.apply();
        if (meta.drop == 1) {
            return;
        }
        // The flow as received: a request's pin, and any packet's reverse lookup.
        hdr.flow_key.ip_version = hdr.flow.ip_version;
        hdr.flow_key.proto = hdr.flow.proto;
        hdr.flow_key.a_hi = hdr.flow.src_hi;
        hdr.flow_key.a_lo = hdr.flow.src_lo;
        hdr.flow_key.a_port = hdr.flow.src_port;
        hdr.flow_key.b_hi = hdr.flow.dst_hi;
        hdr.flow_key.b_lo = hdr.flow.dst_lo;
        hdr.flow_key.b_port = hdr.flow.dst_port;
        if (meta.is_service == 1) {
            meta.hash = flow_hash.get_hash({hdr.flow.src_hi, hdr.flow.src_lo,
                                            hdr.flow.src_port});
            meta.bucket = meta.hash & meta.bucket_mask;
            service_backends.apply();
            if (meta.drop == 1) {
                return;
            }
            if (meta.affinity == 1) {
                hdr.affinity_key.ip_version = hdr.flow.ip_version;
                hdr.affinity_key.client_hi = hdr.flow.src_hi;
                hdr.affinity_key.client_lo = hdr.flow.src_lo;
                service_affinity.apply();
            }
            service_flows.apply();
            // The reply will come from the backend to the client, or to the hairpin
            // address when a pod reached itself.
            hdr.flow_key.a_hi = hdr.nat.dst_hi;
            hdr.flow_key.a_lo = hdr.nat.dst_lo;
            hdr.flow_key.a_port = hdr.nat.dst_port;
            hdr.flow_key.b_port = hdr.flow.src_port;
            if (hdr.nat.dst_hi == hdr.flow.src_hi && hdr.nat.dst_lo == hdr.flow.src_lo) {
                meta.hairpin = 1;
                hdr.flow_key.b_hi = hdr.nat.hairpin_hi;
                hdr.flow_key.b_lo = hdr.nat.hairpin_lo;
            } else {
                hdr.flow_key.b_hi = hdr.flow.src_hi;
                hdr.flow_key.b_lo = hdr.flow.src_lo;
            }
        }
        service_replies.apply();
    }
}

#endif
