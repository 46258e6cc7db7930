// Parser and deparser: Ethernet, then ARP, IPv4 or IPv6, then TCP, UDP (and UDP-Lite), SCTP or
// ICMP/ICMPv6 (and a neighbour solicitation's target and link-layer option). IPv4 options are
// not parsed (the source check and routing only need the fixed header; options ride in the
// payload).
//
// Encapsulated packets (VXLAN over IPv4 or IPv6 to UDP port 4789, IP-in-IP) are told apart by
// looking ahead at the IP and UDP headers: their outer IP and UDP headers go into outer_*,
// the VXLAN header and the inner Ethernet header into vxlan and inner_ethernet, and the
// inner packet into the same headers a plain packet uses, so every later stage sees the
// inner packet. An encapsulated packet too short to hold an inner IP header stops after the
// outer headers. The deparser emits in parse order, so what is not changed leaves as it came.
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
            ETHERTYPE_IPV4: probe_ipv4;
            ETHERTYPE_IPV6: probe_ipv6;
            default: accept;
        }
    }
    state probe_ipv4 {
        hdr.probe4 = pkt.lookahead<probe4_t>();
        transition select(hdr.probe4.ihl, hdr.probe4.frag_offset, hdr.probe4.protocol,
                          hdr.probe4.dst_port) {
            (5, 0, IP_PROTO_UDP, VXLAN_PORT): parse_outer_ipv4_udp;
            (5, 0, IP_PROTO_IPIP, _):         parse_outer_ipv4_ipip;
            default: parse_ipv4;
        }
    }
    // Outer IPv4, UDP and VXLAN (36 bytes), then the inner Ethernet and IP headers. The
    // length guards are single power-of-two masks (a range costs P4-DPDK one metadata field
    // per prefix): they may let the parser read a few bytes past a short packet's end, and
    // FelixTunnelIn drops any encapsulated packet whose lengths do not add up.
    state parse_outer_ipv4_udp {
        pkt.extract(hdr.outer_ipv4);
        transition select(hdr.outer_ipv4.total_len) {
            0 .. 63: accept;
            default: parse_vxlan;
        }
    }
    state parse_outer_ipv4_ipip {
        pkt.extract(hdr.outer_ipv4);
        transition select(hdr.outer_ipv4.total_len) {
            0 .. 31: accept;
            default: parse_ipv4;
        }
    }
    state probe_ipv6 {
        hdr.probe6 = pkt.lookahead<probe6_t>();
        transition select(hdr.probe6.next_hdr, hdr.probe6.dst_port) {
            (IP_PROTO_UDP, VXLAN_PORT): parse_outer_ipv6_udp;
            default: parse_ipv6;
        }
    }
    // UDP and VXLAN (16 bytes), the inner Ethernet and IP headers.
    state parse_outer_ipv6_udp {
        pkt.extract(hdr.outer_ipv6);
        transition select(hdr.outer_ipv6.payload_len) {
            0 .. 31: accept;
            default: parse_vxlan;
        }
    }
    state parse_vxlan {
        pkt.extract(hdr.outer_udp);
        pkt.extract(hdr.vxlan);
        pkt.extract(hdr.inner_ethernet);
        transition select(hdr.inner_ethernet.ether_type) {
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

// Only packet headers are emitted, in parse order; the probes and scratch headers never
// leave the pipeline.
control FelixDeparser(packet_out pkt, in headers_t hdr) {
    apply {
        pkt.emit(hdr.ethernet);
        pkt.emit(hdr.outer_ipv4);
        pkt.emit(hdr.outer_ipv6);
        pkt.emit(hdr.outer_udp);
        pkt.emit(hdr.vxlan);
        pkt.emit(hdr.inner_ethernet);
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
