"""Any sequence of endpoint adds, changes and removals ends in the entries a fresh compile gives."""

from hypothesis import given
from hypothesis import strategies as st

from calico_proto import felixbackend_pb2 as fb
from felix_p4.compile.forwarding import ForwardingSettings, endpoint_entries, node_entries
from felix_p4.felix.convert import workload_endpoint
from felix_p4.model.endpoints import WorkloadEndpointKey
from felix_p4.p4.artefacts import DEFAULT_P4INFO, load_p4info
from felix_p4.p4.schema import PipelineSchema
from felix_p4.p4.sync import SyncEngine

SCHEMA = PipelineSchema(load_p4info(DEFAULT_P4INFO))
SETTINGS = ForwardingSettings(host_port=100)

names = st.sampled_from([f"cali-{i}" for i in range(6)])
endpoints = st.builds(
    lambda name, host, mac, v6: (name, host, mac, v6),
    names,
    st.integers(1, 8),  # small address space: collisions between pods happen
    st.integers(1, 2**47),
    st.booleans(),
)
operations = st.lists(st.one_of(endpoints, names.map(lambda n: (n, None, None, None))), max_size=30)


def _entries(name, host, mac, v6):
    pb = fb.WorkloadEndpoint(
        name=name,
        mac=":".join(f"{b:02x}" for b in mac.to_bytes(6, "big")),
        ipv4_nets=[f"10.65.0.{host}/32"],
        ipv6_nets=[f"fd00::{host}/128"] if v6 else [],
    )
    key = WorkloadEndpointKey("k8s", name, "eth0")
    port = int(name.split("-")[1]) + 1
    return key, endpoint_entries(workload_endpoint(key, pb), port, SETTINGS, 1, 1)


@given(operations)
def test_incremental_owner_updates_equal_a_fresh_compile(ops):
    incremental = SyncEngine(SCHEMA, client=None)  # type: ignore[arg-type]
    incremental.set_owner("node", node_entries(SETTINGS))
    final: dict[str, tuple] = {}
    for name, host, mac, v6 in ops:
        key = WorkloadEndpointKey("k8s", name, "eth0")
        if host is None:
            incremental.remove_owner(key)
            final.pop(name, None)
        else:
            incremental.set_owner(*_entries(name, host, mac, v6))
            final[name] = (name, host, mac, v6)
    scratch = SyncEngine(SCHEMA, client=None)  # type: ignore[arg-type]
    scratch.set_owner("node", node_entries(SETTINGS))
    for args in sorted(final.values()):
        scratch.set_owner(*_entries(*args))
    assert incremental.desired_entries() == scratch.desired_entries()
