// PNA wrapper (P4-DPDK, IPU): binds the shared parser and forwarding control to the
// PNA_NIC package and turns the control's drop / egress_port verdict into PNA externs.
#include <core.p4>
#include <pna.p4>

#include "headers.p4"
#include "parser.p4"
#include "forwarding.p4"

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
    FelixForwarding() forwarding;
    apply {
        meta.in_port = (bit<32>)istd.input_port;
        forwarding.apply(hdr, meta);
        if (meta.drop == 1) {
            drop_packet();
        } else {
            send_to_port((PortId_t)meta.egress_port);
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
