// Parser and deparser: Ethernet, then ARP, IPv4 or IPv6, then TCP, UDP (and UDP-Lite), SCTP or
// ICMP/ICMPv6 (and a neighbour solicitation's target and link-layer option). IPv4 options are
// not parsed (the source check and routing only need the fixed header; options ride in the
// payload).
//
// An L4 header is extracted only when the IP header says it is there: a first fragment without
// options whose total length (IPv4) or payload length (IPv6) covers it. P4-DPDK's extract does
// not check the frame's length, so the program must not extract what the packet does not
// claim to carry; other packets reach policy with ports and ICMP fields zero.
#ifndef FELIX_P4_PARSER_P4
#define FELIX_P4_PARSER_P4

#include "headers.p4"

parser FelixParser(packet_in pkt, out headers_t hdr) {
    state start {
        pkt.extract(hdr.ethernet);
        transition select(hdr.ethernet.ether_type) {
            ETHERTYPE_ARP:  parse_arp;
            ETHERTYPE_IPV4: parse_ipv4;
            ETHERTYPE_IPV6: parse_ipv6;
            default: accept;
        }
    }
    state parse_arp {
        pkt.extract(hdr.arp);
        transition accept;
    }
    state parse_ipv4 {
        pkt.extract(hdr.ipv4);
        transition select(hdr.ipv4.ihl, hdr.ipv4.frag_offset, hdr.ipv4.protocol) {
            (5, 0, IP_PROTO_TCP):     ipv4_tcp;
            (5, 0, IP_PROTO_UDP):     ipv4_udp;
            (5, 0, IP_PROTO_UDPLITE): ipv4_udp;
            (5, 0, IP_PROTO_SCTP):    ipv4_sctp;
            (5, 0, IP_PROTO_ICMP):    ipv4_icmp;
            default: accept;
        }
    }
    // IPv4 total length covers the 20-byte header and the L4 header.
    state ipv4_tcp {
        transition select(hdr.ipv4.total_len) {
            0 .. 39: accept;
            default: parse_tcp;
        }
    }
    state ipv4_udp {
        transition select(hdr.ipv4.total_len) {
            0 .. 27: accept;
            default: parse_udp;
        }
    }
    state ipv4_sctp {
        transition select(hdr.ipv4.total_len) {
            0 .. 31: accept;
            default: parse_sctp;
        }
    }
    state ipv4_icmp {
        transition select(hdr.ipv4.total_len) {
            0 .. 23: accept;
            default: parse_icmp;
        }
    }
    state parse_ipv6 {
        pkt.extract(hdr.ipv6);
        transition select(hdr.ipv6.next_hdr) {
            IP_PROTO_TCP:     ipv6_tcp;
            IP_PROTO_UDP:     ipv6_udp;
            IP_PROTO_UDPLITE: ipv6_udp;
            IP_PROTO_SCTP:    ipv6_sctp;
            IP_PROTO_ICMPV6:  ipv6_icmp;
            default: accept;
        }
    }
    // IPv6 payload length covers the L4 header.
    state ipv6_tcp {
        transition select(hdr.ipv6.payload_len) {
            0 .. 19: accept;
            default: parse_tcp;
        }
    }
    state ipv6_udp {
        transition select(hdr.ipv6.payload_len) {
            0 .. 7: accept;
            default: parse_udp;
        }
    }
    state ipv6_sctp {
        transition select(hdr.ipv6.payload_len) {
            0 .. 11: accept;
            default: parse_sctp;
        }
    }
    state ipv6_icmp {
        transition select(hdr.ipv6.payload_len) {
            0 .. 3: accept;
            default: parse_icmpv6;
        }
    }
    // A neighbour solicitation: its target, and its source link-layer option when the
    // payload length says one follows (24 bytes without, 32 with).
    state parse_icmpv6 {
        pkt.extract(hdr.icmp);
        transition select(hdr.icmp.icmp_type, hdr.icmp.icmp_code, hdr.ipv6.payload_len) {
            (ICMP6_NEIGHBOR_SOLICIT, 0, 24): parse_nd;
            (ICMP6_NEIGHBOR_SOLICIT, 0, 32): parse_nd_option;
            default: accept;
        }
    }
    state parse_nd {
        pkt.extract(hdr.nd);
        transition accept;
    }
    state parse_nd_option {
        pkt.extract(hdr.nd);
        pkt.extract(hdr.nd_option);
        transition accept;
    }
    state parse_tcp {
        pkt.extract(hdr.tcp);
        transition accept;
    }
    state parse_udp {
        pkt.extract(hdr.udp);
        transition accept;
    }
    state parse_sctp {
        pkt.extract(hdr.sctp);
        transition accept;
    }
    state parse_icmp {
        pkt.extract(hdr.icmp);
        transition accept;
    }
}

// Only packet headers are emitted; the scratch headers never leave the pipeline.
control FelixDeparser(packet_out pkt, in headers_t hdr) {
    apply {
        pkt.emit(hdr.ethernet);
        pkt.emit(hdr.arp);
        pkt.emit(hdr.ipv4);
        pkt.emit(hdr.ipv6);
        pkt.emit(hdr.tcp);
        pkt.emit(hdr.udp);
        pkt.emit(hdr.sctp);
        pkt.emit(hdr.icmp);
        pkt.emit(hdr.nd);
        pkt.emit(hdr.nd_option);
    }
}

#endif
