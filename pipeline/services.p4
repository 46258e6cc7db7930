// Kubernetes Services (PNA): front-end lookup, backend choice by the action selector's hash
// over the flow, session affinity and flow pinning in learned tables, and the learned
// reverse mapping that translates replies back. Uses PNA externs (ActionSelector, add_entry),
// so only the PNA wrapper includes it.
#ifndef FELIX_P4_SERVICES_P4
#define FELIX_P4_SERVICES_P4

#include <pna.p4>
#include "headers.p4"

// Expiry profiles of learned service state (seconds are a target setting; see README).
const bit<8> SVC_PROFILE_FLOW     = 4;
const bit<8> SVC_PROFILE_AFFINITY = 5;

struct backend_params_t {
    bit<64> addr_hi;
    bit<64> addr_lo;
    bit<16> port;
}

struct reverse_params_t {
    bit<64> service_hi;
    bit<64> service_lo;
    bit<16> service_port;
    bit<64> client_hi;
    bit<64> client_lo;
    bit<16> client_port;
}

control FelixServices(inout headers_t hdr, inout metadata_t meta) {

    // A front end (cluster IP, external IP, load-balancer IP or node address with a node
    // port): the backend group, the service (for affinity) and its affinity timeout.
    @id(0x01000040) @name(".to_service")
    action to_service(@id(1) bit<32> group, @id(2) bit<32> service_id,
                      @id(3) bit<32> affinity_seconds, @id(4) bit<64> hairpin_hi,
                      @id(5) bit<64> hairpin_lo) {
        meta.is_service = 1;
        meta.service_group = group;
        meta.service_id = service_id;
        meta.affinity_seconds = affinity_seconds;
        meta.hairpin_addr_hi = hairpin_hi;
        meta.hairpin_addr_lo = hairpin_lo;
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
            meta.ip_version  : exact @id(1) @name("ip_version");
            meta.dst_addr_hi : exact @id(2) @name("addr_hi");
            meta.dst_addr_lo : exact @id(3) @name("addr_lo");
            meta.l4_proto    : exact @id(4) @name("proto");
            meta.dst_port    : exact @id(5) @name("port");
        }
        actions = { to_service; service_reject; @defaultonly not_service; }
        const default_action = not_service;
        size = 65536;
    }

    @id(0x01000043) @name(".set_backend")
    action set_backend(@id(1) bit<64> addr_hi, @id(2) bit<64> addr_lo, @id(3) bit<16> port) {
        meta.nat_addr_hi = addr_hi;
        meta.nat_addr_lo = addr_lo;
        meta.nat_port = port;
    }

    // (No absolute @name: p4c-dpdk 1.2.4.8 crashes on one for an ActionSelector; the
    // control plane finds it by its P4Info alias, "service_selector".)
    @id(0x11000001)
    ActionSelector(PNA_HashAlgorithm_t.TARGET_DEFAULT, 32w1048576, 32w16) service_selector;

    // Members are backends (set_backend), groups a service port's backends; the hash over
    // the flow picks the member.
    @id(0x02000051) @name(".service_backends")
    table service_backends {
        key = {
            meta.service_group : exact    @id(1) @name("group");
            meta.src_addr_hi   : selector @id(2) @name("src_addr_hi");
            meta.src_addr_lo   : selector @id(3) @name("src_addr_lo");
            meta.dst_addr_hi   : selector @id(4) @name("dst_addr_hi");
            meta.dst_addr_lo   : selector @id(5) @name("dst_addr_lo");
            meta.l4_proto      : selector @id(6) @name("proto");
            meta.src_port      : selector @id(7) @name("src_port");
            meta.dst_port      : selector @id(8) @name("dst_port");
        }
        actions = { set_backend; }
        pna_implementation = service_selector;
        size = 65536;
    }

    @id(0x01000044) @name(".affine")
    action affine(@id(1) bit<64> addr_hi, @id(2) bit<64> addr_lo, @id(3) bit<16> port) {
        meta.nat_addr_hi = addr_hi;
        meta.nat_addr_lo = addr_lo;
        meta.nat_port = port;
    }

    @id(0x01000045) @name(".affinity_learn")
    action affinity_learn() {
        add_entry(action_name = "affine",
                  action_params = (backend_params_t){addr_hi = meta.nat_addr_hi,
                                                     addr_lo = meta.nat_addr_lo,
                                                     port = meta.nat_port},
                  expire_time_profile_id = (ExpireTimeProfileId_t)SVC_PROFILE_AFFINITY);
    }

    // ClientIP affinity: a client keeps its backend for the service's timeout.
    @id(0x02000052) @name(".service_affinity")
    table service_affinity {
        key = {
            meta.ip_version  : exact @id(1) @name("ip_version");
            meta.src_addr_hi : exact @id(2) @name("client_hi");
            meta.src_addr_lo : exact @id(3) @name("client_lo");
            meta.service_id  : exact @id(4) @name("service");
        }
        actions = { affine; @defaultonly affinity_learn; }
        add_on_miss = true;
        idle_timeout_with_auto_delete = true;
        const default_action = affinity_learn;
        size = 1048576;
    }

    @id(0x01000046) @name(".pinned")
    action pinned(@id(1) bit<64> addr_hi, @id(2) bit<64> addr_lo, @id(3) bit<16> port) {
        meta.nat_addr_hi = addr_hi;
        meta.nat_addr_lo = addr_lo;
        meta.nat_port = port;
    }

    @id(0x01000047) @name(".pin_learn")
    action pin_learn() {
        add_entry(action_name = "pinned",
                  action_params = (backend_params_t){addr_hi = meta.nat_addr_hi,
                                                     addr_lo = meta.nat_addr_lo,
                                                     port = meta.nat_port},
                  expire_time_profile_id = (ExpireTimeProfileId_t)SVC_PROFILE_FLOW);
    }

    // Flow pinning: a connection keeps its backend when the service's backends change.
    @id(0x02000053) @name(".service_flows")
    table service_flows {
        key = {
            meta.ip_version  : exact @id(1) @name("ip_version");
            meta.l4_proto    : exact @id(2) @name("proto");
            meta.src_addr_hi : exact @id(3) @name("src_hi");
            meta.src_addr_lo : exact @id(4) @name("src_lo");
            meta.src_port    : exact @id(5) @name("src_port");
            meta.dst_addr_hi : exact @id(6) @name("dst_hi");
            meta.dst_addr_lo : exact @id(7) @name("dst_lo");
            meta.dst_port    : exact @id(8) @name("dst_port");
        }
        actions = { pinned; @defaultonly pin_learn; }
        add_on_miss = true;
        idle_timeout_with_auto_delete = true;
        const default_action = pin_learn;
        size = 1048576;
    }

    // Replies (backend to client) become service to client again; with hairpin the
    // destination also goes back from the hairpin address to the client.
    @id(0x01000048) @name(".un_nat")
    action un_nat(@id(1) bit<64> service_hi, @id(2) bit<64> service_lo,
                  @id(3) bit<16> service_port, @id(4) bit<64> client_hi,
                  @id(5) bit<64> client_lo, @id(6) bit<16> client_port) {
        if (meta.learn_reverse == 0) {
            meta.reply_nat = 1;
            meta.nat_addr_hi = service_hi;
            meta.nat_addr_lo = service_lo;
            meta.nat_port = service_port;
            meta.rev_dst_addr_hi = client_hi;
            meta.rev_dst_addr_lo = client_lo;
            meta.rev_dst_port = client_port;
        }
    }

    @id(0x01000049) @name(".reverse_learn")
    action reverse_learn() {
        if (meta.learn_reverse == 1) {
            add_entry(action_name = "un_nat",
                      action_params = (reverse_params_t){
                          service_hi = meta.dst_addr_hi, service_lo = meta.dst_addr_lo,
                          service_port = meta.dst_port, client_hi = meta.src_addr_hi,
                          client_lo = meta.src_addr_lo, client_port = meta.src_port},
                      expire_time_profile_id = (ExpireTimeProfileId_t)SVC_PROFILE_FLOW);
        }
    }

    @id(0x02000054) @name(".service_replies")
    table service_replies {
        key = {
            meta.ip_version      : exact @id(1) @name("ip_version");
            meta.l4_proto        : exact @id(2) @name("proto");
            meta.rev_src_addr_hi : exact @id(3) @name("src_hi");
            meta.rev_src_addr_lo : exact @id(4) @name("src_lo");
            meta.rev_src_port    : exact @id(5) @name("src_port");
            meta.rev_dst_addr_hi : exact @id(6) @name("dst_hi");
            meta.rev_dst_addr_lo : exact @id(7) @name("dst_lo");
            meta.rev_dst_port    : exact @id(8) @name("dst_port");
        }
        actions = { un_nat; @defaultonly reverse_learn; }
        add_on_miss = true;
        idle_timeout_with_auto_delete = true;
        const default_action = reverse_learn;
        size = 1048576;
    }

    apply {
        meta.is_service = 0;
        meta.reply_nat = 0;
        meta.hairpin = 0;
        services.apply();
        if (meta.drop == 1) {
            return;
        }
        if (meta.is_service == 1) {
            service_backends.apply();
            if (meta.affinity_seconds != 0) {
                service_affinity.apply();
            }
            service_flows.apply();
            // The reply will come from the backend to the client, or to the hairpin
            // address when a pod reached itself.
            meta.learn_reverse = 1;
            meta.rev_src_addr_hi = meta.nat_addr_hi;
            meta.rev_src_addr_lo = meta.nat_addr_lo;
            meta.rev_src_port = meta.nat_port;
            meta.rev_dst_addr_hi = meta.src_addr_hi;
            meta.rev_dst_addr_lo = meta.src_addr_lo;
            meta.rev_dst_port = meta.src_port;
            if (meta.nat_addr_hi == meta.src_addr_hi && meta.nat_addr_lo == meta.src_addr_lo) {
                meta.hairpin = 1;
                meta.rev_dst_addr_hi = meta.hairpin_addr_hi;
                meta.rev_dst_addr_lo = meta.hairpin_addr_lo;
            }
        } else {
            meta.learn_reverse = 0;
            meta.rev_src_addr_hi = meta.src_addr_hi;
            meta.rev_src_addr_lo = meta.src_addr_lo;
            meta.rev_src_port = meta.src_port;
            meta.rev_dst_addr_hi = meta.dst_addr_hi;
            meta.rev_dst_addr_lo = meta.dst_addr_lo;
            meta.rev_dst_port = meta.dst_port;
        }
        service_replies.apply();
    }
}

#endif
