// PNA wrapper (P4-DPDK, IPU): binds the shared parser and controls to the PNA_NIC package,
// holds the PNA-only parts (services, conntrack learning), orders the stages, and turns the
// verdict into PNA externs.
#include <core.p4>
#include <pna.p4>

#define SEND_TO_PORT(port) send_to_port((PortId_t)(port))

#include "headers.p4"
#include "parser.p4"
#include "forwarding.p4"
#include "nat.p4"
#include "services.p4"
#include "policy.p4"
#include "tunnel.p4"

parser MainParserImpl(packet_in pkt, out headers_t hdr, inout metadata_t meta,
                      in pna_main_parser_input_metadata_t istd) {
    FelixParser() felix_parser;
    state start {
        felix_parser.apply(pkt, hdr);
        transition accept;
    }
}

control PreControlImpl(in headers_t hdr, inout metadata_t meta,
                       in pna_pre_input_metadata_t istd, inout pna_pre_output_metadata_t ostd) {
    apply {
    }
}

control MainControlImpl(inout headers_t hdr, inout metadata_t meta,
                        in pna_main_input_metadata_t istd, inout pna_main_output_metadata_t ostd) {
    FelixPort() port;
    FelixTunnelIn() tunnel_in;
    FelixTunnelOut() tunnel_out;
    FelixSummary() summary;
    FelixServices() services;
    FelixRouting() routing;
    FelixPolicy() policy;
    FelixRewrite() rewrite;

    // A hit keeps the flow alive: its expiry restarts (P4-DPDK's rearm).
    @id(0x01000030) @name(".ct_established")
    action ct_established() {
        restart_expire_timer();
    }

    // Learn a flow only when policy allowed it: a denied flow leaves no state behind.
    @id(0x01000031) @name(".ct_learn")
    action ct_learn() {
        if (meta.policy_allowed == 1) {
            add_entry(action_name = "ct_established", action_params = {},
                      expire_time_profile_id = (ExpireTimeProfileId_t)meta.profile);
        }
    }

    // Allowed flows, both directions in one entry; return traffic skips policy.
    @id(0x02000040) @name(".conntrack")
    table conntrack {
        key = {
            hdr.flow_key.ip_version : exact @id(1) @name("ip_version");
            hdr.flow_key.proto      : exact @id(2) @name("proto");
            hdr.flow_key.a_hi       : exact @id(3) @name("a_hi");
            hdr.flow_key.a_lo       : exact @id(4) @name("a_lo");
            hdr.flow_key.a_port     : exact @id(5) @name("a_port");
            hdr.flow_key.b_hi       : exact @id(6) @name("b_hi");
            hdr.flow_key.b_lo       : exact @id(7) @name("b_lo");
            hdr.flow_key.b_port     : exact @id(8) @name("b_port");
        }
        actions = { ct_established; @defaultonly ct_learn; }
        add_on_miss = true;
        idle_timeout_with_auto_delete = true;
        const default_action = ct_learn;
        size = 262144;
    }

    apply {
        hdr.flow.setValid();
        hdr.flow_key.setValid();
        hdr.port_key.setValid();
        hdr.addr_key.setValid();
        hdr.rule_key.setValid();
        hdr.affinity_key.setValid();
        hdr.nat.setValid();
        meta.in_port = (bit<32>)istd.input_port;
        meta.rewrite_src = 0;
        meta.rewrite_dst = 0;
        meta.route_kind = ROUTE_NONE;
        port.apply(hdr, meta);
        if (meta.drop == 0 && meta.answered == 0) {
            tunnel_in.apply(hdr, meta);
        }
        if (meta.drop == 0 && meta.answered == 0 && meta.bridge == 0
                && (hdr.ipv4.isValid() || hdr.ipv6.isValid())) {
            summary.apply(hdr, meta);
            services.apply(hdr, meta);
        }
        if (meta.drop == 0 && meta.answered == 0 && meta.bridge == 0
                && (hdr.ipv4.isValid() || hdr.ipv6.isValid())) {
            if (meta.is_service == 1) {
                meta.rewrite_dst = 1;
                if (meta.hairpin == 1) {
                    // A pod reaching itself must not see its own address as the source.
                    meta.rewrite_src = 1;
                    hdr.nat.src_hi = hdr.nat.hairpin_hi;
                    hdr.nat.src_lo = hdr.nat.hairpin_lo;
                    hdr.nat.src_port = hdr.flow.src_port;
                }
            } else if (meta.reply_nat == 1) {
                meta.rewrite_src = 1;
                if (meta.hairpin == 1) {
                    // Back to the pod that reached itself: the reply's own source.
                    meta.rewrite_dst = 1;
                    hdr.nat.dst_hi = hdr.flow.src_hi;
                    hdr.nat.dst_lo = hdr.flow.src_lo;
                    hdr.nat.dst_port = hdr.flow.dst_port;
                }
            }
            if (meta.rewrite_dst == 1) {
                hdr.flow.dst_hi = hdr.nat.dst_hi;
                hdr.flow.dst_lo = hdr.nat.dst_lo;
                hdr.flow.dst_port = hdr.nat.dst_port;
            }
            // Conntrack sees the flow between its source as received and its destination
            // after translation (a request: client -> backend; its reply: backend ->
            // client), with the lower end first so both directions share one entry.
            meta.src_first = 1;
            if (hdr.flow.src_hi > hdr.flow.dst_hi) {
                meta.src_first = 0;
            } else if (hdr.flow.src_hi == hdr.flow.dst_hi) {
                if (hdr.flow.src_lo > hdr.flow.dst_lo) {
                    meta.src_first = 0;
                } else if (hdr.flow.src_lo == hdr.flow.dst_lo) {
                    if (hdr.flow.src_port > hdr.flow.dst_port) {
                        meta.src_first = 0;
                    }
                }
            }
            hdr.flow_key.ip_version = hdr.flow.ip_version;
            hdr.flow_key.proto = hdr.flow.proto;
            if (meta.src_first == 1) {
                hdr.flow_key.a_hi = hdr.flow.src_hi;
                hdr.flow_key.a_lo = hdr.flow.src_lo;
                hdr.flow_key.a_port = hdr.flow.src_port;
                hdr.flow_key.b_hi = hdr.flow.dst_hi;
                hdr.flow_key.b_lo = hdr.flow.dst_lo;
                hdr.flow_key.b_port = hdr.flow.dst_port;
            } else {
                hdr.flow_key.a_hi = hdr.flow.dst_hi;
                hdr.flow_key.a_lo = hdr.flow.dst_lo;
                hdr.flow_key.a_port = hdr.flow.dst_port;
                hdr.flow_key.b_hi = hdr.flow.src_hi;
                hdr.flow_key.b_lo = hdr.flow.src_lo;
                hdr.flow_key.b_port = hdr.flow.src_port;
            }
            if (meta.reply_nat == 1) {
                // Policy sees a reply as coming from the service.
                hdr.flow.src_hi = hdr.nat.src_hi;
                hdr.flow.src_lo = hdr.nat.src_lo;
                hdr.flow.src_port = hdr.nat.src_port;
            }
            // IPv4 addresses for the 32-bit keys and the rewrite: the packet's, or the
            // translation's (one narrowing cast each, here only).
            hdr.nat.src4 = (bit<32>)hdr.nat.src_lo;
            hdr.nat.dst4 = (bit<32>)hdr.nat.dst_lo;
            hdr.addr_key.src4 = hdr.nat.src4;
            hdr.addr_key.dst4 = hdr.nat.dst4;
            if (hdr.ipv4.isValid()) {
                if (meta.reply_nat == 0) {
                    hdr.addr_key.src4 = hdr.ipv4.src_addr;
                }
                if (meta.rewrite_dst == 0) {
                    hdr.addr_key.dst4 = hdr.ipv4.dst_addr;
                }
            }
            hdr.addr_key.src_hi = hdr.flow.src_hi;
            hdr.addr_key.src_lo = hdr.flow.src_lo;
            hdr.addr_key.dst_hi = hdr.flow.dst_hi;
            hdr.addr_key.dst_lo = hdr.flow.dst_lo;
            routing.apply(hdr, meta);
            // What a route means depends on where the packet came from: the host's own
            // traffic to and from the network passes through unchanged (what a service
            // translated goes where the route says); what arrived in a tunnel goes only to
            // pods or to the host.
            if (meta.is_service == 1 || meta.reply_nat == 1) {
                meta.translated = 1;
            } else {
                meta.translated = 0;
            }
            if (meta.port_kind == PORT_KIND_UPLINK) {
                if (meta.translated == 0 && meta.route_kind != ROUTE_WORKLOAD
                        && meta.route_kind != ROUTE_BLACKHOLE) {
                    meta.bridge = 1;
                    meta.drop = 0;
                }
            } else if (meta.port_kind == PORT_KIND_HOST) {
                if (meta.translated == 0) {
                    if (meta.route_kind == ROUTE_HOST || meta.route_kind == ROUTE_NONE) {
                        meta.bridge = 1;
                        meta.drop = 0;
                    }
                }
            } else if (meta.port_kind == PORT_KIND_TUNNEL) {
                if (meta.route_kind != ROUTE_WORKLOAD && meta.route_kind != ROUTE_HOST) {
                    meta.drop = 1;
                }
            }
            // The host's stack takes only frames addressed to its own MAC.
            if (meta.route_kind == ROUTE_HOST && meta.bridge == 0 && hdr.node.node_mac != 0) {
                hdr.ethernet.dst_addr = hdr.node.node_mac;
            }
            if (meta.drop == 0 && meta.bridge == 0) {
                policy.apply(hdr, meta);
                meta.policy_allowed = 0;
                if (meta.egress_ok == 1 && meta.ingress_ok == 1) {
                    meta.policy_allowed = 1;
                }
                if (!conntrack.apply().hit && meta.policy_allowed == 0) {
                    meta.drop = 1;
                }
            }
            if (meta.drop == 0 && meta.bridge == 0) {
                rewrite.apply(hdr, meta);
            }
        }
        if (meta.drop == 0 && meta.answered == 0) {
            tunnel_out.apply(hdr, meta);
        }
        // The output port was chosen by the action that routed the packet (SEND_TO_PORT).
        if (meta.drop == 1) {
            drop_packet();
        }
    }
}

control MainDeparserImpl(packet_out pkt, in headers_t hdr, in metadata_t meta,
                         in pna_main_output_metadata_t ostd) {
    FelixDeparser() felix_deparser;
    apply {
        felix_deparser.apply(pkt, hdr);
    }
}

PNA_NIC(MainParserImpl(), PreControlImpl(), MainControlImpl(), MainDeparserImpl()) main;
