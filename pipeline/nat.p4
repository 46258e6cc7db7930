// Architecture-neutral address and port rewriting with incremental checksum updates
// (RFC 1624: HC' = ~(~HC + ~m + m') over every changed 16-bit word). The IPv4 header
// checksum covers the addresses; TCP and UDP checksums cover them through the pseudo
// header and the ports directly. A zero UDP checksum (none, IPv4) stays zero. SCTP's
// CRC32c covers the whole packet and is left to the target's checksum offload.
#ifndef FELIX_P4_NAT_P4
#define FELIX_P4_NAT_P4

#include "headers.p4"

// The sum of the complemented 16-bit words of `old` plus the words of `new`: what one
// changed field contributes to a checksum update. The arithmetic stays in 64 bits, with
// shifts and masks rather than slices: that is what P4-DPDK lowers without width errors.
bit<64> delta64(in bit<64> old, in bit<64> new) {
    bit<64> c = ~old;
    return ((c >> 48) & 0xffff) + ((c >> 32) & 0xffff) + ((c >> 16) & 0xffff)
        + (c & 0xffff) + ((new >> 48) & 0xffff) + ((new >> 32) & 0xffff)
        + ((new >> 16) & 0xffff) + (new & 0xffff);
}

bit<64> delta32(in bit<32> old, in bit<32> new) {
    bit<64> c = (bit<64>)(~old);
    bit<64> n = (bit<64>)new;
    return ((c >> 16) & 0xffff) + (c & 0xffff) + ((n >> 16) & 0xffff) + (n & 0xffff);
}

bit<64> delta16(in bit<16> old, in bit<16> new) {
    return (bit<64>)(~old) + (bit<64>)new;
}

bit<16> apply_delta(in bit<16> checksum, in bit<64> delta) {
    bit<64> sum = (bit<64>)(~checksum) + delta;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return ~((bit<16>)sum);
}

// Rewrites the source (source == 1) or destination address and port.
control FelixRewrite(inout headers_t hdr, in bit<1> source, in bit<64> addr_hi,
                     in bit<64> addr_lo, in bit<16> port) {
    apply {
        bit<64> addr_delta;
        if (hdr.ipv4.isValid()) {
            bit<32> old_addr = hdr.ipv4.dst_addr;
            if (source == 1) {
                old_addr = hdr.ipv4.src_addr;
            }
            bit<32> new_addr = (bit<32>)addr_lo;
            addr_delta = delta32(old_addr, new_addr);
            hdr.ipv4.hdr_checksum = apply_delta(hdr.ipv4.hdr_checksum, addr_delta);
            if (source == 1) {
                hdr.ipv4.src_addr = new_addr;
            } else {
                hdr.ipv4.dst_addr = new_addr;
            }
        } else {
            if (source == 1) {
                addr_delta = delta64(hdr.ipv6.src_addr_hi, addr_hi)
                    + delta64(hdr.ipv6.src_addr_lo, addr_lo);
                hdr.ipv6.src_addr_hi = addr_hi;
                hdr.ipv6.src_addr_lo = addr_lo;
            } else {
                addr_delta = delta64(hdr.ipv6.dst_addr_hi, addr_hi)
                    + delta64(hdr.ipv6.dst_addr_lo, addr_lo);
                hdr.ipv6.dst_addr_hi = addr_hi;
                hdr.ipv6.dst_addr_lo = addr_lo;
            }
        }
        if (hdr.tcp.isValid()) {
            bit<16> old_port = hdr.tcp.dst_port;
            if (source == 1) {
                old_port = hdr.tcp.src_port;
                hdr.tcp.src_port = port;
            } else {
                hdr.tcp.dst_port = port;
            }
            bit<64> port_delta = delta16(old_port, port);
            hdr.tcp.checksum = apply_delta(hdr.tcp.checksum, addr_delta + port_delta);
        } else if (hdr.udp.isValid()) {
            bit<16> old_port = hdr.udp.dst_port;
            if (source == 1) {
                old_port = hdr.udp.src_port;
                hdr.udp.src_port = port;
            } else {
                hdr.udp.dst_port = port;
            }
            bit<64> port_delta = delta16(old_port, port);
            if (hdr.udp.checksum != 0 || hdr.ipv6.isValid()) {
                bit<16> updated = apply_delta(hdr.udp.checksum, addr_delta + port_delta);
                if (updated == 0) {
                    updated = 0xffff;
                }
                hdr.udp.checksum = updated;
            }
        } else if (hdr.sctp.isValid()) {
            if (source == 1) {
                hdr.sctp.src_port = port;
            } else {
                hdr.sctp.dst_port = port;
            }
        }
    }
}

#endif
