// Architecture-neutral Calico policy: IP-set classification (each address classified once
// into a membership bitmap), then per direction a fixed number of stages whose
// ternary rule tables match those bitmaps. Entries grow with set members plus rules;
// endpoints with the same tiers and profiles share one program id.
#ifndef FELIX_P4_POLICY_P4
#define FELIX_P4_POLICY_P4

#include "headers.p4"

// Stages per direction. A program is a sequence of first-match blocks: one per tier with
// policies in that direction (ending in the tier's default action), then the profiles
// (split after any profile holding a Pass rule, so Pass moves on to the next profile),
// the last block ending in deny. A program needing more blocks than stages is reported to
// Felix as "error" for its endpoints.
#define POLICY_STAGES 7

// One stage: first match by priority within (program); a program that does not use the
// stage misses and leaves the verdict alone. Port, protocol and ICMP criteria are ternary:
// P4-DPDK has no range match, so the control plane writes a range as the prefixes covering it.
#define RULE_TABLE(NAME, P4INFO_NAME, TABLE_ID)                                            \
    @id(TABLE_ID) @name(P4INFO_NAME)                                                      \
    table NAME##_table {                                                                  \
        key = {                                                                           \
            hdr.rule_key.program     : exact   @id(1)  @name("program");                  \
            hdr.rule_key.ip_version  : ternary @id(2)  @name("ip_version");               \
            hdr.rule_key.proto       : ternary @id(3)  @name("proto");                    \
            hdr.rule_key.src_sets_hi : ternary @id(4)  @name("src_sets_hi");              \
            hdr.rule_key.src_sets_lo : ternary @id(5)  @name("src_sets_lo");              \
            hdr.rule_key.dst_sets_hi : ternary @id(6)  @name("dst_sets_hi");              \
            hdr.rule_key.dst_sets_lo : ternary @id(7)  @name("dst_sets_lo");              \
            hdr.rule_key.src_port    : ternary @id(8)  @name("src_port");                 \
            hdr.rule_key.dst_port    : ternary @id(9)  @name("dst_port");                 \
            hdr.rule_key.icmp_type   : ternary @id(10) @name("icmp_type");                \
            hdr.rule_key.icmp_code   : ternary @id(11) @name("icmp_code");                \
        }                                                                                 \
        actions = { rule_allow; rule_deny; rule_pass; @defaultonly no_verdict; }          \
        const default_action = no_verdict;                                                \
        size = 65536;                                                                     \
    }

#define STAGE(NAME) if (meta.verdict == VERDICT_NONE) { NAME##_table.apply(); }

