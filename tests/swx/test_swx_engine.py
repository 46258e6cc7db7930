"""The P4-DPDK engine runs a real SWX pipeline (engine_test.spec): forwarding, table semantics,
learning, selection and counters as a packet sees them. Skips, with the reason, without DPDK."""

import socket
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from felix_p4.swx import SwxError, SwxPipeline, availability, engine

UNAVAILABLE = availability()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))

SPEC = Path(__file__).with_name("engine_test.spec")
N_PORTS = 5  # not a power of two: the engine pads the input ports
MEMORY_MB = 256
ROUTER_MAC = "02:00:00:00:00:fe"
ROUTER_MAC_INT = 0x0200000000FE


@pytest.fixture
def pipeline():
    with SwxPipeline.load(SPEC, N_PORTS, MEMORY_MB) as p:
        yield p


def frame(
    dst_mac: str = ROUTER_MAC,
    src: str = "10.0.0.1",
    dst: str = "10.1.2.3",
    proto: str = "tcp",
    sport: int = 40000,
) -> bytes:
    l4 = TCP(sport=sport, dport=80) if proto == "tcp" else UDP(sport=sport, dport=53)
    return bytes(Ether(dst=dst_mac, src="02:00:00:00:00:01") / IP(src=src, dst=dst, ttl=64) / l4)


def ip_int(addr: str) -> int:
    return int.from_bytes(socket.inet_aton(addr), "big")


def install_routing(p: SwxPipeline) -> tuple[int, int]:
    """10.1.0.0/16 -> group A (members 0, 1), 10.1.2.0/24 -> group B (member 2);
    member 0 -> port 1, member 1 -> port 2, member 2 -> port 3."""
    for member, port in ((0, 1), (1, 2), (2, 3)):
        p.table_add(
            "nexthops",
            f"match {member} action nexthop port_out {port}"
            f" dmac 0x02000000010{member} smac {ROUTER_MAC_INT:#x}",
        )
    group_a = p.selector_group_add("ecmp")
    group_b = p.selector_group_add("ecmp")
    p.selector_group_member_add("ecmp", group_a, 0)
    p.selector_group_member_add("ecmp", group_a, 1)
    p.selector_group_member_add("ecmp", group_b, 2)
    p.table_add(
        "routes", f"match {ip_int('10.1.0.0'):#x}/0xffff0000 action route_ecmp group_id {group_a}"
    )
    p.table_add(
        "routes", f"match {ip_int('10.1.2.0'):#x}/0xffffff00 action route_ecmp group_id {group_b}"
    )
    p.commit()
    return group_a, group_b


def test_exact_entry_forwards_on_its_port_with_the_source_mac_rewritten(pipeline):
    pipeline.table_add(
        "l2_fwd", "match 0x020000000002 action l2_forward port_out 3 smac 0x0a0b0c0d0e0f"
    )
    pipeline.commit()
    sent = frame(dst_mac="02:00:00:00:00:02")

    out = pipeline.process(0, sent)

    assert [port for port, _ in out] == [3]
    got = Ether(out[0][1])
    assert got.src == "0a:0b:0c:0d:0e:0f"
    assert bytes(got)[:6] == sent[:6] and bytes(got)[12:] == sent[12:]
    stats = pipeline.table_stats("l2_fwd")
    assert (stats.hits, stats.misses, stats.actions["l2_forward"]) == (1, 0, 1)
    assert pipeline.port_stats(0).rx_packets == 1 and pipeline.port_stats(3).tx_packets == 1


def test_frames_enter_on_every_port_including_the_last_of_a_padded_set(pipeline):
    pipeline.table_add("l2_fwd", "match 0x020000000002 action l2_forward port_out 0 smac 0x1")
    pipeline.commit()

    for port in range(N_PORTS):
        assert [p for p, _ in pipeline.process(port, frame(dst_mac="02:00:00:00:00:02"))] == [0]


def test_a_frame_nothing_forwards_is_dropped_and_counted(pipeline):
    assert pipeline.process(1, frame()) == []
    assert pipeline.process(1, bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP())) == []

    assert pipeline.dropped == 2
    assert pipeline.table_stats("routes").actions["route_drop"] == 1


