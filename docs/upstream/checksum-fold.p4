// p4c-dpdk (DPDK back end): a one's-complement fold miscompiled. With a = 0xffff, b = 0x0002
// the output field c must be 0x0002; the spec p4c-dpdk 1.2.4.8 emits computes 0x0001.
// See docs/upstream-defects.md.
#include <core.p4>
#include <pna.p4>

header h_t {
    bit<16> a;
    bit<16> b;
    bit<16> c;
}
struct headers_t { h_t h; }
struct metadata_t { bit<32> sum; }

parser P(packet_in pkt, out headers_t hdr, inout metadata_t meta,
         in pna_main_parser_input_metadata_t istd) {
    state start { pkt.extract(hdr.h); transition accept; }
}
control Pre(in headers_t hdr, inout metadata_t meta, in pna_pre_input_metadata_t istd,
            inout pna_pre_output_metadata_t ostd) { apply { } }
control C(inout headers_t hdr, inout metadata_t meta, in pna_main_input_metadata_t istd,
          inout pna_main_output_metadata_t ostd) {
    apply {
        bit<32> sum = (bit<32>)hdr.h.a + (bit<32>)hdr.h.b;
        // One's-complement fold: 0xffff + 0x0002 = 0x10001 -> 0x0001 + 0x0001 = 0x0002.
        hdr.h.c = (bit<16>)((sum & 0xffff) + (sum >> 16));
        send_to_port((PortId_t)0);
    }
}
control D(packet_out pkt, in headers_t hdr, in metadata_t meta,
          in pna_main_output_metadata_t ostd) { apply { pkt.emit(hdr.h); } }
PNA_NIC(P(), Pre(), C(), D()) main;
