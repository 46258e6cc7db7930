// Architecture-neutral forwarding: port classification, ARP responder, source check
// (anti-spoofing), the flow summary the later stages key on, and routing with MAC rewrite and
// TTL / hop-limit decrement. Ids are explicit so the P4Info is a stable contract.
#ifndef FELIX_P4_FORWARDING_P4
#define FELIX_P4_FORWARDING_P4

#include "headers.p4"

// The architecture wrapper defines SEND_TO_PORT(port): PNA's send_to_port takes only action
// data or constants, so every action that picks the output port calls it with its own
// parameter (the last call before the end of the pipeline wins).
#ifndef SEND_TO_PORT
#error "the architecture wrapper must define SEND_TO_PORT(port)"
#endif

// Ingress port: what the port is, ARP for the gateway, and the source check.
control FelixPort(inout headers_t hdr, inout metadata_t meta) {

    @id(0x01000001) @name(".drop")
    action drop() {
        meta.drop = 1;
    }

    // egress_program: the policy program for traffic this workload sends; port: the
    // workload's own port, where ARP replies go (routing picks the port for IP packets).
    @id(0x01000002) @name(".workload_port")
    action workload_port(@id(1) bit<48> gateway_mac, @id(2) bit<16> egress_program,
                         @id(3) bit<32> port) {
        meta.port_kind = PORT_KIND_WORKLOAD;
        meta.gateway_mac = gateway_mac;
        meta.egress_program = egress_program;
        SEND_TO_PORT(port);
    }

    @id(0x01000003) @name(".host_port")
    action host_port() {
        meta.port_kind = PORT_KIND_HOST;
    }

    // The node's network port: other nodes' tunnels, and the host's own traffic.
    @id(0x0100000c) @name(".uplink_port")
    action uplink_port() {
        meta.port_kind = PORT_KIND_UPLINK;
    }

    @id(0x02000001) @name(".port_classify")
    table port_classify {
        key = {
            meta.in_port : exact @id(1) @name("port");
        }
        actions = {
            workload_port;
            host_port;
            uplink_port;
            @defaultonly drop;
        }
        const default_action = drop;
        size = 65536;
    }

    @id(0x01000004) @name(".allow_source")
    action allow_source() {
    }

    @id(0x02000002) @name(".source_check_v4")
    table source_check_v4 {
        key = {
            hdr.addr_key.port : exact @id(1) @name("port");
            hdr.addr_key.src4 : lpm   @id(2) @name("src");
        }
        actions = {
            allow_source;
            @defaultonly drop;
        }
        const default_action = drop;
        size = 65536;
    }

    // IPv6 prefixes as ternary halves with the prefix length as priority (P4-DPDK has no
    // 128-bit LPM).
    @id(0x02000003) @name(".source_check_v6")
    table source_check_v6 {
        key = {
            hdr.addr_key.port   : exact   @id(1) @name("port");
            hdr.addr_key.src_hi : ternary @id(2) @name("src_hi");
            hdr.addr_key.src_lo : ternary @id(3) @name("src_lo");
        }
        actions = {
            allow_source;
            @defaultonly drop;
        }
        const default_action = drop;
        size = 65536;
    }

    // Calico workloads ARP for their gateway and expect the host side to answer for any
    // address with its own MAC (proxy ARP); the reply goes back out of the asking port (the
    // port workload_port sent the packet to). Not for the asker's own address: a probe (from
    // 0.0.0.0) or an announcement (sender = target) asks whether anyone else holds it, and an
    // answer says someone does (Linux proxy ARP, Calico's host side, answers neither).
    @id(0x01000008) @name(".arp_reply")
    action arp_reply() {
        hdr.ethernet.dst_addr = hdr.ethernet.src_addr;
        hdr.ethernet.src_addr = meta.gateway_mac;
        hdr.arp.oper = ARP_OPER_REPLY;
        hdr.arp.tha = hdr.arp.sha;
        hdr.arp.sha = meta.gateway_mac;
        bit<32> target = hdr.arp.tpa;
        hdr.arp.tpa = hdr.arp.spa;
        hdr.arp.spa = target;
    }

    // IPv6's ARP: a workload's neighbour solicitation (for its default gateway,
    // fe80::ecee:eeff:feee:eeee, or any other address) is answered with the gateway MAC, from
    // the target address, back to the asking port. The ICMPv6 checksum is updated for what
    // changes: the addresses, the type, the flags and the option.
    InternetChecksum() nd_checksum;

    @id(0x0100000a) @name(".nd_advert")
    action nd_advert() {
        nd_checksum.clear();
        nd_checksum.subtract(hdr.icmp.checksum);
        nd_checksum.subtract(hdr.ipv6.src_addr_hi);
        nd_checksum.subtract(hdr.ipv6.src_addr_lo);
        nd_checksum.subtract(hdr.ipv6.dst_addr_hi);
        nd_checksum.subtract(hdr.ipv6.dst_addr_lo);
        nd_checksum.subtract(hdr.icmp.icmp_type);
        nd_checksum.subtract(hdr.nd.flags);
        hdr.ipv6.dst_addr_hi = hdr.ipv6.src_addr_hi;
        hdr.ipv6.dst_addr_lo = hdr.ipv6.src_addr_lo;
        hdr.ipv6.src_addr_hi = hdr.nd.target_hi;
        hdr.ipv6.src_addr_lo = hdr.nd.target_lo;
        hdr.ipv6.hop_limit = 255;
        hdr.icmp.icmp_type = ICMP6_NEIGHBOR_ADVERT;
        hdr.nd.flags = ND_ADVERT_FLAGS;
        nd_checksum.add(hdr.ipv6.src_addr_hi);
        nd_checksum.add(hdr.ipv6.src_addr_lo);
        nd_checksum.add(hdr.ipv6.dst_addr_hi);
        nd_checksum.add(hdr.ipv6.dst_addr_lo);
        nd_checksum.add(hdr.icmp.icmp_type);
        nd_checksum.add(hdr.nd.flags);
        hdr.ethernet.dst_addr = hdr.ethernet.src_addr;
        hdr.ethernet.src_addr = meta.gateway_mac;
    }

    // With a link-layer option: the solicitation's source option becomes the advertisement's
    // target option, carrying the gateway MAC.
    InternetChecksum() option_checksum;

    @id(0x0100000b) @name(".nd_option_target")
    action nd_option_target() {
        option_checksum.clear();
        option_checksum.subtract(hdr.icmp.checksum);
        option_checksum.subtract(hdr.nd_option.type);
        option_checksum.subtract(hdr.nd_option.mac);
        hdr.nd_option.type = ND_OPTION_TARGET_LL;
        hdr.nd_option.mac = meta.gateway_mac;
        option_checksum.add(hdr.nd_option.type);
        option_checksum.add(hdr.nd_option.mac);
        hdr.icmp.checksum = option_checksum.get();
    }

    apply {
        meta.drop = 0;
        meta.answered = 0;
        meta.bridge = 0;
        meta.port_kind = PORT_KIND_UNKNOWN;
        meta.egress_program = 0;
        meta.ingress_program = 0;
        port_classify.apply();
        if (meta.drop == 1) {
            return;
        }
        if (hdr.arp.isValid()) {
            if (meta.port_kind == PORT_KIND_WORKLOAD && hdr.arp.htype == ARP_HTYPE_ETHERNET
                    && hdr.arp.ptype == ETHERTYPE_IPV4 && hdr.arp.oper == ARP_OPER_REQUEST
                    && hdr.arp.spa != 0 && hdr.arp.spa != hdr.arp.tpa) {
                arp_reply();
                meta.answered = 1;
            } else if (meta.port_kind == PORT_KIND_HOST || meta.port_kind == PORT_KIND_UPLINK) {
                // The host resolving its neighbours on the network, and they resolving it.
                meta.bridge = 1;
            } else {
                drop();
            }
        } else if (hdr.ipv4.isValid()) {
            if (meta.port_kind == PORT_KIND_WORKLOAD) {
                hdr.addr_key.port = meta.in_port;
                hdr.addr_key.src4 = hdr.ipv4.src_addr;
                source_check_v4.apply();
            }
        } else if (hdr.ipv6.isValid()) {
            if (meta.port_kind == PORT_KIND_WORKLOAD && hdr.nd.isValid()) {
                // A solicitation from the unspecified address is duplicate address detection:
                // answering it would make the pod give up its own address.
                if (hdr.ipv6.src_addr_hi == 0 && hdr.ipv6.src_addr_lo == 0) {
                    drop();
                } else {
                    nd_advert();
                    hdr.icmp.checksum = nd_checksum.get();
                    if (hdr.nd_option.isValid()) {
                        if (hdr.nd_option.type == ND_OPTION_SOURCE_LL) {
                            nd_option_target();
                        } else {
                            drop();
                        }
                    }
                    meta.answered = 1;
                }
                return;
            }
            if (meta.port_kind == PORT_KIND_WORKLOAD) {
                hdr.addr_key.port = meta.in_port;
                hdr.addr_key.src_hi = hdr.ipv6.src_addr_hi;
                hdr.addr_key.src_lo = hdr.ipv6.src_addr_lo;
                source_check_v6.apply();
            }
        } else if (meta.port_kind == PORT_KIND_HOST || meta.port_kind == PORT_KIND_UPLINK) {
            meta.bridge = 1;
        } else {
            drop();
        }
    }
}