control FelixPolicy(inout headers_t hdr, inout metadata_t meta) {

    @id(0x01000010) @name(".set_src_sets")
    action set_src_sets(@id(1) bit<64> sets_hi, @id(2) bit<64> sets_lo) {
        hdr.rule_key.src_sets_hi = sets_hi;
        hdr.rule_key.src_sets_lo = sets_lo;
    }

    @id(0x01000011) @name(".set_dst_sets")
    action set_dst_sets(@id(1) bit<64> sets_hi, @id(2) bit<64> sets_lo) {
        hdr.rule_key.dst_sets_hi = sets_hi;
        hdr.rule_key.dst_sets_lo = sets_lo;
    }

    @id(0x01000012) @name(".add_src_sets")
    action add_src_sets(@id(1) bit<64> sets_hi, @id(2) bit<64> sets_lo) {
        hdr.rule_key.src_sets_hi = hdr.rule_key.src_sets_hi | sets_hi;
        hdr.rule_key.src_sets_lo = hdr.rule_key.src_sets_lo | sets_lo;
    }

    @id(0x01000013) @name(".add_dst_sets")
    action add_dst_sets(@id(1) bit<64> sets_hi, @id(2) bit<64> sets_lo) {
        hdr.rule_key.dst_sets_hi = hdr.rule_key.dst_sets_hi | sets_hi;
        hdr.rule_key.dst_sets_lo = hdr.rule_key.dst_sets_lo | sets_lo;
    }

    @id(0x01000014) @name(".no_sets")
    action no_sets() {
    }

    // Address classification: one entry per distinct member prefix, whose bitmap holds every
    // set with a member covering that prefix (so the longest match carries them all).
    @id(0x02000010) @name(".ipset_src_v4")
    table ipset_src_v4 {
        key = { hdr.addr_key.src4 : lpm @id(1) @name("addr"); }
        actions = { set_src_sets; @defaultonly no_sets; }
        const default_action = no_sets;
        size = 262144;
    }

    @id(0x02000011) @name(".ipset_dst_v4")
    table ipset_dst_v4 {
        key = { hdr.addr_key.dst4 : lpm @id(1) @name("addr"); }
        actions = { set_dst_sets; @defaultonly no_sets; }
        const default_action = no_sets;
        size = 262144;
    }

    // IPv6 prefixes as ternary halves; priority is the prefix length (longest wins).
    @id(0x02000012) @name(".ipset_src_v6")
    table ipset_src_v6 {
        key = {
            hdr.addr_key.src_hi : ternary @id(1) @name("addr_hi");
            hdr.addr_key.src_lo : ternary @id(2) @name("addr_lo");
        }
        actions = { set_src_sets; @defaultonly no_sets; }
        const default_action = no_sets;
        size = 262144;
    }

    @id(0x02000013) @name(".ipset_dst_v6")
    table ipset_dst_v6 {
        key = {
            hdr.addr_key.dst_hi : ternary @id(1) @name("addr_hi");
            hdr.addr_key.dst_lo : ternary @id(2) @name("addr_lo");
        }
        actions = { set_dst_sets; @defaultonly no_sets; }
        const default_action = no_sets;
        size = 262144;
    }

    // Named-port (and service) sets: members are (address, protocol, port).
    @id(0x02000014) @name(".portset_src")
    table portset_src {
        key = {
            hdr.port_key.ip_version : exact @id(1) @name("ip_version");
            hdr.port_key.addr_hi    : exact @id(2) @name("addr_hi");
            hdr.port_key.addr_lo    : exact @id(3) @name("addr_lo");
            hdr.port_key.proto      : exact @id(4) @name("proto");
            hdr.port_key.port       : exact @id(5) @name("port");
        }
        actions = { add_src_sets; @defaultonly no_sets; }
        const default_action = no_sets;
        size = 262144;
    }

    @id(0x02000015) @name(".portset_dst")
    table portset_dst {
        key = {
            hdr.port_key.ip_version : exact @id(1) @name("ip_version");
            hdr.port_key.addr_hi    : exact @id(2) @name("addr_hi");
            hdr.port_key.addr_lo    : exact @id(3) @name("addr_lo");
            hdr.port_key.proto      : exact @id(4) @name("proto");
            hdr.port_key.port       : exact @id(5) @name("port");
        }
        actions = { add_dst_sets; @defaultonly no_sets; }
        const default_action = no_sets;
        size = 262144;
    }

    @id(0x01000020) @name(".rule_allow")
    action rule_allow() {
        meta.verdict = VERDICT_ALLOW;
    }

    @id(0x01000021) @name(".rule_deny")
    action rule_deny() {
        meta.verdict = VERDICT_DENY;
    }

    // Pass: skip the rest of this block (the stage's lookup is first-match, so the stage
    // simply ends without a verdict and the next stage runs).
    @id(0x01000022) @name(".rule_pass")
    action rule_pass() {
    }

    @id(0x01000023) @name(".no_verdict")
    action no_verdict() {
    }

    RULE_TABLE(egress_stage_0, ".egress_stage_0", 0x02000020)
    RULE_TABLE(egress_stage_1, ".egress_stage_1", 0x02000021)
    RULE_TABLE(egress_stage_2, ".egress_stage_2", 0x02000022)
    RULE_TABLE(egress_stage_3, ".egress_stage_3", 0x02000023)
    RULE_TABLE(egress_stage_4, ".egress_stage_4", 0x02000024)
    RULE_TABLE(egress_stage_5, ".egress_stage_5", 0x02000025)
    RULE_TABLE(egress_stage_6, ".egress_stage_6", 0x02000026)
    RULE_TABLE(ingress_stage_0, ".ingress_stage_0", 0x02000030)
    RULE_TABLE(ingress_stage_1, ".ingress_stage_1", 0x02000031)
    RULE_TABLE(ingress_stage_2, ".ingress_stage_2", 0x02000032)
    RULE_TABLE(ingress_stage_3, ".ingress_stage_3", 0x02000033)
    RULE_TABLE(ingress_stage_4, ".ingress_stage_4", 0x02000034)
    RULE_TABLE(ingress_stage_5, ".ingress_stage_5", 0x02000035)
    RULE_TABLE(ingress_stage_6, ".ingress_stage_6", 0x02000036)

    apply {
        // The flow's addresses (after any translation) are in addr_key and flow.
        hdr.rule_key.src_sets_hi = 0;
        hdr.rule_key.src_sets_lo = 0;
        hdr.rule_key.dst_sets_hi = 0;
        hdr.rule_key.dst_sets_lo = 0;
        if (hdr.ipv4.isValid()) {
            ipset_src_v4.apply();
            ipset_dst_v4.apply();
        } else {
            ipset_src_v6.apply();
            ipset_dst_v6.apply();
        }
        hdr.port_key.ip_version = hdr.flow.ip_version;
        hdr.port_key.proto = hdr.flow.proto;
        hdr.port_key.addr_hi = hdr.flow.src_hi;
        hdr.port_key.addr_lo = hdr.flow.src_lo;
        hdr.port_key.port = hdr.flow.src_port;
        portset_src.apply();
        hdr.port_key.addr_hi = hdr.flow.dst_hi;
        hdr.port_key.addr_lo = hdr.flow.dst_lo;
        hdr.port_key.port = hdr.flow.dst_port;
        portset_dst.apply();

        hdr.rule_key.ip_version = hdr.flow.ip_version;
        hdr.rule_key.proto = hdr.flow.proto;
        hdr.rule_key.src_port = hdr.flow.src_port;
        hdr.rule_key.dst_port = hdr.flow.dst_port;
        // A direction with no local workload has no program and allows; a workload's
        // program that gives no verdict after its last stage denies (fail closed).
        meta.egress_ok = 1;
        if (meta.egress_program != 0) {
            hdr.rule_key.program = meta.egress_program;
            meta.verdict = VERDICT_NONE;
            STAGE(egress_stage_0)
            STAGE(egress_stage_1)
            STAGE(egress_stage_2)
            STAGE(egress_stage_3)
            STAGE(egress_stage_4)
            STAGE(egress_stage_5)
            STAGE(egress_stage_6)
            if (meta.verdict != VERDICT_ALLOW) {
                meta.egress_ok = 0;
            }
        }
        meta.ingress_ok = 1;
        if (meta.ingress_program != 0) {
            hdr.rule_key.program = meta.ingress_program;
            meta.verdict = VERDICT_NONE;
            STAGE(ingress_stage_0)
            STAGE(ingress_stage_1)
            STAGE(ingress_stage_2)
            STAGE(ingress_stage_3)
            STAGE(ingress_stage_4)
            STAGE(ingress_stage_5)
            STAGE(ingress_stage_6)
            if (meta.verdict != VERDICT_ALLOW) {
                meta.ingress_ok = 0;
            }
        }
    }
}

#endif
