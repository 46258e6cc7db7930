// Packet headers, the scratch headers the stages key on, and the per-packet metadata.
//
// P4-DPDK (DPDK's SWX pipeline) addresses a field as (struct, byte offset) with the offset in
// 8 bits: no field of any struct may start past byte 255, compiler temporaries included, and a
// table's key must lie in one struct. So the metadata holds only small control state, and
// what the stages key on lives in scratch headers that are never emitted, laid out so each
// table's key is contiguous in one of them (no key copies into the metadata). Checksum
// updates read their operands from headers (network byte order, as SWX's ckadd/cksub need).
#ifndef FELIX_P4_HEADERS_P4
#define FELIX_P4_HEADERS_P4

const bit<16> ETHERTYPE_IPV4 = 0x0800;
const bit<16> ETHERTYPE_ARP  = 0x0806;
const bit<16> ETHERTYPE_IPV6 = 0x86dd;

const bit<16> ARP_HTYPE_ETHERNET = 1;
const bit<16> ARP_OPER_REQUEST   = 1;
const bit<16> ARP_OPER_REPLY     = 2;

// What port_classify learned about the ingress port.
const bit<8> PORT_KIND_UNKNOWN  = 0;
const bit<8> PORT_KIND_WORKLOAD = 1;
const bit<8> PORT_KIND_HOST     = 2;
const bit<8> PORT_KIND_UPLINK   = 3;  // the node's network port
const bit<8> PORT_KIND_TUNNEL   = 4;  // decapsulated: arrived on the uplink from another node

// What the route chose (meta.route_kind).
const bit<8> ROUTE_NONE      = 0;
const bit<8> ROUTE_WORKLOAD  = 1;  // a local pod
const bit<8> ROUTE_HOST      = 2;  // the host's stack (its addresses, off-cluster destinations)
const bit<8> ROUTE_VXLAN     = 3;  // another node's pods over VXLAN
const bit<8> ROUTE_IPIP      = 4;  // another node's pods over IP-in-IP
const bit<8> ROUTE_NODE      = 5;  // another node's pods, unencapsulated (no-encap, CrossSubnet)
const bit<8> ROUTE_BLACKHOLE = 6;  // an unused address of this node's blocks

// Encapsulations (the tunnel_sources key's kind).
const bit<8> TUNNEL_VXLAN = 1;
const bit<8> TUNNEL_IPIP  = 2;
// Felix's VXLANPort default; the parser recognises VXLAN by it (a parser cannot select on
// a runtime value), so the driver refuses another VXLANPort.
const bit<16> VXLAN_PORT = 4789;
const bit<8>  VXLAN_FLAG_VNI = 0x08;

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
    // Version, traffic class and flow label: one field, as P4-DPDK lays them out anyway (it
    // merges fields into whole bytes), so a checksum can add the two words they make.
    bit<32>  version_class_label;
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

// ICMPv6 neighbour solicitation / advertisement after the ICMP header: flags (NA: router,
// solicited, override) and reserved bits, then the target address.
header nd_t {
    bit<32> flags;
    bit<64> target_hi;
    bit<64> target_lo;
}

// The link-layer address option of an NS (source, type 1) or NA (target, type 2).
header nd_option_t {
    bit<8>  type;
    bit<8>  length;  // in units of 8 bytes: 1 for Ethernet
    bit<48> mac;
}

// An outer IPv4 header, as the pipeline builds it: whole bytes only (P4-DPDK merges sub-byte
// fields anyway; writing them one by one would cost a temporary each).
header outer_ipv4_t {
    bit<8>  version_ihl;
    bit<8>  diffserv;
    bit<16> total_len;
    bit<16> identification;
    bit<16> flags_frag_offset;
    bit<8>  ttl;
    bit<8>  protocol;
    bit<16> hdr_checksum;
    bit<32> src_addr;
    bit<32> dst_addr;
}

header vxlan_t {
    bit<8>  flags;
    bit<24> reserved;
    bit<24> vni;
    bit<8>  reserved2;
}

// Looked ahead (never extracted) to tell an encapsulated packet from a plain one before the
// parser commits to which headers the IP header goes into: the IPv4 header and the UDP ports.
header probe4_t {
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
    bit<16> src_port;
    bit<16> dst_port;
}

