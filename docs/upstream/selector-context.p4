// p4c-dpdk (DPDK back end): --context aborts with "Compiler Bug: unable to find id for
// sel_sel" when a table using an ActionSelector has an absolute @name. Without the @name, or
// without --context, it compiles. See docs/upstream-defects.md.
#include <core.p4>
#include <pna.p4>

header h_t {
    bit<32> group;
    bit<32> flow;
    bit<32> result;
}
struct headers_t { h_t h; }
struct metadata_t { }

parser P(packet_in pkt, out headers_t hdr, inout metadata_t meta,
         in pna_main_parser_input_metadata_t istd) {
    state start { pkt.extract(hdr.h); transition accept; }
}
control Pre(in headers_t hdr, inout metadata_t meta, in pna_pre_input_metadata_t istd,
            inout pna_pre_output_metadata_t ostd) { apply { } }
control C(inout headers_t hdr, inout metadata_t meta, in pna_main_input_metadata_t istd,
          inout pna_main_output_metadata_t ostd) {
    ActionSelector(PNA_HashAlgorithm_t.TARGET_DEFAULT, 32w1024, 32w16) sel;
    action set_out(bit<32> value) { hdr.h.result = value; }
    @name(".backends")
    table backends {
        key = {
            hdr.h.group : exact;
            hdr.h.flow  : selector;
        }
        actions = { set_out; NoAction; }
        pna_implementation = sel;
        size = 1024;
    }
    apply {
        backends.apply();
        send_to_port((PortId_t)0);
    }
}
control D(packet_out pkt, in headers_t hdr, in metadata_t meta,
          in pna_main_output_metadata_t ostd) { apply { pkt.emit(hdr.h); } }
PNA_NIC(P(), Pre(), C(), D()) main;
