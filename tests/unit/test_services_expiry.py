"""Learned service state in the behavioural model expires by the program's profiles: a pin
and a reverse mapping by the flow's protocol, an affinity entry by the affinity profile
(Kubernetes' 10800 s unless the target is told otherwise); a full learner stops learning."""

from finsy.proto import p4r

from calico_proto import felixbackend_pb2 as fb
from felix_p4.compile.forwarding import ForwardingSettings, endpoint_entries, node_entries
from felix_p4.compile.services import ServiceCompiler
from felix_p4.felix.convert import workload_endpoint
from felix_p4.model.endpoints import WorkloadEndpointKey
from felix_p4.p4.artefacts import DEFAULT_P4INFO, load_p4info
from felix_p4.p4.schema import PipelineSchema
from felix_p4.pipeline import DEFAULT_AFFINITY_SECONDS, PROFILE_SECONDS, PROFILE_TCP
from felix_p4.softswitch.behavioural import FelixPipeline
from felix_p4.softswitch.packet import build
from felix_p4.softswitch.service import initial_defaults
from felix_p4.softswitch.store import TableStore
from tests.unit.test_services_compile import NODE, _service, _slice

P4INFO = load_p4info(DEFAULT_P4INFO)
SCHEMA = PipelineSchema(P4INFO)


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


def _pipeline(clock, affinity, profile_seconds=None, limits=None):
    store = TableStore(P4INFO, initial_defaults=initial_defaults(P4INFO), limits=limits)
    settings = ForwardingSettings(host_port=100)
    pb = fb.WorkloadEndpoint(name="a", mac="0a:00:00:00:00:01", ipv4_nets=["10.0.0.1/32"])
    client = workload_endpoint(WorkloadEndpointKey("k8s", "a", "eth0"), pb)
    entries = [*node_entries(settings), *endpoint_entries(client, 1, settings, 0, 0)]
    spec = {"sessionAffinity": "ClientIP"} if affinity else {}
    entries += ServiceCompiler().compile(
        _service(**spec), [_slice(*(f"10.0.9.{i}" for i in range(1, 9)))], NODE
    )
    for entry in entries:
        store.write(
            p4r.Update(type=p4r.Update.INSERT, entity=p4r.Entity(table_entry=SCHEMA.encode(entry)))
        )
    return FelixPipeline(store, clock, profile_seconds), store


def _tcp(sport):
    return build(
        {"src": "10.0.0.1", "dst": "10.96.0.10", "proto": "tcp", "sport": sport, "dport": 80}
    )


def _hit(result, table):
    return any(s["table"] == table and s["hit"] for s in result.trace)


def test_a_pin_and_its_reverse_mapping_expire_after_the_protocols_idle_time():
    clock = Clock()
    pipeline, store = _pipeline(clock, affinity=False)
    assert pipeline.process(1, _tcp(4000)).verdict == "host"  # the backends are off-node
    assert store.entry_count("service_flows") == store.entry_count("service_replies") == 1
    tcp = PROFILE_SECONDS[PROFILE_TCP]
    clock.now += tcp - 1
    pipeline.process(1, _tcp(4000))  # a hit restarts the pin's expiry
    clock.now += tcp - 1
    assert _hit(pipeline.process(1, _tcp(4000), commit=False), "service_flows")
    clock.now += 2  # past the timeout since the last packet: the trace did not refresh it
    assert not _hit(pipeline.process(1, _tcp(4000), commit=False), "service_flows")
    assert store.entry_count("service_flows") == 0


def test_affinity_lasts_the_affinity_profile_not_the_protocols():
    clock = Clock()
    pipeline, store = _pipeline(clock, affinity=True)
    first = pipeline.process(1, _tcp(4000)).packet
    # Long after a TCP pin would have expired, a new flow of the client still goes to its backend.
    clock.now += DEFAULT_AFFINITY_SECONDS - 1
    assert pipeline.process(1, _tcp(5000)).packet[30:34] == first[30:34]
    assert store.entry_count("service_affinity") == 1
    clock.now += DEFAULT_AFFINITY_SECONDS + 1
    pipeline.process(1, _tcp(6000))
    assert store.entry_count("service_affinity") == 1  # relearned after expiry


def test_the_target_sets_the_affinity_timeout():
    clock = Clock()
    pipeline, _ = _pipeline(clock, affinity=True, profile_seconds={6: 60})
    pipeline.process(1, _tcp(4000))
    clock.now += 59
    assert _hit(pipeline.process(1, _tcp(4001), commit=False), "service_affinity")
    clock.now += 2
    assert not _hit(pipeline.process(1, _tcp(4002), commit=False), "service_affinity")


def test_a_full_learner_forwards_without_learning_until_entries_expire():
    clock = Clock()
    pipeline, store = _pipeline(clock, affinity=False, limits={"service_flows": 2})
    for sport in (4000, 4001, 4002):
        assert pipeline.process(1, _tcp(sport)).verdict == "host"
    assert store.entry_count("service_flows") == 2 and pipeline.learn_failures == 1
    # Once the first two are idle past their timeout, their slots take new flows.
    clock.now += PROFILE_SECONDS[PROFILE_TCP] + 1
    assert _hit(pipeline.process(1, _tcp(4003)), "service_flows") is False
    assert store.entry_count("service_flows") == 1 and pipeline.learn_failures == 1
