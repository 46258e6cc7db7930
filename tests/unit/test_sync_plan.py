"""The sync engine's plan: only differences, inserts and modifies before deletes, conflicts."""

from felix_p4.compile.services import ServiceCompiler
from felix_p4.p4.artefacts import DEFAULT_P4INFO, load_p4info
from felix_p4.p4.schema import PipelineSchema
from felix_p4.p4.sync import DELETE, INSERT, MODIFY, SyncEngine
from felix_p4.pipeline.entries import Exact, Lpm, TableEntry
from tests.unit.test_services_compile import NODE, _service, _slice

SCHEMA = PipelineSchema(load_p4info(DEFAULT_P4INFO))


def _engine() -> SyncEngine:
    return SyncEngine(SCHEMA, client=None)  # type: ignore[arg-type]  # plan() never writes


def _route(addr: int, port: int) -> TableEntry:
    return TableEntry.make(
        "routes_v4",
        {"dst": Lpm(addr, 32)},
        "to_workload",
        {"port": port, "dmac": 1, "smac": 2, "ingress_program": 1},
    )


def _port(port: int) -> TableEntry:
    return TableEntry.make(
        "port_classify", {"port": Exact(port)}, "workload_port", {"gateway_mac": 2}
    )


def test_installed_state_equal_to_desired_plans_nothing():
    engine = _engine()
    entries = [_port(1), _route(10, 1)]
    engine.set_owner("a", entries)
    engine.installed = {e.key: e for e in entries}
    assert engine.plan() == []


def test_plan_writes_before_it_deletes():
    engine = _engine()
    engine.installed = {e.key: e for e in [_port(9), _route(99, 9), _route(10, 1)]}
    engine.set_owner("a", [_route(10, 2), _port(1), _route(11, 1)])
    engine._dirty.update(engine.installed)
    ops = [(op.type, op.entry.table) for op in engine.plan()]
    # Make before break: what replaces an entry is in place before anything is removed;
    # writes in table order, deletes in reverse table order.
    assert ops[0] == (INSERT, "port_classify")
    assert sorted(ops[1:3]) == [(INSERT, "routes_v4"), (MODIFY, "routes_v4")]
    assert ops[3:] == [(DELETE, "routes_v4"), (DELETE, "port_classify")]


def test_only_changed_owners_are_diffed():
    engine = _engine()
    engine.set_owner("a", [_port(1)])
    engine.set_owner("b", [_port(2)])
    engine.installed = {e.key: e for e in [_port(1), _port(2)]}
    engine._dirty.clear()
    engine.set_owner("b", [_port(2), _route(20, 2)])
    assert [(op.type, op.entry) for op in engine.plan()] == [(INSERT, _route(20, 2))]


def test_shared_identical_entry_survives_one_owner_leaving():
    engine = _engine()
    engine.set_owner("a", [_port(1)])
    engine.set_owner("b", [_port(1)])
    engine.installed = {_port(1).key: _port(1)}
    engine.remove_owner("a")
    assert engine.plan() == []
    engine.remove_owner("b")
    assert [op.type for op in engine.plan()] == [DELETE]


def test_conflicting_claims_resolve_to_one_winner_and_back():
    engine = _engine()
    engine.set_owner("a", [_route(10, 1)])
    engine.set_owner("b", [_route(10, 2)])
    assert engine.desired(_route(10, 1).key) == _route(10, 1)
    engine.remove_owner("a")
    assert engine.desired(_route(10, 1).key) == _route(10, 2)


def test_a_front_end_never_points_at_buckets_not_yet_written_or_already_gone():
    compiler = ServiceCompiler()

    def web(*backends: str) -> list:
        return compiler.compile(_service(), [_slice(*backends)], NODE)

    engine = _engine()
    first = web("10.0.0.1", "10.0.0.2")
    engine.set_owner("web", first)
    engine.installed = {e.key: e for e in first}
    engine._dirty.clear()
    # 2 -> 3 backends: 2 buckets become 16 and the front end's mask widens after them.
    grown = web("10.0.0.1", "10.0.0.2", "10.0.0.3")
    engine.set_owner("web", grown)
    ops = [(op.type, op.entry.table) for op in engine.plan()]
    assert ops[-1] == (MODIFY, "services") and {t for _, t in ops[:-1]} == {"service_backends"}
    engine.installed = {e.key: e for e in grown}
    engine._dirty.clear()
    # And back: the mask narrows before the upper buckets go.
    engine.set_owner("web", web("10.0.0.1", "10.0.0.2"))
    ops = [(op.type, op.entry.table) for op in engine.plan()]
    narrowed = ops.index((MODIFY, "services"))
    assert [t for t, _ in ops[narrowed + 1 :]] == [DELETE] * 14
    assert DELETE not in [t for t, _ in ops[:narrowed]]