def test_a_burst_queued_on_several_ports_goes_through_in_one_run(pipeline):
    pipeline.table_add(
        "l2_fwd", "match 0x020000000002 action l2_forward port_out 3 smac 0x0a0b0c0d0e0f"
    )
    pipeline.commit()
    forwarded = [frame(dst_mac="02:00:00:00:00:02", sport=40000 + i) for i in range(300)]
    dropped = [frame(dst_mac="02:00:00:00:00:09", sport=41000 + i) for i in range(100)]
    dropped_before = pipeline.dropped

    pipeline.send(0, forwarded[:150] + dropped)
    pipeline.send(4, forwarded[150:])
    pipeline.run_burst(400)

    out = pipeline.received()
    assert [port for port, _ in out] == [3] * 300
    assert sorted(Ether(f)[TCP].sport for _, f in out) == list(range(40000, 40300))
    assert pipeline.dropped - dropped_before == 100


def test_abort_discards_staged_entries(pipeline):
    pipeline.table_add("l2_fwd", "match 0x020000000002 action l2_forward port_out 3 smac 0x1")
    pipeline.abort()
    pipeline.commit()

    assert pipeline.process(0, frame(dst_mac="02:00:00:00:00:02")) == []


def test_deleted_entry_no_longer_matches(pipeline):
    pipeline.table_add("l2_fwd", "match 0x020000000002 action l2_forward port_out 3 smac 0x1")
    pipeline.commit()
    pipeline.table_delete("l2_fwd", "match 0x020000000002")
    pipeline.commit()

    assert pipeline.process(0, frame(dst_mac="02:00:00:00:00:02")) == []


def test_wildcard_entry_with_the_lower_priority_number_wins(pipeline):
    pipeline.table_add("l2_fwd", "match 0x020000000002 action l2_forward port_out 3 smac 0x1")
    deny_host = f"match 6/0xff {ip_int('10.0.0.1'):#x}/0xffffffff 0/0"
    permit_subnet = f"match 0/0 {ip_int('10.0.0.0'):#x}/0xffffff00 0/0"
    pipeline.table_add("acl", f"{deny_host} priority 5 action deny")
    pipeline.table_add("acl", f"{permit_subnet} priority 1 action permit")
    pipeline.commit()
    sent = frame(dst_mac="02:00:00:00:00:02", src="10.0.0.1")

    assert [p for p, _ in pipeline.process(0, sent)] == [3]

    # Same match, new priority: DPDK keys wildcard entries by value and mask only, so this
    # replaces the entry instead of adding a second one.
    pipeline.table_add("acl", f"{deny_host} priority 0 action deny")
    pipeline.commit()

    assert pipeline.process(0, sent) == []
    assert pipeline.table_stats("acl").actions == {"permit": 1, "deny": 1}
    assert [p for p, _ in pipeline.process(0, frame("02:00:00:00:00:02", src="10.0.0.2"))] == [3]


def test_lpm_longest_prefix_wins_and_the_nexthop_rewrites_the_packet(pipeline):
    install_routing(pipeline)

    ((port, data),) = pipeline.process(0, frame(dst="10.1.2.3"))
    assert port == 3  # the /24 (group B), not the /16
    assert {p for p, _ in pipeline.process(0, frame(dst="10.1.3.3"))} <= {1, 2}
    assert pipeline.process(0, frame(dst="10.2.0.1")) == []

    got = Ether(data)
    assert (got.src, got.dst) == (ROUTER_MAC, "02:00:00:00:01:02")
    assert got[IP].ttl == 63
    # The header checksum was updated incrementally (cksub/ckadd); recomputing it from scratch
    # must give the same value.
    fresh = got[IP].copy()
    fresh.chksum = None
    assert IP(bytes(fresh)).chksum == got[IP].chksum


def test_selector_spreads_flows_over_the_members_of_the_routes_group(pipeline):
    install_routing(pipeline)

    ports_a = {
        port
        for i in range(64)
        for port, _ in pipeline.process(0, frame(src=f"10.0.0.{i + 1}", dst="10.1.9.9"))
    }
    ports_b = {
        port
        for i in range(16)
        for port, _ in pipeline.process(0, frame(src=f"10.0.0.{i + 1}", dst="10.1.2.9"))
    }

    assert ports_a == {1, 2}
    assert ports_b == {3}
    assert pipeline.selector_stats("ecmp") == 80


def test_same_flow_always_picks_the_same_member(pipeline):
    install_routing(pipeline)
    sent = frame(src="10.0.0.77", dst="10.1.9.9")

    assert len({pipeline.process(0, sent)[0][0] for _ in range(10)}) == 1


def test_removing_a_member_moves_its_flows_to_the_others(pipeline):
    group_a, _ = install_routing(pipeline)
    pipeline.selector_group_member_delete("ecmp", group_a, 1)
    pipeline.commit()

    ports = {
        port
        for i in range(32)
        for port, _ in pipeline.process(0, frame(src=f"10.0.0.{i + 1}", dst="10.1.9.9"))
    }
    assert ports == {1}


