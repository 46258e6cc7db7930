"""Policy programs: sharing, statefulness of the compiled pipeline, capacity."""

import ipaddress

import attrs
import pytest
from finsy.proto import p4r

from calico_proto import felixbackend_pb2 as fb
from felix_p4.compile.forwarding import ForwardingSettings, endpoint_entries, node_entries
from felix_p4.compile.ipsets import Classifier
from felix_p4.compile.policy import SET_BITS, CannotCompile, PolicyCompiler, program_spec
from felix_p4.felix.convert import workload_endpoint
from felix_p4.model.endpoints import WorkloadEndpointKey
from felix_p4.model.policy import IpSet, Policy, PolicyKey, Profile, Rule, TierInfo
from felix_p4.p4.artefacts import DEFAULT_P4INFO, load_p4info
from felix_p4.p4.schema import PipelineSchema
from felix_p4.pipeline import PROFILE_SECONDS, PROFILE_TCP
from felix_p4.softswitch.behavioural import FelixPipeline
from felix_p4.softswitch.packet import build
from felix_p4.softswitch.service import initial_defaults
from felix_p4.softswitch.store import TableStore

P4INFO = load_p4info(DEFAULT_P4INFO)
SCHEMA = PipelineSchema(P4INFO)
ALLOW = PolicyKey("allow-a-to-b", "default", "NetworkPolicy")
POLICIES = {
    ALLOW: Policy(
        ALLOW,
        "default",
        inbound=(Rule("allow", src_ip_sets=("s:a",), protocol=6),),
        outbound=(),
    )
}
PROFILES = {"kns.default": Profile("kns.default", (Rule("allow"),), (Rule("allow"),))}
SETS = {"s:a": IpSet("s:a", "NET", frozenset({(4, 0x0A000001, 32)}))}
# Both pods only accept TCP from pod a (a talking to itself included).
TIERS = (TierInfo("default", (ALLOW,), (), "Deny"),)


def _endpoint(name, ip, tiers=TIERS):
    pb = fb.WorkloadEndpoint(
        name=name,
        mac="0a:00:00:00:00:01",
        ipv4_nets=[f"{ip}/32"],
        state="active",
        profile_ids=["kns.default"],
    )
    ep = workload_endpoint(WorkloadEndpointKey("k8s", name, "eth0"), pb)
    return attrs.evolve(ep, tiers=tiers)


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


def _pipeline(clock=None):
    store = TableStore(P4INFO, initial_defaults=initial_defaults(P4INFO))
    compiler = PolicyCompiler(Classifier(SET_BITS))
    settings = ForwardingSettings(host_port=100)
    entries = list(node_entries(settings))
    programs = {}
    for name, ip, port in (("a", "10.0.0.1", 1), ("b", "10.0.0.2", 2)):
        ep = _endpoint(name, ip)
        ids = {}
        for d in ("egress", "ingress"):
            program = compiler.ensure(program_spec(ep, d, POLICIES, PROFILES), SETS.get)
            programs[(name, d)] = program
            ids[d] = program.id
        entries += endpoint_entries(ep, port, settings, ids["egress"], ids["ingress"])
    for program in {id(p): p for p in programs.values()}.values():
        entries += program.entries
    for owner in compiler.classifier.changed:
        entries += compiler.classifier.entries_for(owner)
    for entry in entries:
        store.write(
            p4r.Update(type=p4r.Update.INSERT, entity=p4r.Entity(table_entry=SCHEMA.encode(entry)))
        )
    return FelixPipeline(store, clock or Clock()), programs, store


def test_endpoints_with_the_same_tiers_and_profiles_share_one_program():
    _, programs, _ = _pipeline()
    assert programs[("a", "ingress")] is programs[("b", "ingress")]
    assert programs[("a", "egress")] is programs[("b", "egress")]
    assert programs[("a", "ingress")].id != 0


