// p4c-dpdk (DPDK back end): "Compiler Bug: Logical Expression Unroll pass failed" for a
// negation on the left of `&&`. `!(a || b)` compiles. See docs/upstream-defects.md.
#include <core.p4>
#include <pna.p4>

header h_t {
    bit<8> x;
}
struct headers_t { h_t a; h_t b; }
struct metadata_t { bit<8> none; }

parser P(packet_in pkt, out headers_t hdr, inout metadata_t meta,
         in pna_main_parser_input_metadata_t istd) {
    state start { pkt.extract(hdr.a); transition accept; }
}
control Pre(in headers_t hdr, inout metadata_t meta, in pna_pre_input_metadata_t istd,
            inout pna_pre_output_metadata_t ostd) { apply { } }
control C(inout headers_t hdr, inout metadata_t meta, in pna_main_input_metadata_t istd,
          inout pna_main_output_metadata_t ostd) {
    apply {
        if (!hdr.a.isValid() && !hdr.b.isValid()) {
            drop_packet();
        }
        send_to_port((PortId_t)0);
    }
}
control D(packet_out pkt, in headers_t hdr, in metadata_t meta,
          in pna_main_output_metadata_t ostd) { apply { pkt.emit(hdr.a); } }
PNA_NIC(P(), Pre(), C(), D()) main;
