// Packet headers and per-packet metadata shared by every architecture wrapper.
#ifndef FELIX_P4_HEADERS_P4
#define FELIX_P4_HEADERS_P4

const bit<16> ETHERTYPE_IPV4 = 0x0800;
const bit<16> ETHERTYPE_ARP  = 0x0806;
const bit<16> ETHERTYPE_IPV6 = 0x86dd;

const bit<16> ARP_HTYPE_ETHERNET = 1;
const bit<16> ARP_OPER_REQUEST   = 1;
const bit<16> ARP_OPER_REPLY     = 2;

// What port_classify learned about the ingress port.
const bit<2> PORT_KIND_UNKNOWN  = 0;
const bit<2> PORT_KIND_WORKLOAD = 1;
const bit<2> PORT_KIND_HOST     = 2;

header ethernet_t {
    bit<48> dst_addr;
    bit<48> src_addr;
    bit<16> ether_type;
}

header arp_t {
    bit<16> htype;
    bit<16> ptype;
    bit<8>  hlen;
    bit<8>  plen;
    bit<16> oper;
    bit<48> sha;
    bit<32> spa;
    bit<48> tha;
    bit<32> tpa;
}

header ipv4_t {
    bit<4>  version;
    bit<4>  ihl;
    bit<8>  diffserv;
    bit<16> total_len;
    bit<16> identification;
    bit<3>  flags;
    bit<13> frag_offset;
    bit<8>  ttl;
    bit<8>  protocol;
    bit<16> hdr_checksum;
    bit<32> src_addr;
    bit<32> dst_addr;
}

header ipv6_t {
    bit<4>   version;
    bit<8>   traffic_class;
    bit<20>  flow_label;
    bit<16>  payload_len;
    bit<8>   next_hdr;
    bit<8>   hop_limit;
    // 128-bit addresses as two 64-bit halves: P4-DPDK operates on at most 64 bits.
    bit<64>  src_addr_hi;
    bit<64>  src_addr_lo;
    bit<64>  dst_addr_hi;
    bit<64>  dst_addr_lo;
}

header tcp_t {
    bit<16> src_port;
    bit<16> dst_port;
    bit<32> seq_no;
    bit<32> ack_no;
    bit<4>  data_offset;
    bit<4>  res;
    bit<8>  flags;
    bit<16> window;
    bit<16> checksum;
    bit<16> urgent_ptr;
}

// UDP and UDP-Lite: ports, length (coverage for UDP-Lite), checksum.
header udp_t {
    bit<16> src_port;
    bit<16> dst_port;
    bit<16> length;
    bit<16> checksum;
}

// SCTP common header: its CRC32c checksum covers the whole packet.
header sctp_t {
    bit<16> src_port;
    bit<16> dst_port;
    bit<32> verification_tag;
    bit<32> checksum;
}

header icmp_t {
    bit<8>  icmp_type;
    bit<8>  icmp_code;
    bit<16> checksum;
}

struct headers_t {
    ethernet_t ethernet;
    arp_t      arp;
    ipv4_t     ipv4;
    ipv6_t     ipv6;
    tcp_t      tcp;
    udp_t      udp;
    sctp_t     sctp;
    icmp_t     icmp;
}

const bit<8> IP_PROTO_ICMP   = 1;
const bit<8> IP_PROTO_TCP    = 6;
const bit<8> IP_PROTO_UDP    = 17;
const bit<8> IP_PROTO_ICMPV6 = 58;
const bit<8> IP_PROTO_SCTP   = 132;
const bit<8> IP_PROTO_UDPLITE = 136;

// Policy verdict of one direction.
const bit<2> VERDICT_NONE  = 0;
const bit<2> VERDICT_ALLOW = 1;
const bit<2> VERDICT_DENY  = 2;

// IP-set membership bitmaps: one bit per set a rule uses, per direction, in two 64-bit
// words (128 sets per direction).
// Conntrack expiry profiles (seconds are a target setting; see pipeline/README.md).
const bit<8> CT_PROFILE_TCP   = 1;
const bit<8> CT_PROFILE_UDP   = 2;
const bit<8> CT_PROFILE_OTHER = 3;

// Architecture wrappers fill in_port before the shared controls run and act on drop after
// them. Every 128-bit quantity is split into _hi and _lo halves (P4-DPDK works on at most
// 64 bits); IPv4 addresses sit in the _lo half with _hi zero.
struct metadata_t {
    bit<32> in_port;
    bit<2>  port_kind;
    bit<48> gateway_mac;
    bit<1>  drop;
    bit<32> egress_port;
    // L3/L4 summary.
    bit<8>  ip_version;
    bit<8>  l4_proto;
    bit<64> src_addr_hi;
    bit<64> src_addr_lo;
    bit<64> dst_addr_hi;
    bit<64> dst_addr_lo;
    bit<16> src_port;
    bit<16> dst_port;
    bit<8>  icmp_type;
    bit<8>  icmp_code;
    // IP-set classification.
    bit<64> src_sets_hi;
    bit<64> src_sets_lo;
    bit<64> dst_sets_hi;
    bit<64> dst_sets_lo;
    // Services: the front end hit, the backend chosen, and what replies translate back.
    bit<1>  is_service;
    bit<32> service_group;
    bit<32> service_id;
    bit<32> affinity_seconds;
    bit<64> nat_addr_hi;
    bit<64> nat_addr_lo;
    bit<16> nat_port;
    bit<1>  hairpin;
    bit<64> hairpin_addr_hi;
    bit<64> hairpin_addr_lo;
    bit<1>  reply_nat;
    bit<1>  learn_reverse;
    bit<64> rev_src_addr_hi;
    bit<64> rev_src_addr_lo;
    bit<16> rev_src_port;
    bit<64> rev_dst_addr_hi;
    bit<64> rev_dst_addr_lo;
    bit<16> rev_dst_port;
    // Policy programs of the sending and the receiving local workload (0: none).
    bit<16> egress_program;
    bit<16> ingress_program;
    bit<16> policy_program;
    bit<2>  verdict;
    bit<1>  policy_allowed;
    // The flow as conntrack sees it: after DNAT for requests, before translation back (but
    // with the client restored) for replies, so both directions share one entry.
    bit<64> ct_view_src_hi;
    bit<64> ct_view_src_lo;
    bit<16> ct_view_src_port;
    bit<64> ct_view_dst_hi;
    bit<64> ct_view_dst_lo;
    bit<16> ct_view_dst_port;
    // Direction-independent connection key: end "a" is the lower (address, port).
    bit<64> ct_a_hi;
    bit<64> ct_a_lo;
    bit<16> ct_a_port;
    bit<64> ct_b_hi;
    bit<64> ct_b_lo;
    bit<16> ct_b_port;
    bit<8>  ct_timeout;
}

#endif
