// Architecture-neutral address and port rewriting, once per packet at the end of the pipeline,
// with incremental checksum updates (RFC 1624) through the InternetChecksum extern: the old
// value is subtracted, the new one added. The IPv4 header checksum covers the addresses; TCP
// and UDP checksums cover them through the pseudo header and the ports directly. A zero UDP
// checksum (none, IPv4) stays zero, and a computed zero is sent as 0xffff. SCTP's CRC32c
// covers the whole packet and is left to the target's checksum offload.
//
// Operands are single header fields, never lists: p4c-dpdk then checksums the packet's own
// fields in place (a list is copied through metadata temporaries first), and P4-DPDK's
// checksum instructions read header fields as the bytes on the wire. IPv4 addresses come
// from nat.src4/dst4, which the wrapper fills.
#ifndef FELIX_P4_NAT_P4
#define FELIX_P4_NAT_P4

#include "headers.p4"

// Rewrites the source when meta.rewrite_src (to nat.src_*) and the destination when
// meta.rewrite_dst (to nat.dst_*).
control FelixRewrite(inout headers_t hdr, inout metadata_t meta) {
    InternetChecksum() l3_sum;
    InternetChecksum() l4_sum;

    apply {
        l3_sum.clear();
        l4_sum.clear();
        if (hdr.tcp.isValid()) {
            l4_sum.subtract(hdr.tcp.checksum);
        } else if (hdr.udp.isValid()) {
            l4_sum.subtract(hdr.udp.checksum);
        }
        if (hdr.ipv4.isValid()) {
            l3_sum.subtract(hdr.ipv4.hdr_checksum);
            if (meta.rewrite_src == 1) {
                l3_sum.subtract(hdr.ipv4.src_addr);
                l4_sum.subtract(hdr.ipv4.src_addr);
                hdr.ipv4.src_addr = hdr.nat.src4;
                l3_sum.add(hdr.ipv4.src_addr);
                l4_sum.add(hdr.ipv4.src_addr);
            }
            if (meta.rewrite_dst == 1) {
                l3_sum.subtract(hdr.ipv4.dst_addr);
                l4_sum.subtract(hdr.ipv4.dst_addr);
                hdr.ipv4.dst_addr = hdr.nat.dst4;
                l3_sum.add(hdr.ipv4.dst_addr);
                l4_sum.add(hdr.ipv4.dst_addr);
            }
            hdr.ipv4.hdr_checksum = l3_sum.get();
        } else {
            if (meta.rewrite_src == 1) {
                l4_sum.subtract(hdr.ipv6.src_addr_hi);
                l4_sum.subtract(hdr.ipv6.src_addr_lo);
                hdr.ipv6.src_addr_hi = hdr.nat.src_hi;
                hdr.ipv6.src_addr_lo = hdr.nat.src_lo;
                l4_sum.add(hdr.ipv6.src_addr_hi);
                l4_sum.add(hdr.ipv6.src_addr_lo);
            }
            if (meta.rewrite_dst == 1) {
                l4_sum.subtract(hdr.ipv6.dst_addr_hi);
                l4_sum.subtract(hdr.ipv6.dst_addr_lo);
                hdr.ipv6.dst_addr_hi = hdr.nat.dst_hi;
                hdr.ipv6.dst_addr_lo = hdr.nat.dst_lo;
                l4_sum.add(hdr.ipv6.dst_addr_hi);
                l4_sum.add(hdr.ipv6.dst_addr_lo);
            }
        }
        if (hdr.tcp.isValid()) {
            if (meta.rewrite_src == 1) {
                l4_sum.subtract(hdr.tcp.src_port);
                hdr.tcp.src_port = hdr.nat.src_port;
                l4_sum.add(hdr.tcp.src_port);
            }
            if (meta.rewrite_dst == 1) {
                l4_sum.subtract(hdr.tcp.dst_port);
                hdr.tcp.dst_port = hdr.nat.dst_port;
                l4_sum.add(hdr.tcp.dst_port);
            }
            hdr.tcp.checksum = l4_sum.get();
        } else if (hdr.udp.isValid()) {
            if (meta.rewrite_src == 1) {
                l4_sum.subtract(hdr.udp.src_port);
                hdr.udp.src_port = hdr.nat.src_port;
                l4_sum.add(hdr.udp.src_port);
            }
            if (meta.rewrite_dst == 1) {
                l4_sum.subtract(hdr.udp.dst_port);
                hdr.udp.dst_port = hdr.nat.dst_port;
                l4_sum.add(hdr.udp.dst_port);
            }
            if (hdr.udp.checksum != 0 || hdr.ipv6.isValid()) {
                hdr.udp.checksum = l4_sum.get();
                if (hdr.udp.checksum == 0) {
                    hdr.udp.checksum = 0xffff;
                }
            }
        } else if (hdr.sctp.isValid()) {
            if (meta.rewrite_src == 1) {
                hdr.sctp.src_port = hdr.nat.src_port;
            }
            if (meta.rewrite_dst == 1) {
                hdr.sctp.dst_port = hdr.nat.dst_port;
            }
        }
    }
}

#endif