def test_default_entry_replaces_the_miss_action(pipeline):
    group_a, _ = install_routing(pipeline)
    pipeline.default_entry("routes", f"action route_ecmp group_id {group_a}")
    pipeline.default_entry("flows", "action flow_learn")
    pipeline.commit()

    assert {p for p, _ in pipeline.process(0, frame(dst="192.168.1.1"))} <= {1, 2}


def test_learner_learns_on_a_miss_and_the_next_packet_of_the_flow_hits(pipeline):
    sent = frame(proto="tcp")  # TCP: timeout id 0, 120 s

    pipeline.process(0, sent)
    first = pipeline.learner_stats("flows")
    pipeline.process(0, sent)
    second = pipeline.learner_stats("flows")

    assert (first.hits, first.misses, first.learned) == (0, 1, 1)
    assert (second.hits, second.misses, second.learned) == (1, 1, 1)
    assert second.actions == {"flow_known": 1, "flow_learn": 1}
    pipeline.process(0, frame(proto="tcp", sport=40001))  # same addresses: the key is src, dst
    pipeline.process(0, frame(proto="tcp", src="10.0.0.2"))
    assert pipeline.learner_stats("flows").learned == 2


def test_learned_entry_expires_after_its_timeout(pipeline):
    sent = frame(proto="udp")  # UDP: timeout id 1, 1 s in the spec
    assert pipeline.learner_timeout_seconds("flows", 1) == 1
    # DPDK keeps expiry times in units of 2**32 TSC cycles, so an entry lives at most
    # max(timeout, 2**32 cycles) and possibly less; nothing but time itself ends it.
    lifetime_max = max(1.0, 2**32 / engine.tsc_hz())

    pipeline.process(0, sent)
    learned_at = time.monotonic()
    assert pipeline.learner_stats("flows").learned == 1
    time.sleep(max(0.0, learned_at + lifetime_max + 0.05 - time.monotonic()))
    pipeline.process(0, sent)

    stats = pipeline.learner_stats("flows")
    assert (stats.misses, stats.learned) == (2, 2)


def test_a_timeout_set_on_the_live_pipeline_applies_to_flows_learned_afterwards(pipeline):
    sent = frame(proto="udp")  # UDP: timeout id 1, 1 s in the spec
    pipeline.set_learner_timeout("flows", 1, 3600)
    assert pipeline.learner_timeout_seconds("flows", 1) == 3600
    with pytest.raises(SwxError, match="timeout 0 s"):
        pipeline.set_learner_timeout("flows", 1, 0)
    # Past the spec's 1 s lifetime (at most max(1 s, 2**32 cycles)), the entry is still there.
    spec_lifetime_max = max(1.0, 2**32 / engine.tsc_hz())

    pipeline.process(0, sent)
    learned_at = time.monotonic()
    time.sleep(max(0.0, learned_at + spec_lifetime_max + 0.05 - time.monotonic()))
    pipeline.process(0, sent)

    stats = pipeline.learner_stats("flows")
    assert (stats.hits, stats.misses, stats.learned) == (1, 1, 1)


def test_a_failed_commit_keeps_earlier_tables_and_drops_the_failing_and_later_ones(pipeline):
    pipeline.table_add("l2_fwd", "match 0x020000000002 action l2_forward port_out 3 smac 0x1")
    for member in range(65):  # nexthops holds 64
        pipeline.table_add("nexthops", f"match {member} action nexthop port_out 1 dmac 1 smac 1")
    pipeline.table_add("routes", "match 0/0 action route_ecmp group_id 0")

    with pytest.raises(
        SwxError,
        match=r"table nexthops: commit failed.*ENOSPC.*applied: table "
        r"l2_fwd; dropped: table nexthops, table routes",
    ):
        pipeline.commit()

    assert [p for p, _ in pipeline.process(0, frame(dst_mac="02:00:00:00:00:02"))] == [3]
    assert pipeline.process(0, frame()) == []  # no route: routes and nexthops stayed empty
    pipeline.commit()  # nothing left staged
    assert pipeline.table_stats("routes").actions["route_ecmp"] == 0


def test_selector_members_that_cannot_fit_are_refused_when_staged(pipeline):
    group = pipeline.selector_group_add("ecmp")

    with pytest.raises(SwxError, match="member id 16 out of range"):
        pipeline.selector_group_member_add("ecmp", group, 16)
    pipeline.selector_group_member_add("ecmp", group, 0, weight=3)
    with pytest.raises(SwxError, match=r"weights \[3, 16\] need more than its 16 slots"):
        pipeline.selector_group_member_add("ecmp", group, 1, weight=16)
    with pytest.raises(SwxError, match="no group 9"):
        pipeline.selector_group_member_add("ecmp", 9, 1)