// The same for IPv6 (no extension headers): the fixed header and the UDP ports.
header probe6_t {
    bit<32> version_class_label;
    bit<16> payload_len;
    bit<8>  next_hdr;
    bit<8>  hop_limit;
    bit<64> src_addr_hi;
    bit<64> src_addr_lo;
    bit<64> dst_addr_hi;
    bit<64> dst_addr_lo;
    bit<16> src_port;
    bit<16> dst_port;
}

// --- scratch headers (set valid by the control, never emitted) ----------------------------

// The flow as the stages see it: after DNAT for requests, after the reply translation for
// replies. Addresses in 64-bit halves, IPv4 in the low half. The field order makes it the key
// of the flow-keyed learners (service_flows, service_replies, conntrack) when filled in their
// key order.
header flow_t {
    bit<8>  ip_version;
    bit<8>  proto;
    bit<64> src_hi;
    bit<64> src_lo;
    bit<16> src_port;
    bit<64> dst_hi;
    bit<64> dst_lo;
    bit<16> dst_port;
}

// Key of a flow-keyed learner, filled from flow_t (or reversed, or ordered) before a lookup.
header flow_key_t {
    bit<8>  ip_version;
    bit<8>  proto;
    bit<64> a_hi;
    bit<64> a_lo;
    bit<16> a_port;
    bit<64> b_hi;
    bit<64> b_lo;
    bit<16> b_port;
}

// Key of services and of the named-port set tables: (version, address, protocol, port).
header port_key_t {
    bit<8>  ip_version;
    bit<64> addr_hi;
    bit<64> addr_lo;
    bit<8>  proto;
    bit<16> port;
}

// Key of the source check (port, then the source in the family's form) and of the routes and
// IP-set classification tables (an address in the family's form).
header addr_key_t {
    bit<32> port;
    bit<32> src4;
    bit<64> src_hi;
    bit<64> src_lo;
    bit<32> dst4;
    bit<64> dst_hi;
    bit<64> dst_lo;
}

// Key of the policy stages: the program, then what its rules match on.
header rule_key_t {
    bit<16> program;
    bit<8>  ip_version;
    bit<8>  proto;
    bit<64> src_sets_hi;
    bit<64> src_sets_lo;
    bit<64> dst_sets_hi;
    bit<64> dst_sets_lo;
    bit<16> src_port;
    bit<16> dst_port;
    bit<8>  icmp_type;
    bit<8>  icmp_code;
}

// Key of service_affinity: (version, client, service).
header affinity_key_t {
    bit<8>  ip_version;
    bit<64> client_hi;
    bit<64> client_lo;
    bit<32> service;
}

// What the final rewrite writes into the packet (network byte order: the checksum updates read
// these fields): the new source when meta.rewrite_src, the new destination when
// meta.rewrite_dst (IPv4 in the low halves and in src4/dst4), and the hairpin source a
// service hit carries.
header nat_t {
    bit<64> src_hi;
    bit<64> src_lo;
    bit<16> src_port;
    bit<64> dst_hi;
    bit<64> dst_lo;
    bit<16> dst_port;
    bit<64> hairpin_hi;
    bit<64> hairpin_lo;
    bit<32> src4;
    bit<32> dst4;
}

// The node's own addresses for tunnels and bridging (the node table's one entry).
header node_t {
    bit<48> node_mac;     // the host's MAC: outer source, destination of what goes to the host
    bit<48> vtep_mac;     // this node's VXLAN MACs (IPv4 and IPv6 tunnels)
    bit<48> vtep_mac6;
    bit<32> ip4;          // this node's addresses: outer source, where tunnels end
    bit<64> ip6_hi;
    bit<64> ip6_lo;
    bit<24> vni;
}

// Tunnels: the tunnel_sources key (kind, version, outer source), then the next_hops key
// (version, address), then what encapsulation writes. The w_* words carry 8-bit values into
// 16-bit checksum operands (P4-DPDK adds a field as 16-bit words from its start).
header tunnel_t {
    bit<8>  kind;
    bit<8>  ip_version;
    bit<64> src_hi;
    bit<64> src_lo;
    bit<8>  hop_version;
    bit<64> hop_hi;
    bit<64> hop_lo;
    bit<32> hop4;         // the same IPv4 address, for the outer header
    bit<48> vtep_mac;     // the remote VTEP's MAC: the inner destination
    bit<16> csum_seed;    // the outer checksum for the route's constant words (see tunnel.p4)
    bit<16> w_hop;        // inner IPv6 hop limit
    bit<16> w_next;       // inner IPv6 next header
    bit<16> inner_len;    // the inner IP packet's length as its header claims
}

