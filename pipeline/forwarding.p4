// Architecture-neutral forwarding: port classification, ARP responder, source check
// (anti-spoofing), the L3/L4 summary later stages match on, and routing with MAC rewrite
// and TTL / hop-limit decrement. Ids are explicit so the P4Info is a stable contract.
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
        meta.egress_port = port;
        SEND_TO_PORT(port);
    }

    @id(0x01000003) @name(".host_port")
    action host_port() {
        meta.port_kind = PORT_KIND_HOST;
    }

    @id(0x02000001) @name(".port_classify")
    table port_classify {
        key = {
            meta.in_port : exact @id(1) @name("port");
        }
        actions = {
            workload_port;
            host_port;
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
            meta.in_port      : exact @id(1) @name("port");
            hdr.ipv4.src_addr : lpm   @id(2) @name("src");
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
            meta.in_port         : exact   @id(1) @name("port");
            hdr.ipv6.src_addr_hi : ternary @id(2) @name("src_hi");
            hdr.ipv6.src_addr_lo : ternary @id(3) @name("src_lo");
        }
        actions = {
            allow_source;
            @defaultonly drop;
        }
        const default_action = drop;
        size = 65536;
    }

    // Calico workloads ARP for their gateway and expect the host side to answer for any
    // address with its own MAC (proxy ARP); the reply goes back out of the asking port.
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

    apply {
        meta.drop = 0;
        meta.egress_port = 0;
        meta.egress_program = 0;
        meta.ingress_program = 0;
        port_classify.apply();
        if (meta.drop == 1) {
            return;
        }
        if (hdr.arp.isValid()) {
            if (meta.port_kind == PORT_KIND_WORKLOAD && hdr.arp.htype == ARP_HTYPE_ETHERNET
                    && hdr.arp.ptype == ETHERTYPE_IPV4 && hdr.arp.oper == ARP_OPER_REQUEST) {
                arp_reply();
            } else {
                drop();
            }
        } else if (hdr.ipv4.isValid()) {
            if (meta.port_kind == PORT_KIND_WORKLOAD) {
                source_check_v4.apply();
            }
        } else if (hdr.ipv6.isValid()) {
            if (meta.port_kind == PORT_KIND_WORKLOAD) {
                source_check_v6.apply();
            }
        } else {
            drop();
        }
    }
}

// The L3/L4 summary services, policy and conntrack match on.
control FelixSummary(in headers_t hdr, inout metadata_t meta) {
    apply {
        meta.src_port = 0;
        meta.dst_port = 0;
        meta.icmp_type = 0;
        meta.icmp_code = 0;
        if (hdr.ipv4.isValid()) {
            meta.ip_version = 4;
            meta.l4_proto = hdr.ipv4.protocol;
            meta.src_addr_hi = 0;
            meta.src_addr_lo = (bit<64>)hdr.ipv4.src_addr;
            meta.dst_addr_hi = 0;
            meta.dst_addr_lo = (bit<64>)hdr.ipv4.dst_addr;
        } else {
            meta.ip_version = 6;
            meta.l4_proto = hdr.ipv6.next_hdr;
            meta.src_addr_hi = hdr.ipv6.src_addr_hi;
            meta.src_addr_lo = hdr.ipv6.src_addr_lo;
            meta.dst_addr_hi = hdr.ipv6.dst_addr_hi;
            meta.dst_addr_lo = hdr.ipv6.dst_addr_lo;
        }
        if (hdr.tcp.isValid()) {
            meta.src_port = hdr.tcp.src_port;
            meta.dst_port = hdr.tcp.dst_port;
        } else if (hdr.udp.isValid()) {
            meta.src_port = hdr.udp.src_port;
            meta.dst_port = hdr.udp.dst_port;
        } else if (hdr.sctp.isValid()) {
            meta.src_port = hdr.sctp.src_port;
            meta.dst_port = hdr.sctp.dst_port;
        }
        if (hdr.icmp.isValid()) {
            meta.icmp_type = hdr.icmp.icmp_type;
            meta.icmp_code = hdr.icmp.icmp_code;
        }
    }
}

// Routing on the (possibly translated) destination.
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
        meta.egress_port = port;
        SEND_TO_PORT(port);
        hdr.ethernet.dst_addr = dmac;
        hdr.ethernet.src_addr = smac;
        meta.ingress_program = ingress_program;
    }

    // Hand to the host (its stack routes off-node traffic and answers for itself).
    @id(0x01000006) @name(".to_host")
    action to_host(@id(1) bit<32> port) {
        meta.egress_port = port;
        SEND_TO_PORT(port);
    }

    @id(0x02000004) @name(".routes_v4")
    table routes_v4 {
        key = {
            hdr.ipv4.dst_addr : lpm @id(1) @name("dst");
        }
        actions = {
            to_workload;
            to_host;
            no_route;
        }
        default_action = no_route;
        size = 65536;
    }

    @id(0x02000005) @name(".routes_v6")
    table routes_v6 {
        key = {
            hdr.ipv6.dst_addr_hi : ternary @id(1) @name("dst_hi");
            hdr.ipv6.dst_addr_lo : ternary @id(2) @name("dst_lo");
        }
        actions = {
            to_workload;
            to_host;
            no_route;
        }
        default_action = no_route;
        size = 65536;
    }

    // RFC 1624 incremental checksum update for the TTL decrement (the TTL shares a
    // 16-bit word with the protocol field); correct with IPv4 options present too.
    @id(0x01000009) @name(".decrement_ttl_v4")
    action decrement_ttl_v4() {
        bit<16> old_word = hdr.ipv4.ttl ++ hdr.ipv4.protocol;
        hdr.ipv4.ttl = hdr.ipv4.ttl - 1;
        bit<16> new_word = hdr.ipv4.ttl ++ hdr.ipv4.protocol;
        bit<32> sum = (bit<32>)(~hdr.ipv4.hdr_checksum) + (bit<32>)(~old_word) + (bit<32>)new_word;
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        hdr.ipv4.hdr_checksum = ~(sum[15:0]);
    }

    apply {
        if (hdr.ipv4.isValid()) {
            switch (routes_v4.apply().action_run) {
                to_workload: {
                    // An expiring packet is dropped: no ICMP time-exceeded is generated.
                    if (hdr.ipv4.ttl <= 1) {
                        meta.drop = 1;
                    } else {
                        decrement_ttl_v4();
                    }
                }
            }
        } else if (hdr.ipv6.isValid()) {
            switch (routes_v6.apply().action_run) {
                to_workload: {
                    if (hdr.ipv6.hop_limit <= 1) {
                        meta.drop = 1;
                    } else {
                        hdr.ipv6.hop_limit = hdr.ipv6.hop_limit - 1;
                    }
                }
            }
        }
    }
}

#endif
