// Other nodes: the node's own addresses, VXLAN and IP-in-IP decapsulation of what arrives on
// the uplink, encapsulation of what goes to another node's pods, next hops, and the bridge
// between the host's stack and the network. Architecture-neutral apart from SEND_TO_PORT.
//
// Checksums of the headers built here: the control plane passes, per route, the checksum of
// the outer header's constant words (csum_seed: addresses, protocol, VNI, MACs); the packet adds
// what varies (lengths, the UDP source port, and for IPv6 the inner header words). An outer
// IPv4 UDP checksum is zero (allowed; Linux sends VXLAN over IPv4 so). IPv6 requires one and it
// covers the whole inner frame: the inner L4 checksum already makes the inner segment sum to
// minus its pseudo header, so the inner addresses and length cancel out and only the inner
// IPv6 header's first two words, next header and hop limit remain. That holds for inner TCP,
// UDP and ICMPv6 with complete checksums and no extension headers.
#ifndef FELIX_P4_TUNNEL_P4
#define FELIX_P4_TUNNEL_P4

#include "headers.p4"

#ifndef SEND_TO_PORT
#error "the architecture wrapper must define SEND_TO_PORT(port)"
#endif

// Runs after FelixPort: loads the node's addresses and takes apart what other nodes sent.
control FelixTunnelIn(inout headers_t hdr, inout metadata_t meta) {

    @id(0x01000060) @name(".node_config")
    action node_config(@id(1) bit<48> node_mac, @id(2) bit<48> vtep_mac,
                       @id(3) bit<48> vtep_mac6, @id(4) bit<32> ip4, @id(5) bit<64> ip6_hi,
                       @id(6) bit<64> ip6_lo, @id(7) bit<24> vni) {
        hdr.node.node_mac = node_mac;
        hdr.node.vtep_mac = vtep_mac;
        hdr.node.vtep_mac6 = vtep_mac6;
        hdr.node.ip4 = ip4;
        hdr.node.ip6_hi = ip6_hi;
        hdr.node.ip6_lo = ip6_lo;
        hdr.node.vni = vni;
    }

    // One entry, the default: until the driver writes it the node has no tunnels.
    @id(0x02000060) @name(".node")
    table node {
        actions = { node_config; }
        default_action = node_config(0, 0, 0, 0, 0, 0, 0);
        size = 1;
    }

    @id(0x01000061) @name(".allow_tunnel")
    action allow_tunnel() {
    }

    @id(0x01000062) @name(".deny_tunnel")
    action deny_tunnel() {
        meta.drop = 1;
    }

    // Who may send us tunnelled packets: for VXLAN the other nodes' VTEPs, for IP-in-IP the
    // other nodes' addresses, and for both Felix's ExternalNodesCIDRList (as a Calico node's
    // own filter does). Prefixes are ternary halves with the prefix length + 1 as priority.
    @id(0x02000061) @name(".tunnel_sources")
    table tunnel_sources {
        key = {
            hdr.tunnel.kind       : exact   @id(1) @name("kind");
            hdr.tunnel.ip_version : exact   @id(2) @name("ip_version");
            hdr.tunnel.src_hi     : ternary @id(3) @name("src_hi");
            hdr.tunnel.src_lo     : ternary @id(4) @name("src_lo");
        }
        actions = { allow_tunnel; @defaultonly deny_tunnel; }
        const default_action = deny_tunnel;
        size = 16384;
    }

    // What remains of the frame is the inner packet behind the outer Ethernet header (which
    // routing rewrites), as if it had arrived on a port of its own.
    @id(0x0100006a) @name(".decapsulate")
    action decapsulate() {
        hdr.outer_ipv4.setInvalid();
        hdr.outer_ipv6.setInvalid();
        hdr.outer_udp.setInvalid();
        hdr.vxlan.setInvalid();
        hdr.inner_ethernet.setInvalid();
        meta.port_kind = PORT_KIND_TUNNEL;
    }

    apply {
        hdr.node.setValid();
        hdr.tunnel.setValid();
        node.apply();
        // (No early returns and simple conditions: each `return` costs P4-DPDK a metadata
        // byte, and its logical-expression unrolling fails on a negation left of `&&`.)
        if (hdr.outer_ipv4.isValid() || hdr.outer_ipv6.isValid()) {
            if (meta.port_kind != PORT_KIND_UPLINK) {
                // UDP to the VXLAN port or IP-in-IP from a pod or the host: not forwarded.
                meta.drop = 1;
            }
            // The outer length must be the inner packet's plus what encapsulates it (the
            // parser may have read past a short packet; see parser.p4).
            if (hdr.ipv4.isValid()) {
                hdr.tunnel.inner_len = hdr.ipv4.total_len;
            } else if (hdr.ipv6.isValid()) {
                hdr.tunnel.inner_len = hdr.ipv6.payload_len + 40;
            }
            if (hdr.ipv4.isValid() || hdr.ipv6.isValid()) {
                if (hdr.vxlan.isValid()) {
                    if (hdr.outer_ipv4.isValid()) {
                        if (hdr.outer_ipv4.total_len != hdr.tunnel.inner_len + 50) {
                            meta.drop = 1;
                        }
                    } else if (hdr.outer_ipv6.payload_len != hdr.tunnel.inner_len + 30) {
                        meta.drop = 1;
                    }
                } else if (hdr.outer_ipv4.total_len != hdr.tunnel.inner_len + 20) {
                    meta.drop = 1;
                }
            }
            // Addressed to another host on the network: the host's business.
            meta.bridge = 1;
            if (hdr.outer_ipv4.isValid()) {
                if (hdr.node.ip4 != 0) {
                    if (hdr.outer_ipv4.dst_addr == hdr.node.ip4) {
                        meta.bridge = 0;
                    }
                }
            } else if (hdr.outer_ipv6.dst_addr_hi == hdr.node.ip6_hi) {
                if (hdr.outer_ipv6.dst_addr_lo == hdr.node.ip6_lo) {
                    if (hdr.node.ip6_hi != 0) {
                        meta.bridge = 0;
                    } else if (hdr.node.ip6_lo != 0) {
                        meta.bridge = 0;
                    }
                }
            }
            if (meta.drop == 0 && meta.bridge == 0) {
                if (hdr.outer_ipv4.isValid()) {
                    hdr.tunnel.ip_version = 4;
                    hdr.tunnel.src_hi = 0;
                    hdr.tunnel.src_lo = (bit<64>)hdr.outer_ipv4.src_addr;
                } else {
                    hdr.tunnel.ip_version = 6;
                    hdr.tunnel.src_hi = hdr.outer_ipv6.src_addr_hi;
                    hdr.tunnel.src_lo = hdr.outer_ipv6.src_addr_lo;
                }
                if (hdr.vxlan.isValid()) {
                    hdr.tunnel.kind = TUNNEL_VXLAN;
                } else {
                    hdr.tunnel.kind = TUNNEL_IPIP;
                }
                if (hdr.ipv4.isValid() || hdr.ipv6.isValid()) {
                    tunnel_sources.apply();
                } else {
                    // Ours but cut short before the inner IP header: nothing to deliver.
                    meta.drop = 1;
                }
            }
            if (meta.drop == 0 && meta.bridge == 0) {
                if (hdr.vxlan.isValid()) {
                    // Linux's VXLAN device takes only its VNI, and only frames for its MAC.
                    if (hdr.vxlan.flags != VXLAN_FLAG_VNI) {
                        meta.drop = 1;
                    } else if (hdr.vxlan.vni != hdr.node.vni) {
                        meta.drop = 1;
                    } else if (hdr.outer_ipv4.isValid()) {
                        if (hdr.inner_ethernet.dst_addr != hdr.node.vtep_mac) {
                            meta.drop = 1;
                        }
                    } else if (hdr.inner_ethernet.dst_addr != hdr.node.vtep_mac6) {
                        meta.drop = 1;
                    }
                    hdr.ethernet.ether_type = hdr.inner_ethernet.ether_type;
                }
            }
            if (meta.drop == 0 && meta.bridge == 0) {
                decapsulate();
            }
        }
    }
}