struct headers_t {
    ethernet_t     ethernet;
    outer_ipv4_t   outer_ipv4;
    ipv6_t         outer_ipv6;
    udp_t          outer_udp;
    vxlan_t        vxlan;
    ethernet_t     inner_ethernet;
    probe4_t       probe4;
    probe6_t       probe6;
    arp_t          arp;
    ipv4_t         ipv4;
    ipv6_t         ipv6;
    tcp_t          tcp;
    udp_t          udp;
    sctp_t         sctp;
    icmp_t         icmp;
    nd_t           nd;
    nd_option_t    nd_option;
    flow_t         flow;
    flow_key_t     flow_key;
    port_key_t     port_key;
    addr_key_t     addr_key;
    rule_key_t     rule_key;
    affinity_key_t affinity_key;
    nat_t          nat;
    node_t         node;
    tunnel_t       tunnel;
}

const bit<8> IP_PROTO_ICMP   = 1;
const bit<8> IP_PROTO_IPIP   = 4;
const bit<8> IP_PROTO_TCP    = 6;
const bit<8> IP_PROTO_UDP    = 17;
const bit<8> IP_PROTO_ICMPV6 = 58;
const bit<8> IP_PROTO_SCTP   = 132;
const bit<8> IP_PROTO_UDPLITE = 136;

const bit<8> ICMP6_NEIGHBOR_SOLICIT = 135;
const bit<8> ICMP6_NEIGHBOR_ADVERT  = 136;
const bit<8> ND_OPTION_SOURCE_LL    = 1;
const bit<8> ND_OPTION_TARGET_LL    = 2;
// Router, solicited and override: the gateway answering for itself.
const bit<32> ND_ADVERT_FLAGS = 0xe0000000;

// Policy verdict of one direction.
const bit<8> VERDICT_NONE  = 0;
const bit<8> VERDICT_ALLOW = 1;
const bit<8> VERDICT_DENY  = 2;

// Expiry profiles of learned entries: indexes into P4-DPDK's learner timeouts, whose seconds
// the target sets (p4c-dpdk's defaults: 10, 30, 60, 120, 300, 43200, 120, 120; the embedded
// target sets profile 6 to the affinity timeout). felix_p4/pipeline declares the same table.
const bit<8> PROFILE_OTHER    = 1;  // 30 s
const bit<8> PROFILE_UDP      = 3;  // 120 s
const bit<8> PROFILE_TCP      = 5;  // 43200 s
const bit<8> PROFILE_AFFINITY = 6;  // Kubernetes' ClientIP timeout, 10800 s by default

// Control state only (see the top of this file). The hash comes first: SWX's hash
// instruction needs its destination within the first 32 bytes of the metadata.
struct metadata_t {
    bit<16> hash;
    bit<32> in_port;
    bit<8>  port_kind;
    bit<8>  drop;
    bit<8>  answered;       // an ARP or neighbour solicitation answered: back out, no more
    bit<48> gateway_mac;
    bit<16> egress_program;
    bit<16> ingress_program;
    bit<8>  verdict;
    bit<8>  egress_ok;
    bit<8>  ingress_ok;
    bit<8>  l4;             // the packet has a parsed TCP/UDP/SCTP header
    // Services: the front end hit, its backends, and what replies translate back.
    bit<8>  is_service;
    bit<8>  reply_nat;
    bit<8>  hairpin;
    bit<8>  rewrite_src;
    bit<8>  rewrite_dst;
    bit<8>  policy_allowed;
    bit<8>  src_first;      // the flow's source is the lower end of its conntrack key
    bit<8>  affinity;
    bit<8>  profile;
    bit<32> service_group;
    bit<16> bucket;
    bit<16> bucket_mask;
    // Tunnels and the uplink.
    bit<8>  route_kind;
    bit<8>  routed;         // a hop of ours: the TTL goes down
    bit<8>  bridge;         // the host's own traffic to or from the network: passed through
    bit<8>  encapsulate;
    bit<8>  translated;     // a service's request or reply: never bridged
}

#endif
