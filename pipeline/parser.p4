// Parser and deparser: Ethernet, then ARP, IPv4 or IPv6. IPv4 options are not parsed
// (the source check and routing only need the fixed header; options ride in the payload).
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
    // L4 is parsed only for first fragments without IPv4 options; other packets reach
    // policy with ports and ICMP fields zero.
    state parse_ipv4 {
        pkt.extract(hdr.ipv4);
        transition select(hdr.ipv4.ihl, hdr.ipv4.frag_offset, hdr.ipv4.protocol) {
            (5, 0, IP_PROTO_TCP):  parse_tcp;
            (5, 0, IP_PROTO_UDP):  parse_udp;
            (5, 0, IP_PROTO_SCTP): parse_sctp;
            (5, 0, IP_PROTO_UDPLITE): parse_udp;
            (5, 0, IP_PROTO_ICMP): parse_icmp;
            default: accept;
        }
    }
    state parse_ipv6 {
        pkt.extract(hdr.ipv6);
        transition select(hdr.ipv6.next_hdr) {
            IP_PROTO_TCP:    parse_tcp;
            IP_PROTO_UDP:    parse_udp;
            IP_PROTO_SCTP:   parse_sctp;
            IP_PROTO_UDPLITE: parse_udp;
            IP_PROTO_ICMPV6: parse_icmp;
            default: accept;
        }
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
    }
}

#endif