def _tcp(src, dst, sport, dport, flags="S"):
    return build(
        {"src": src, "dst": dst, "proto": "tcp", "sport": sport, "dport": dport, "tcp_flags": flags}
    )


def test_reply_of_an_allowed_flow_passes_and_a_denied_flow_learns_nothing():
    pipeline, _, store = _pipeline()
    # b -> a is denied (a only accepts from a): nothing learned.
    assert pipeline.process(2, _tcp("10.0.0.2", "10.0.0.1", 5000, 80)).verdict == "drop"
    assert store.entry_count("conntrack") == 0
    # a -> b is allowed and learned; b's reply then passes although b -> a is denied.
    assert pipeline.process(1, _tcp("10.0.0.1", "10.0.0.2", 4000, 80)).verdict == "forward"
    assert store.entry_count("conntrack") == 1
    reply = pipeline.process(2, _tcp("10.0.0.2", "10.0.0.1", 80, 4000, "SA"))
    assert reply.verdict == "forward"
    assert reply.trace[-1]["table"] == "conntrack" and reply.trace[-1]["hit"]
    # Another port pair is a new flow and policy still denies it.
    assert pipeline.process(2, _tcp("10.0.0.2", "10.0.0.1", 80, 4001, "SA")).verdict == "drop"


def test_trace_without_commit_learns_nothing():
    pipeline, _, store = _pipeline()
    assert (
        pipeline.process(1, _tcp("10.0.0.1", "10.0.0.2", 4000, 80), commit=False).verdict
        == "forward"
    )
    assert store.entry_count("conntrack") == 0


def test_learned_flow_expires_after_its_idle_timeout():
    clock = Clock()
    pipeline, _, store = _pipeline(clock)
    assert pipeline.process(1, _tcp("10.0.0.1", "10.0.0.2", 4000, 80)).verdict == "forward"
    tcp = PROFILE_SECONDS[PROFILE_TCP]
    clock.now += tcp - 1  # just inside TCP's idle timeout: the reply refreshes the entry
    assert pipeline.process(2, _tcp("10.0.0.2", "10.0.0.1", 80, 4000, "A")).verdict == "forward"
    clock.now += tcp + 1  # idle for longer than the timeout since that reply
    assert pipeline.process(2, _tcp("10.0.0.2", "10.0.0.1", 80, 4000, "A")).verdict == "drop"
    assert store.entry_count("conntrack") == 0


def test_more_blocks_than_stages_cannot_compile():
    compiler = PolicyCompiler(Classifier(SET_BITS))
    tiers = tuple(TierInfo(f"t{i}", (ALLOW,), (), "Pass") for i in range(compiler.stages))
    spec = program_spec(_endpoint("x", "10.0.0.9", tiers), "ingress", POLICIES, PROFILES)
    with pytest.raises(CannotCompile, match="stages"):
        compiler.ensure(spec, SETS.get)
    assert not compiler.programs


def test_profile_with_pass_ends_its_block_so_the_next_profile_decides():
    passing = Profile("p1", (Rule("pass", protocol=6), Rule("deny")), ())
    allowing = Profile("p2", (Rule("allow"),), ())
    ep = attrs.evolve(_endpoint("x", "10.0.0.9", ()), profile_ids=("p1", "p2"))
    spec = program_spec(ep, "ingress", {}, {"p1": passing, "p2": allowing})
    assert [b.end for b in spec.blocks] == ["none", "deny"]


def test_prefix_parsing_fast_path_agrees_with_ipaddress():
    from felix_p4.model.values import parse_prefix, prefix_of

    for text in ("10.1.2.3/32", "10.1.2.3", "10.1.2.99/24", "0.0.0.0/0", "fd00::1/64", "fd00::1"):
        assert parse_prefix(text, "t") == prefix_of(ipaddress.ip_network(text, strict=False))
    for bad in ("10.1.2.256/32", "10.1.2.3/33", "10.1.2/24", "10.1.2.3/", "x"):
        with pytest.raises(ValueError):
            parse_prefix(bad, "t")