// The flow the later stages match on, as received, and its expiry profile.
control FelixSummary(inout headers_t hdr, inout metadata_t meta) {
    apply {
        hdr.flow.src_port = 0;
        hdr.flow.dst_port = 0;
        hdr.rule_key.icmp_type = 0;
        hdr.rule_key.icmp_code = 0;
        meta.l4 = 0;
        if (hdr.ipv4.isValid()) {
            hdr.flow.ip_version = 4;
            hdr.flow.proto = hdr.ipv4.protocol;
            hdr.flow.src_hi = 0;
            hdr.flow.src_lo = (bit<64>)hdr.ipv4.src_addr;
            hdr.flow.dst_hi = 0;
            hdr.flow.dst_lo = (bit<64>)hdr.ipv4.dst_addr;
        } else {
            hdr.flow.ip_version = 6;
            hdr.flow.proto = hdr.ipv6.next_hdr;
            hdr.flow.src_hi = hdr.ipv6.src_addr_hi;
            hdr.flow.src_lo = hdr.ipv6.src_addr_lo;
            hdr.flow.dst_hi = hdr.ipv6.dst_addr_hi;
            hdr.flow.dst_lo = hdr.ipv6.dst_addr_lo;
        }
        if (hdr.tcp.isValid()) {
            meta.l4 = 1;
            hdr.flow.src_port = hdr.tcp.src_port;
            hdr.flow.dst_port = hdr.tcp.dst_port;
        } else if (hdr.udp.isValid()) {
            meta.l4 = 1;
            hdr.flow.src_port = hdr.udp.src_port;
            hdr.flow.dst_port = hdr.udp.dst_port;
        } else if (hdr.sctp.isValid()) {
            meta.l4 = 1;
            hdr.flow.src_port = hdr.sctp.src_port;
            hdr.flow.dst_port = hdr.sctp.dst_port;
        }
        if (hdr.icmp.isValid()) {
            hdr.rule_key.icmp_type = hdr.icmp.icmp_type;
            hdr.rule_key.icmp_code = hdr.icmp.icmp_code;
        }
        // Learned state (conntrack, service pins and reverse translations) expires by the
        // protocol's profile, as the kernel's conntrack does.
        if (hdr.flow.proto == IP_PROTO_TCP) {
            meta.profile = PROFILE_TCP;
        } else if (hdr.flow.proto == IP_PROTO_UDP) {
            meta.profile = PROFILE_UDP;
        } else {
            meta.profile = PROFILE_OTHER;
        }
    }
}

