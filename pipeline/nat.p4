// Architecture-neutral address and port rewriting with incremental checksum updates
// (RFC 1624: HC' = ~(~HC + ~m + m') over every changed 16-bit word). The IPv4 header
// checksum covers the addresses; TCP and UDP checksums cover them through the pseudo
// header and the ports directly. A zero UDP checksum (none, IPv4) stays zero. SCTP's
// CRC32c covers the whole packet and is left to the target's checksum offload.
#ifndef FELIX_P4_NAT_P4
#define FELIX_P4_NAT_P4

#include "headers.p4"

bit<32> complement_words32(in bit<32> v) {
    return (bit<32>)(~v[31:16]) + (bit<32>)(~v[15:0]);
}

bit<32> words32(in bit<32> v) {
    return (bit<32>)v[31:16] + (bit<32>)v[15:0];
}

bit<32> complement_words128(in bit<128> v) {
    return complement_words32(v[127:96]) + complement_words32(v[95:64])
        + complement_words32(v[63:32]) + complement_words32(v[31:0]);
}

bit<32> words128(in bit<128> v) {
    return words32(v[127:96]) + words32(v[95:64]) + words32(v[63:32]) + words32(v[31:0]);
}

bit<16> apply_delta(in bit<16> checksum, in bit<32> delta) {
    bit<32> sum = (bit<32>)(~checksum) + delta;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return ~(sum[15:0]);
}

control FelixRewrite(inout headers_t hdr, in bit<1> source, in bit<128> addr, in bit<16> port) {
    apply {
        bit<32> addr_delta;
        bit<32> port_delta = 0;
        if (hdr.ipv4.isValid()) {
            bit<32> old_addr = source == 1 ? hdr.ipv4.src_addr : hdr.ipv4.dst_addr;
            addr_delta = complement_words32(old_addr) + words32(addr[31:0]);
            hdr.ipv4.hdr_checksum = apply_delta(hdr.ipv4.hdr_checksum, addr_delta);
            if (source == 1) {
                hdr.ipv4.src_addr = addr[31:0];
            } else {
                hdr.ipv4.dst_addr = addr[31:0];
            }
        } else {
            bit<128> old_addr6 = source == 1 ? hdr.ipv6.src_addr : hdr.ipv6.dst_addr;
            addr_delta = complement_words128(old_addr6) + words128(addr);
            if (source == 1) {
                hdr.ipv6.src_addr = addr;
            } else {
                hdr.ipv6.dst_addr = addr;
            }
        }
        if (hdr.tcp.isValid()) {
            bit<16> old_port = source == 1 ? hdr.tcp.src_port : hdr.tcp.dst_port;
            port_delta = (bit<32>)(~old_port) + (bit<32>)port;
            hdr.tcp.checksum = apply_delta(hdr.tcp.checksum, addr_delta + port_delta);
            if (source == 1) {
                hdr.tcp.src_port = port;
            } else {
                hdr.tcp.dst_port = port;
            }
        } else if (hdr.udp.isValid()) {
            bit<16> old_port = source == 1 ? hdr.udp.src_port : hdr.udp.dst_port;
            port_delta = (bit<32>)(~old_port) + (bit<32>)port;
            if (hdr.udp.checksum != 0 || hdr.ipv6.isValid()) {
                bit<16> updated = apply_delta(hdr.udp.checksum, addr_delta + port_delta);
                hdr.udp.checksum = updated == 0 ? 16w0xffff : updated;
            }
            if (source == 1) {
                hdr.udp.src_port = port;
            } else {
                hdr.udp.dst_port = port;
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