// Runs last, on what is to leave: the bridge between the host and the network, and the next
// hop (with encapsulation) for what goes to another node.
control FelixTunnelOut(inout headers_t hdr, inout metadata_t meta) {

    // The host's own traffic passes between the host port and the uplink unchanged.
    @id(0x01000063) @name(".bridge_to")
    action bridge_to(@id(1) bit<32> port) {
        SEND_TO_PORT(port);
    }

    @id(0x01000064) @name(".no_bridge")
    action no_bridge() {
        meta.drop = 1;
    }

    @id(0x02000062) @name(".peer_ports")
    table peer_ports {
        key = {
            meta.in_port : exact @id(1) @name("port");
        }
        actions = { bridge_to; @defaultonly no_bridge; }
        const default_action = no_bridge;
        size = 64;
    }

    // The MAC of the next hop towards another node (the node itself on the same network,
    // else the router the host's table names), and the port it is behind.
    @id(0x01000065) @name(".set_next_hop")
    action set_next_hop(@id(1) bit<48> dmac, @id(2) bit<32> port) {
        hdr.ethernet.dst_addr = dmac;
        hdr.ethernet.src_addr = hdr.node.node_mac;
        SEND_TO_PORT(port);
    }

    @id(0x01000066) @name(".no_next_hop")
    action no_next_hop() {
        meta.drop = 1;
    }

    @id(0x02000063) @name(".next_hops")
    table next_hops {
        key = {
            hdr.tunnel.hop_version : exact @id(1) @name("ip_version");
            hdr.tunnel.hop_hi      : exact @id(2) @name("addr_hi");
            hdr.tunnel.hop_lo      : exact @id(3) @name("addr_lo");
        }
        actions = { set_next_hop; @defaultonly no_next_hop; }
        const default_action = no_next_hop;
        size = 16384;
    }

    InternetChecksum() outer_sum;

    apply {
        if (meta.bridge == 1) {
            peer_ports.apply();
        } else if (meta.route_kind == ROUTE_VXLAN || meta.route_kind == ROUTE_IPIP
                   || meta.route_kind == ROUTE_NODE) {
            next_hops.apply();
        }
        // What is left to build: the encapsulation of a packet with a next hop.
        meta.encapsulate = 0;
        if (meta.drop == 0 && meta.bridge == 0) {
            meta.encapsulate = 1;
        }
        if (meta.encapsulate == 1 && meta.route_kind == ROUTE_IPIP) {
            hdr.outer_ipv4.setValid();
            hdr.outer_ipv4.protocol = IP_PROTO_IPIP;
            hdr.outer_ipv4.total_len = hdr.ipv4.total_len + 20;
        } else if (meta.encapsulate == 1 && meta.route_kind == ROUTE_VXLAN) {
            hdr.inner_ethernet.setValid();
            hdr.inner_ethernet.dst_addr = hdr.tunnel.vtep_mac;
            hdr.inner_ethernet.ether_type = hdr.ethernet.ether_type;
            hdr.outer_udp.setValid();
            hdr.outer_udp.src_port = (hdr.flow.src_port ^ hdr.flow.dst_port) | 0xc000;
            hdr.outer_udp.dst_port = VXLAN_PORT;
            hdr.vxlan.setValid();
            hdr.vxlan.flags = VXLAN_FLAG_VNI;
            hdr.vxlan.reserved = 0;
            hdr.vxlan.vni = hdr.node.vni;
            hdr.vxlan.reserved2 = 0;
            // UDP, VXLAN, the inner Ethernet header and the inner IP packet.
            if (hdr.ipv4.isValid()) {
                hdr.outer_udp.length = hdr.ipv4.total_len + 30;
            } else {
                hdr.outer_udp.length = hdr.ipv6.payload_len + 70;
            }
            if (hdr.tunnel.hop_version == 4) {
                hdr.inner_ethernet.src_addr = hdr.node.vtep_mac;
                hdr.ethernet.ether_type = ETHERTYPE_IPV4;
                hdr.outer_udp.checksum = 0;
                hdr.outer_ipv4.setValid();
                hdr.outer_ipv4.protocol = IP_PROTO_UDP;
                hdr.outer_ipv4.total_len = hdr.outer_udp.length + 20;
            } else {
                hdr.inner_ethernet.src_addr = hdr.node.vtep_mac6;
                hdr.ethernet.ether_type = ETHERTYPE_IPV6;
                hdr.outer_ipv6.setValid();
                hdr.outer_ipv6.version_class_label = 0x60000000;
                hdr.outer_ipv6.payload_len = hdr.outer_udp.length;
                hdr.outer_ipv6.next_hdr = IP_PROTO_UDP;
                hdr.outer_ipv6.hop_limit = 64;
                hdr.outer_ipv6.src_addr_hi = hdr.node.ip6_hi;
                hdr.outer_ipv6.src_addr_lo = hdr.node.ip6_lo;
                hdr.outer_ipv6.dst_addr_hi = hdr.tunnel.hop_hi;
                hdr.outer_ipv6.dst_addr_lo = hdr.tunnel.hop_lo;
                // The seed holds the pseudo header's addresses and protocol, the destination
                // port, the VXLAN header and the inner Ethernet header. P4-DPDK adds an 8-bit
                // field as the first byte of a word: right for the next header, so the hop
                // limit and the pseudo header's next header go in through 16-bit words.
                hdr.outer_udp.checksum = hdr.tunnel.csum_seed;
                hdr.tunnel.w_hop = (bit<16>)hdr.ipv6.hop_limit;
                hdr.tunnel.w_next = (bit<16>)hdr.ipv6.next_hdr;
                outer_sum.clear();
                outer_sum.subtract(hdr.outer_udp.checksum);
                outer_sum.add(hdr.outer_udp.length);
                outer_sum.add(hdr.outer_udp.length);
                outer_sum.add(hdr.outer_udp.src_port);
                outer_sum.add(hdr.ipv6.version_class_label);
                outer_sum.add(hdr.ipv6.next_hdr);
                outer_sum.add(hdr.tunnel.w_hop);
                outer_sum.subtract(hdr.tunnel.w_next);
                hdr.outer_udp.checksum = outer_sum.get();
            }
        }
        // The outer IPv4 header of either encapsulation: its checksum is the seed's (the
        // constant words) plus the length.
        if (meta.encapsulate == 1 && hdr.outer_ipv4.isValid()) {
            hdr.outer_ipv4.version_ihl = 0x45;
            hdr.outer_ipv4.diffserv = 0;
            hdr.outer_ipv4.identification = 0;
            hdr.outer_ipv4.flags_frag_offset = 0;
            hdr.outer_ipv4.ttl = 64;
            hdr.outer_ipv4.src_addr = hdr.node.ip4;
            hdr.outer_ipv4.dst_addr = hdr.tunnel.hop4;
            hdr.outer_ipv4.hdr_checksum = hdr.tunnel.csum_seed;
            outer_sum.clear();
            outer_sum.subtract(hdr.outer_ipv4.hdr_checksum);
            outer_sum.add(hdr.outer_ipv4.total_len);
            hdr.outer_ipv4.hdr_checksum = outer_sum.get();
        }
    }
}

#endif