// Routing on the (possibly translated) destination, which FelixAddresses put in addr_key.
control FelixRouting(inout headers_t hdr, inout metadata_t meta) {

    @id(0x01000007) @name(".no_route")
    action no_route() {
        meta.drop = 1;
    }

    // Deliver to a local workload: its MAC as destination, the gateway MAC as source;
    // ingress_program: the policy program for traffic this workload receives.
    @id(0x01000005) @name(".to_workload")
    action to_workload(@id(1) bit<32> port, @id(2) bit<48> dmac, @id(3) bit<48> smac,
                       @id(4) bit<16> ingress_program) {
        meta.route_kind = ROUTE_WORKLOAD;
        SEND_TO_PORT(port);
        hdr.ethernet.dst_addr = dmac;
        hdr.ethernet.src_addr = smac;
        meta.ingress_program = ingress_program;
    }

    // Hand to the host (its stack routes off-node traffic and answers for itself).
    @id(0x01000006) @name(".to_host")
    action to_host(@id(1) bit<32> port) {
        meta.route_kind = ROUTE_HOST;
        SEND_TO_PORT(port);
    }

    // Another node's pods over VXLAN: its VTEP's parent address (where the outer header goes
    // and the next hop's key), its VTEP MAC, and the outer checksum seed (tunnel.p4). One
    // action per family: the IPv4 address goes into the outer header without a narrowing
    // cast (a temporary each in P4-DPDK).
    @id(0x0100000d) @name(".to_vxlan")
    action to_vxlan(@id(1) bit<32> node, @id(2) bit<48> vtep_mac, @id(3) bit<16> csum_seed) {
        meta.route_kind = ROUTE_VXLAN;
        hdr.tunnel.hop_hi = 0;
        hdr.tunnel.hop_lo = (bit<64>)node;
        hdr.tunnel.hop4 = node;
        hdr.tunnel.vtep_mac = vtep_mac;
        hdr.tunnel.csum_seed = csum_seed;
    }

    @id(0x01000068) @name(".to_vxlan6")
    action to_vxlan6(@id(1) bit<64> node_hi, @id(2) bit<64> node_lo, @id(3) bit<48> vtep_mac,
                     @id(4) bit<16> csum_seed) {
        meta.route_kind = ROUTE_VXLAN;
        hdr.tunnel.hop_hi = node_hi;
        hdr.tunnel.hop_lo = node_lo;
        hdr.tunnel.vtep_mac = vtep_mac;
        hdr.tunnel.csum_seed = csum_seed;
    }

    // Another node's pods over IP-in-IP (IPv4 only).
    @id(0x0100000e) @name(".to_ipip")
    action to_ipip(@id(1) bit<32> node, @id(2) bit<16> csum_seed) {
        meta.route_kind = ROUTE_IPIP;
        hdr.tunnel.hop_hi = 0;
        hdr.tunnel.hop_lo = (bit<64>)node;
        hdr.tunnel.hop4 = node;
        hdr.tunnel.csum_seed = csum_seed;
    }

    // Another node's pods without encapsulation (no-encap pools, CrossSubnet within the
    // subnet): routed to the node itself.
    @id(0x0100000f) @name(".to_node")
    action to_node(@id(1) bit<32> node) {
        meta.route_kind = ROUTE_NODE;
        hdr.tunnel.hop_hi = 0;
        hdr.tunnel.hop_lo = (bit<64>)node;
    }

    @id(0x01000069) @name(".to_node6")
    action to_node6(@id(1) bit<64> node_hi, @id(2) bit<64> node_lo) {
        meta.route_kind = ROUTE_NODE;
        hdr.tunnel.hop_hi = node_hi;
        hdr.tunnel.hop_lo = node_lo;
    }

    // An address of this node's blocks that no pod has.
    @id(0x01000067) @name(".blackhole")
    action blackhole() {
        meta.route_kind = ROUTE_BLACKHOLE;
        meta.drop = 1;
    }

    @id(0x02000004) @name(".routes_v4")
    table routes_v4 {
        key = {
            hdr.addr_key.dst4 : lpm @id(1) @name("dst");
        }
        actions = {
            to_workload;
            to_host;
            to_vxlan;
            to_ipip;
            to_node;
            blackhole;
            no_route;
        }
        default_action = no_route;
        size = 65536;
    }

    @id(0x02000005) @name(".routes_v6")
    table routes_v6 {
        key = {
            hdr.addr_key.dst_hi : ternary @id(1) @name("dst_hi");
            hdr.addr_key.dst_lo : ternary @id(2) @name("dst_lo");
        }
        actions = {
            to_workload;
            to_host;
            to_vxlan6;
            to_node6;
            blackhole;
            no_route;
        }
        default_action = no_route;
        size = 65536;
    }

    // The TTL shares a 16-bit word with the protocol: the checksum update (RFC 1624) takes
    // the old TTL out and the new one in, the extern doing the one's complement arithmetic.
    InternetChecksum() ttl_checksum;

    @id(0x01000009) @name(".decrement_ttl_v4")
    action decrement_ttl_v4() {
        ttl_checksum.clear();
        ttl_checksum.subtract(hdr.ipv4.hdr_checksum);
        ttl_checksum.subtract(hdr.ipv4.ttl);
        hdr.ipv4.ttl = hdr.ipv4.ttl - 1;
        ttl_checksum.add(hdr.ipv4.ttl);
        hdr.ipv4.hdr_checksum = ttl_checksum.get();
    }

    apply {
        meta.route_kind = ROUTE_NONE;
        hdr.tunnel.hop_version = hdr.flow.ip_version;
        if (hdr.ipv4.isValid()) {
            routes_v4.apply();
        } else {
            routes_v6.apply();
        }
        // A routed hop (to a pod, or towards another node's) decrements the TTL; an expiring
        // packet is dropped (no ICMP time-exceeded is generated). The host's own traffic to
        // and from the network is bridged, not routed: the wrapper decides which is which.
        meta.routed = 0;
        if (meta.route_kind == ROUTE_WORKLOAD) {
            meta.routed = 1;
        } else if (meta.route_kind == ROUTE_VXLAN || meta.route_kind == ROUTE_IPIP
                   || meta.route_kind == ROUTE_NODE) {
            // (From the uplink these are the host's traffic, bridged: not a hop of ours,
            // unless a service translated them.)
            if (meta.port_kind != PORT_KIND_UPLINK) {
                meta.routed = 1;
            } else if (meta.is_service == 1) {
                meta.routed = 1;
            } else if (meta.reply_nat == 1) {
                meta.routed = 1;
            }
        }
        if (meta.routed == 1) {
            if (hdr.ipv4.isValid()) {
                if (hdr.ipv4.ttl <= 1) {
                    meta.drop = 1;
                } else {
                    decrement_ttl_v4();
                }
            } else {
                if (hdr.ipv6.hop_limit <= 1) {
                    meta.drop = 1;
                } else {
                    hdr.ipv6.hop_limit = hdr.ipv6.hop_limit - 1;
                }
            }
        }
    }
}

#endif