def test_selector_weights_share_the_flows_in_proportion(pipeline):
    group_a, _ = install_routing(pipeline)
    pipeline.selector_group_member_add("ecmp", group_a, 1, weight=3)
    pipeline.commit()

    ports = [
        port
        for i in range(256)
        for port, _ in pipeline.process(0, frame(src=f"10.0.{i}.1", dst="10.1.9.9"))
    ]
    assert 2 * ports.count(1) < ports.count(2)  # 4 of 16 slots against 12


def test_a_malformed_entry_is_refused_with_the_expected_form(pipeline):
    with pytest.raises(SwxError, match=r"expected: match <1 values> action l2_forward\(port_out"):
        pipeline.table_add("l2_fwd", "match 0x020000000002 action nosuch")
    with pytest.raises(SwxError, match="no table named nosuch"):
        pipeline.table_add("nosuch", "match 1 action l2_miss")
    with pytest.raises(SwxError, match="table routes has no action l2_miss"):
        pipeline.default_entry("routes", "action l2_miss")
    with pytest.raises(SwxError, match="not allowed as the default entry"):
        pipeline.default_entry("flows", "action flow_known mark 1")


def test_a_port_bound_to_a_caller_fd_sends_there(tmp_path):
    engine_end, outside = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    engine_end.setblocking(False)
    outside.setblocking(False)
    with (
        engine_end,
        outside,
        SwxPipeline.load(SPEC, N_PORTS, MEMORY_MB, port_fds={2: engine_end.fileno()}) as p,
    ):
        p.table_add("l2_fwd", "match 0x020000000002 action l2_forward port_out 2 smac 0x1")
        p.commit()

        assert p.process(0, frame(dst_mac="02:00:00:00:00:02")) == []  # not a test port
        assert Ether(outside.recv(65536)).dst == "02:00:00:00:00:02"
        with pytest.raises(SwxError, match="not a test port"):
            p.process(2, frame())


def test_frames_waiting_on_caller_fds_cross_the_pipeline_when_it_runs_until_idle():
    """What the target's run loop relies on: frames written to a bound port's fd move only
    while the pipeline runs, every one of them has left once it reports idle, and an idle
    pipeline reports so at once."""
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(2)]
    for pair in pairs:
        for end in pair:
            end.setblocking(False)
    (in_engine, in_outside), (out_engine, out_outside) = pairs
    fds = {1: in_engine.fileno(), 2: out_engine.fileno()}
    with SwxPipeline.load(SPEC, N_PORTS, MEMORY_MB, port_fds=fds) as p:
        p.table_add("l2_fwd", "match 0x020000000002 action l2_forward port_out 2 smac 0x1")
        p.commit()
        assert p.run_until_idle(10_000)

        sent = [frame(dst_mac="02:00:00:00:00:02", sport=40000 + i) for i in range(100)]
        for data in sent:
            in_outside.send(data)
        with pytest.raises(BlockingIOError):
            out_outside.recv(65536)  # nothing moves while the pipeline does not run

        assert not p.run_until_idle(100)  # a slice too short for 100 frames: call again
        assert p.run_until_idle(10_000_000)
        received = []
        while True:
            try:
                received.append(Ether(out_outside.recv(65536)))
            except BlockingIOError:
                break
        assert [f[TCP].sport for f in received] == [f[TCP].sport for f in map(Ether, sent)]
        assert p.port_stats(1).rx_packets == 100 and p.port_stats(2).tx_packets == 100
    for pair in pairs:
        for end in pair:
            end.close()


def test_the_eal_cannot_grow_once_started(pipeline):
    with pytest.raises(SwxError, match="cannot resize"):
        engine.init_eal(MEMORY_MB * 4)


def test_a_learner_default_dpdk_would_misread_is_refused():
    with SwxPipeline.load(SPEC.with_name("learner_late_actions.spec"), 1, MEMORY_MB) as p:
        with pytest.raises(SwxError, match=r"DPDK 22\.11 can only set a learner default action"):
            p.default_entry("flows", "action learn_it")
        assert p.process(0, frame()) == [(0, frame())]


def test_a_selector_not_sized_in_powers_of_two_is_refused():
    with pytest.raises(SwxError, match=r"selector lb: n_groups_max 12 .* must be powers of two"):
        SwxPipeline.load(SPEC.with_name("selector_not_pow2.spec"), 1, MEMORY_MB)
