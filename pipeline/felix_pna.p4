// PNA wrapper (P4-DPDK, IPU): binds the shared parser and controls to the PNA_NIC package,
// holds the PNA-only parts (services, conntrack learning) and turns the verdict into PNA
// externs.
#include <core.p4>
#include <pna.p4>

#define SEND_TO_PORT(port) send_to_port((PortId_t)(port))

#include "headers.p4"
#include "parser.p4"
#include "forwarding.p4"
#include "nat.p4"
#include "services.p4"
#include "policy.p4"

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
    FelixSummary() summary;
    FelixServices() services;
    FelixRewrite() dnat;
    FelixRewrite() reply_src;
    FelixRewrite() reply_dst;
    FelixSummary() translated;
    FelixRouting() routing;
    FelixPolicy() policy;
    FelixRewrite() hairpin_snat;

    @id(0x01000030) @name(".ct_established")
    action ct_established() {
    }

    // Learn a flow only when policy allowed it: a denied flow leaves no state behind.
    @id(0x01000031) @name(".ct_learn")
    action ct_learn() {
        if (meta.policy_allowed == 1) {
            add_entry(action_name = "ct_established", action_params = {},
                      expire_time_profile_id = (ExpireTimeProfileId_t)meta.ct_timeout);
        }
    }

    // Allowed flows, both directions in one entry; return traffic skips policy.
    @id(0x02000040) @name(".conntrack")
    table conntrack {
        key = {
            meta.ip_version : exact @id(1) @name("ip_version");
            meta.l4_proto   : exact @id(2) @name("proto");
            meta.ct_a_hi    : exact @id(3) @name("a_hi");
            meta.ct_a_lo    : exact @id(4) @name("a_lo");
            meta.ct_a_port  : exact @id(5) @name("a_port");
            meta.ct_b_hi    : exact @id(6) @name("b_hi");
            meta.ct_b_lo    : exact @id(7) @name("b_lo");
            meta.ct_b_port  : exact @id(8) @name("b_port");
        }
        actions = { ct_established; @defaultonly ct_learn; }
        add_on_miss = true;
        idle_timeout_with_auto_delete = true;
        const default_action = ct_learn;
        size = 1048576;
    }

    apply {
        meta.in_port = (bit<32>)istd.input_port;
        port.apply(hdr, meta);
        if (meta.drop == 0 && (hdr.ipv4.isValid() || hdr.ipv6.isValid())) {
            summary.apply(hdr, meta);
            services.apply(hdr, meta);
            bit<64> received_src_hi = meta.src_addr_hi;
            bit<64> received_src_lo = meta.src_addr_lo;
            bit<16> received_src_port = meta.src_port;
            if (meta.is_service == 1) {
                dnat.apply(hdr, 0, meta.nat_addr_hi, meta.nat_addr_lo, meta.nat_port);
            } else if (meta.reply_nat == 1) {
                reply_src.apply(hdr, 1, meta.nat_addr_hi, meta.nat_addr_lo, meta.nat_port);
                reply_dst.apply(hdr, 0, meta.rev_dst_addr_hi, meta.rev_dst_addr_lo,
                                meta.rev_dst_port);
            }
            translated.apply(hdr, meta);
            meta.ct_view_src_hi = meta.src_addr_hi;
            meta.ct_view_src_lo = meta.src_addr_lo;
            meta.ct_view_src_port = meta.src_port;
            meta.ct_view_dst_hi = meta.dst_addr_hi;
            meta.ct_view_dst_lo = meta.dst_addr_lo;
            meta.ct_view_dst_port = meta.dst_port;
            if (meta.reply_nat == 1) {
                meta.ct_view_src_hi = received_src_hi;
                meta.ct_view_src_lo = received_src_lo;
                meta.ct_view_src_port = received_src_port;
            }
            if (meta.drop == 0) {
                routing.apply(hdr, meta);
            }
            if (meta.drop == 0) {
                policy.apply(hdr, meta);
                if (!conntrack.apply().hit && meta.policy_allowed == 0) {
                    meta.drop = 1;
                }
            }
            if (meta.drop == 0 && meta.is_service == 1 && meta.hairpin == 1) {
                // A pod reaching itself: it must not see its own address as the source.
                hairpin_snat.apply(hdr, 1, meta.hairpin_addr_hi, meta.hairpin_addr_lo,
                                   received_src_port);
            }
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
