"""TableStore: P4Runtime validation, read semantics and lookups, on a small test P4Info."""

from __future__ import annotations

import ipaddress

import pytest
from finsy.proto import p4i, p4r, rpc_code
from hypothesis import given, settings
from hypothesis import strategies as st

from felix_p4.softswitch.store import Lookup, P4RuntimeError, TableStore

EXACT, LPM, TERNARY, RANGE, OPTIONAL = (
    p4i.MatchField.EXACT,
    p4i.MatchField.LPM,
    p4i.MatchField.TERNARY,
    p4i.MatchField.RANGE,
    p4i.MatchField.OPTIONAL,
)
BOTH, TABLE_ONLY, DEFAULT_ONLY = (
    p4i.ActionRef.TABLE_AND_DEFAULT,
    p4i.ActionRef.TABLE_ONLY,
    p4i.ActionRef.DEFAULT_ONLY,
)

NO_ACTION, DROP, SET_PORT, SET_NHOP, PERMIT, DENY, SET_MARK = range(0x01000001, 0x01000008)
PORTS, ROUTES, ACL, MIXED, MARKS, LEARNED = range(0x02000001, 0x02000007)


def make_action(action_id: int, name: str, *params: tuple[str, int]) -> p4i.Action:
    return p4i.Action(
        preamble=p4i.Preamble(id=action_id, name=name),
        params=[p4i.Action.Param(id=i, name=n, bitwidth=w) for i, (n, w) in enumerate(params, 1)],
    )


def make_table(
    table_id: int,
    name: str,
    fields: list[tuple[str, int, int]],
    actions: list[tuple[int, int]],
    **properties: object,
) -> p4i.Table:
    """Match field ids are 1.. in key order, as p4c assigns them."""
    return p4i.Table(
        preamble=p4i.Preamble(id=table_id, name=name),
        match_fields=[
            p4i.MatchField(id=i, name=n, bitwidth=w, match_type=kind)  # type: ignore[arg-type]
            for i, (n, w, kind) in enumerate(fields, 1)
        ],
        action_refs=[p4i.ActionRef(id=a, scope=scope) for a, scope in actions],  # type: ignore[arg-type]
        **properties,  # type: ignore[arg-type]
    )


def build_p4info() -> p4i.P4Info:
    return p4i.P4Info(
        actions=[
            make_action(NO_ACTION, "NoAction"),
            make_action(DROP, "drop"),
            make_action(SET_PORT, "set_port", ("port", 9)),
            make_action(SET_NHOP, "set_nhop", ("nhop", 16)),
            make_action(PERMIT, "permit"),
            make_action(DENY, "deny"),
            make_action(SET_MARK, "set_mark", ("mark", 8)),
        ],
        tables=[
            make_table(
                PORTS,
                "ports",
                [("port", 9, EXACT), ("vlan", 12, EXACT)],
                [(SET_PORT, BOTH), (DROP, BOTH), (NO_ACTION, DEFAULT_ONLY)],
                size=4,
            ),
            make_table(
                ROUTES,
                "routes",
                [("vrf", 8, EXACT), ("dst", 32, LPM)],
                [(SET_NHOP, BOTH), (DROP, BOTH)],
                size=64,
            ),
            make_table(
                ACL,
                "acl",
                [("src", 32, TERNARY), ("dport", 16, RANGE), ("proto", 8, OPTIONAL)],
                [(PERMIT, BOTH), (DENY, BOTH), (SET_MARK, TABLE_ONLY)],
                size=64,
                const_default_action_id=DENY,
            ),
            make_table(
                MIXED,
                "mixed",
                [("dst", 32, LPM), ("flags", 8, TERNARY)],
                [(PERMIT, BOTH), (DENY, BOTH)],
                size=64,
            ),
            make_table(MARKS, "marks", [], [(SET_MARK, DEFAULT_ONLY)]),
            make_table(
                LEARNED,
                "learned",
                [("key", 32, EXACT)],
                [(SET_PORT, BOTH), (DROP, DEFAULT_ONLY)],
                size=2,
                idle_timeout_behavior=p4i.Table.NOTIFY_CONTROL,
            ),
        ],
    )


INITIAL_DEFAULTS = {"ports": ("drop", {}), "marks": ("set_mark", {"mark": 7})}


def new_store() -> TableStore:
    return TableStore(build_p4info(), initial_defaults=INITIAL_DEFAULTS)


def enc(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def exact(fid: int, value: int | bytes) -> p4r.FieldMatch:
    raw = value if isinstance(value, bytes) else enc(value)
    return p4r.FieldMatch(field_id=fid, exact=p4r.FieldMatch.Exact(value=raw))


def lpm(fid: int, value: int, plen: int) -> p4r.FieldMatch:
    return p4r.FieldMatch(field_id=fid, lpm=p4r.FieldMatch.LPM(value=enc(value), prefix_len=plen))


def ternary(fid: int, value: int, mask: int) -> p4r.FieldMatch:
    return p4r.FieldMatch(
        field_id=fid, ternary=p4r.FieldMatch.Ternary(value=enc(value), mask=enc(mask))
    )


def span(fid: int, low: int, high: int) -> p4r.FieldMatch:
    return p4r.FieldMatch(field_id=fid, range=p4r.FieldMatch.Range(low=enc(low), high=enc(high)))


def optional(fid: int, value: int) -> p4r.FieldMatch:
    return p4r.FieldMatch(field_id=fid, optional=p4r.FieldMatch.Optional(value=enc(value)))


def ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def action(action_id: int, *params: int | bytes) -> p4r.TableAction:
    return p4r.TableAction(
        action=p4r.Action(
            action_id=action_id,
            params=[
                p4r.Action.Param(param_id=i, value=v if isinstance(v, bytes) else enc(v))
                for i, v in enumerate(params, 1)
            ],
        )
    )


def entry(
    table_id: int,
    *match: p4r.FieldMatch,
    act: p4r.TableAction | None = None,
    **fields: object,
) -> p4r.TableEntry:
    te = p4r.TableEntry(table_id=table_id, match=match, **fields)  # type: ignore[arg-type]
    if act is not None:
        te.action.CopyFrom(act)
    return te


def update(kind: int, te: p4r.TableEntry) -> p4r.Update:
    return p4r.Update(type=kind, entity=p4r.Entity(table_entry=te))  # type: ignore[arg-type]


def insert(store: TableStore, te: p4r.TableEntry) -> None:
    store.write(update(p4r.Update.INSERT, te))


def modify(store: TableStore, te: p4r.TableEntry) -> None:
    store.write(update(p4r.Update.MODIFY, te))


def delete(store: TableStore, te: p4r.TableEntry) -> None:
    store.write(update(p4r.Update.DELETE, te))


def read(store: TableStore, te: p4r.TableEntry) -> list[p4r.TableEntry]:
    return [e.table_entry for e in store.read(p4r.Entity(table_entry=te))]


def refused(code: int, write: object, *args: object) -> str:
    """Call write(*args); assert it raised P4RuntimeError with `code`; return its message."""
    with pytest.raises(P4RuntimeError) as info:
        write(*args)  # type: ignore[operator]
    assert info.value.code == code, info.value
    return info.value.message


# ----------------------------------------------------------------------- storage


def test_entries_are_stored_and_read_back_in_canonical_form() -> None:
    store = new_store()
    # Leading zero bytes are legal on the wire; the store keeps the shortest form.
    written = entry(
        PORTS, exact(2, b"\x00\x00\x05"), exact(1, b"\x00\x03"), act=action(SET_PORT, b"\x00\x07")
    )
    insert(store, written)
    [back] = read(store, entry(PORTS))
    assert back == entry(PORTS, exact(1, 3), exact(2, 5), act=action(SET_PORT, 7))


def test_a_stored_entry_reads_back_exactly_as_written_when_canonical() -> None:
    store = new_store()
    written = entry(
        ACL,
        ternary(1, ip("10.0.0.0"), 0xFF000000),
        span(2, 80, 443),
        optional(3, 6),
        act=action(PERMIT),
        priority=10,
        metadata=b"cookie",
        controller_metadata=42,
    )
    insert(store, written)
    assert read(store, entry(ACL)) == [written]


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (entry(PORTS, exact(1, 512), exact(2, 1), act=action(DROP)), "does not fit in 9 bits"),
        (entry(PORTS, exact(1, b""), exact(2, 1), act=action(DROP)), "empty bytestring"),
        (entry(PORTS, exact(1, 3), act=action(DROP)), "exact match field vlan is missing"),
        (entry(PORTS, exact(1, 3), exact(2, 1), exact(9, 1), act=action(DROP)), "field id 9"),
        (entry(PORTS, exact(1, 3), exact(1, 4), exact(2, 1), act=action(DROP)), "given twice"),
        (entry(PORTS, lpm(1, 3, 9), exact(2, 1), act=action(DROP)), "is exact"),
        (entry(ROUTES, exact(1, 0), lpm(2, ip("10.0.0.1"), 8), act=action(DROP)), "beyond prefix"),
        (entry(ROUTES, exact(1, 0), lpm(2, ip("10.0.0.0"), 33), act=action(DROP)), "outside 1..32"),
        (entry(ROUTES, exact(1, 0), lpm(2, 0, 0), act=action(DROP)), "omit the field"),
        (entry(ACL, ternary(1, 0x0F, 0xF0), act=action(PERMIT), priority=1), "outside mask"),
        (entry(ACL, ternary(1, 0, 0), act=action(PERMIT), priority=1), "omit the field"),
        (entry(ACL, span(2, 9, 8), act=action(PERMIT), priority=1), "low 9 > high 8"),
        (entry(ACL, span(2, 0, 0xFFFF), act=action(PERMIT), priority=1), "omit the field"),
        (entry(ACL, optional(3, 6), act=action(PERMIT)), "priority must be > 0"),
        (entry(ACL, optional(3, 6), act=action(PERMIT), priority=-1), "priority must be > 0"),
        (entry(PORTS, exact(1, 1), exact(2, 1), act=action(DROP), priority=5), "must be 0"),
        (entry(PORTS, exact(1, 1), exact(2, 1), act=action(SET_NHOP, 1)), "not one of its"),
        (entry(PORTS, exact(1, 1), exact(2, 1), act=action(SET_PORT)), "param port is missing"),
        (entry(PORTS, exact(1, 1), exact(2, 1), act=action(SET_PORT, 1, 2)), "unknown param"),
        (entry(PORTS, exact(1, 1), exact(2, 1), act=action(SET_PORT, 512)), "fit in 9 bits"),
        (entry(PORTS, exact(1, 1), exact(2, 1)), "INSERT needs an action"),
        (entry(0x02000099, act=action(DROP)), "unknown table id"),
        (entry(MARKS, act=action(SET_MARK, 1)), "has no key"),
        (entry(PORTS, exact(1, 1), exact(2, 1), act=action(DROP), is_const=True), "is_const"),
        (entry(PORTS, exact(1, 1), exact(2, 1), act=action(DROP), idle_timeout_ns=5), "idle"),
    ],
)
def test_malformed_inserts_are_invalid_argument(bad: p4r.TableEntry, words: str) -> None:
    store = new_store()
    message = refused(rpc_code.INVALID_ARGUMENT, insert, store, bad)
    assert words in message
    assert read(store, entry(0)) == []


def test_action_scope_violations_are_permission_denied() -> None:
    store = new_store()
    default_only = entry(PORTS, exact(1, 1), exact(2, 1), act=action(NO_ACTION))
    assert "@defaultonly" in refused(rpc_code.PERMISSION_DENIED, insert, store, default_only)
    table_only = entry(ACL, act=action(SET_MARK, 1), is_default_action=True)
    refused(rpc_code.PERMISSION_DENIED, modify, store, table_only)


def test_other_entities_are_unimplemented() -> None:
    store = new_store()
    counter = p4r.Update(
        type=p4r.Update.INSERT, entity=p4r.Entity(counter_entry=p4r.CounterEntry(counter_id=1))
    )
    refused(rpc_code.UNIMPLEMENTED, store.write, counter)
    refused(rpc_code.INVALID_ARGUMENT, store.write, p4r.Update(type=p4r.Update.INSERT))


def test_insert_of_an_existing_key_is_already_exists_and_changes_nothing() -> None:
    store = new_store()
    insert(store, entry(PORTS, exact(1, 1), exact(2, 1), act=action(SET_PORT, 2)))
    again = entry(PORTS, exact(1, 1), exact(2, 1), act=action(SET_PORT, 3))
    assert "port=1" in refused(rpc_code.ALREADY_EXISTS, insert, store, again)
    assert store.lookup("ports", {"port": 1, "vlan": 1}).params == {"port": 2}


def test_priority_is_part_of_the_key() -> None:
    store = new_store()
    insert(store, entry(ACL, optional(3, 6), act=action(PERMIT), priority=1))
    insert(store, entry(ACL, optional(3, 6), act=action(DENY), priority=2))
    assert store.entry_count("acl") == 2
    delete(store, entry(ACL, optional(3, 6), priority=1))
    assert [e.priority for e in read(store, entry(ACL))] == [2]


def test_modify_and_delete_of_a_missing_key_are_not_found() -> None:
    store = new_store()
    missing = entry(PORTS, exact(1, 1), exact(2, 1), act=action(DROP))
    refused(rpc_code.NOT_FOUND, modify, store, missing)
    refused(rpc_code.NOT_FOUND, delete, store, missing)


def test_modify_replaces_the_action_and_keeps_it_when_unset() -> None:
    store = new_store()
    insert(store, entry(PORTS, exact(1, 1), exact(2, 1), act=action(SET_PORT, 2)))
    modify(store, entry(PORTS, exact(1, 1), exact(2, 1), act=action(SET_PORT, 4)))
    assert store.lookup("ports", {"port": 1, "vlan": 1}).params == {"port": 4}
    modify(store, entry(PORTS, exact(1, 1), exact(2, 1), metadata=b"m"))
    [back] = read(store, entry(PORTS))
    assert back.metadata == b"m"
    assert back.action == action(SET_PORT, 4)


def test_delete_looks_only_at_the_key() -> None:
    store = new_store()
    insert(store, entry(PORTS, exact(1, 1), exact(2, 1), act=action(SET_PORT, 2)))
    delete(store, entry(PORTS, exact(1, 1), exact(2, 1), act=action(0x01999999, 1, 2, 3)))
    assert store.entry_count("ports") == 0


def test_insert_beyond_the_table_size_is_resource_exhausted() -> None:
    store = new_store()
    for port in range(4):
        insert(store, entry(PORTS, exact(1, port), exact(2, 1), act=action(DROP)))
    fifth = entry(PORTS, exact(1, 4), exact(2, 1), act=action(DROP))
    refused(rpc_code.RESOURCE_EXHAUSTED, insert, store, fifth)
    delete(store, entry(PORTS, exact(1, 0), exact(2, 1)))
    insert(store, fifth)
    assert store.entry_count("ports") == 4


# ----------------------------------------------------------------- default entry


def test_initial_defaults_come_from_the_model_the_const_default_or_no_action() -> None:
    store = new_store()
    assert store.lookup("ports", {"port": 1, "vlan": 1}) == Lookup("ports", False, "drop", {})
    assert store.lookup("marks", {}) == Lookup("marks", False, "set_mark", {"mark": 7})
    assert store.lookup("acl", {"src": 1, "dport": 1, "proto": 1}).action == "deny"
    assert store.lookup("routes", {"vrf": 0, "dst": 1}).action == "NoAction"


def test_default_entry_is_read_with_is_default_action() -> None:
    store = new_store()
    [default] = read(store, entry(MARKS, is_default_action=True))
    assert default == entry(MARKS, act=action(SET_MARK, 7), is_default_action=True)
    [const] = read(store, entry(ACL, is_default_action=True))
    assert const.is_const and const.action.action.action_id == DENY


def test_default_entry_modify_then_reset_by_modify_without_action() -> None:
    store = new_store()
    modify(store, entry(PORTS, act=action(SET_PORT, 9), is_default_action=True))
    assert store.lookup("ports", {"port": 1, "vlan": 1}).params == {"port": 9}
    modify(store, entry(PORTS, is_default_action=True))
    assert store.lookup("ports", {"port": 1, "vlan": 1}).action == "drop"


def test_default_entry_refuses_insert_delete_match_and_const() -> None:
    store = new_store()
    default = entry(PORTS, act=action(DROP), is_default_action=True)
    refused(rpc_code.INVALID_ARGUMENT, insert, store, default)
    refused(rpc_code.INVALID_ARGUMENT, delete, store, default)
    with_match = entry(PORTS, exact(1, 1), act=action(DROP), is_default_action=True)
    refused(rpc_code.INVALID_ARGUMENT, modify, store, with_match)
    const = entry(ACL, act=action(PERMIT), is_default_action=True)
    assert "const" in refused(rpc_code.PERMISSION_DENIED, modify, store, const)


def test_p4info_initial_default_action_is_used_and_must_agree_with_the_model() -> None:
    p4info = build_p4info()
    p4info.tables[1].initial_default_action.CopyFrom(
        p4i.TableActionCall(
            action_id=SET_NHOP,
            arguments=[p4i.TableActionCall.Argument(param_id=1, value=b"\x05")],
        )
    )
    store = TableStore(p4info)
    assert store.lookup("routes", {"vrf": 0, "dst": 1}).params == {"nhop": 5}
    agreeing = TableStore(p4info, initial_defaults={"routes": ("set_nhop", {"nhop": 5})})
    assert agreeing.lookup("routes", {"vrf": 0, "dst": 1}).action == "set_nhop"
    with pytest.raises(P4RuntimeError, match="differs"):
        TableStore(p4info, initial_defaults={"routes": ("drop", {})})


def test_initial_defaults_must_name_real_tables_and_actions() -> None:
    with pytest.raises(P4RuntimeError, match="not in the P4Info"):
        TableStore(build_p4info(), initial_defaults={"nope": ("drop", {})})
    with pytest.raises(P4RuntimeError, match="is not its action"):
        TableStore(build_p4info(), initial_defaults={"ports": ("set_nhop", {"nhop": 1})})
    with pytest.raises(P4RuntimeError, match="not its const default"):
        TableStore(build_p4info(), initial_defaults={"acl": ("permit", {})})


def test_without_no_action_a_table_default_is_an_empty_miss() -> None:
    p4info = build_p4info()
    del p4info.actions[0]  # NoAction
    del p4info.tables[0].action_refs[2]
    assert TableStore(p4info).lookup("routes", {"vrf": 0, "dst": 1}) == Lookup(
        "routes", False, "", {}
    )


# ------------------------------------------------------------------------- reads


def populated() -> TableStore:
    store = new_store()
    insert(store, entry(PORTS, exact(1, 1), exact(2, 10), act=action(SET_PORT, 2)))
    insert(store, entry(PORTS, exact(1, 2), exact(2, 10), act=action(DROP)))
    insert(store, entry(ROUTES, exact(1, 0), lpm(2, ip("10.0.0.0"), 8), act=action(SET_NHOP, 1)))
    insert(store, entry(ACL, optional(3, 6), act=action(PERMIT), priority=5, metadata=b"x"))
    insert(store, entry(ACL, optional(3, 6), act=action(DENY), priority=7))
    insert(store, entry(ACL, optional(3, 17), act=action(PERMIT), priority=7))
    return store


def test_read_with_table_id_zero_returns_every_entry() -> None:
    assert len(read(populated(), entry(0))) == 6


def test_read_of_one_table_and_of_one_key() -> None:
    store = populated()
    assert len(read(store, entry(PORTS))) == 2
    [one] = read(store, entry(PORTS, exact(1, 2), exact(2, 10)))
    assert one.action == action(DROP)
    assert read(store, entry(PORTS, exact(1, 3), exact(2, 10))) == []


def test_read_filters_priority_action_and_metadata() -> None:
    store = populated()
    assert len(read(store, entry(ACL, optional(3, 6)))) == 2  # priority 0: any priority
    assert len(read(store, entry(ACL, optional(3, 6), priority=7))) == 1
    assert len(read(store, entry(ACL, priority=7))) == 2
    assert len(read(store, entry(ACL, act=action(PERMIT)))) == 2
    assert len(read(store, entry(ACL, metadata=b"x"))) == 1


def test_read_of_defaults_for_all_tables() -> None:
    defaults = read(new_store(), entry(0, is_default_action=True))
    assert len(defaults) == 6 and all(d.is_default_action for d in defaults)


def test_read_requests_that_cannot_be_answered() -> None:
    store = new_store()
    refused(rpc_code.INVALID_ARGUMENT, read, store, entry(0, exact(1, 1)))
    refused(rpc_code.INVALID_ARGUMENT, read, store, entry(0x02000099))
    refused(rpc_code.INVALID_ARGUMENT, read, store, entry(PORTS, exact(1, 999)))
    counters = p4r.Entity(counter_entry=p4r.CounterEntry())
    refused(rpc_code.UNIMPLEMENTED, store.read, counters)


def test_idle_timeout_is_stored_and_time_since_last_hit_read() -> None:
    store = new_store()
    insert(store, entry(LEARNED, exact(1, 5), act=action(SET_PORT, 1), idle_timeout_ns=10**9))
    store.lookup("learned", {"key": 5})
    query = entry(LEARNED)
    query.time_since_last_hit.SetInParent()
    [back] = read(store, query)
    assert back.idle_timeout_ns == 10**9
    assert 0 <= back.time_since_last_hit.elapsed_ns < 10**9
    [plain] = read(store, entry(LEARNED))
    assert not plain.HasField("time_since_last_hit")
    other = entry(PORTS)
    other.time_since_last_hit.SetInParent()
    refused(rpc_code.INVALID_ARGUMENT, read, store, other)


# ----------------------------------------------------------------------- lookups


def test_exact_lookup_hits_by_all_fields() -> None:
    store = populated()
    hit = store.lookup("ports", {"port": 1, "vlan": 10})
    assert hit == Lookup("ports", True, "set_port", {"port": 2}, 0, {"port": 1, "vlan": 10})
    assert not store.lookup("ports", {"port": 1, "vlan": 11}).hit


def test_lookup_needs_every_match_field() -> None:
    with pytest.raises(KeyError, match="vlan"):
        new_store().lookup("ports", {"port": 1})


def test_lpm_lookup_takes_the_longest_prefix_within_the_exact_fields() -> None:
    store = new_store()
    routes = [
        (0, None, 1),
        (0, ("10.0.0.0", 8), 2),
        (0, ("10.1.0.0", 16), 3),
        (0, ("10.1.2.3", 32), 4),
        (1, ("10.0.0.0", 8), 5),
    ]
    for vrf, prefix, hop in routes:
        match = [exact(1, vrf)] + ([lpm(2, ip(prefix[0]), prefix[1])] if prefix else [])
        insert(store, entry(ROUTES, *match, act=action(SET_NHOP, hop)))

    def nhop(vrf: int, dst: str) -> int | None:
        result = store.lookup("routes", {"vrf": vrf, "dst": ip(dst)})
        return result.params["nhop"] if result.hit else None

    assert nhop(0, "10.1.2.3") == 4
    assert nhop(0, "10.1.2.4") == 3
    assert nhop(0, "10.2.0.0") == 2
    assert nhop(0, "192.168.0.1") == 1
    assert nhop(1, "10.1.2.3") == 5
    assert nhop(1, "11.0.0.0") is None
    assert store.lookup("routes", {"vrf": 0, "dst": ip("10.1.0.1")}).match == {
        "vrf": 0,
        "dst": "10.1.0.0/16",
    }
    delete(store, entry(ROUTES, exact(1, 0), lpm(2, ip("10.1.0.0"), 16)))
    assert nhop(0, "10.1.2.4") == 2


def test_ternary_range_optional_lookup_takes_the_highest_priority() -> None:
    store = new_store()
    insert(
        store, entry(ACL, ternary(1, ip("10.0.0.0"), 0xFF000000), act=action(PERMIT), priority=1)
    )
    insert(store, entry(ACL, span(2, 80, 90), optional(3, 6), act=action(SET_MARK, 3), priority=5))
    insert(store, entry(ACL, ternary(1, ip("10.9.0.0"), 0xFFFF0000), act=action(DENY), priority=3))

    def verdict(src: str, dport: int, proto: int) -> str:
        return store.lookup("acl", {"src": ip(src), "dport": dport, "proto": proto}).action

    assert verdict("10.1.1.1", 22, 6) == "permit"
    assert verdict("10.9.1.1", 22, 6) == "deny"
    assert verdict("10.9.1.1", 80, 6) == "set_mark"
    assert verdict("10.9.1.1", 90, 6) == "set_mark"
    assert verdict("10.9.1.1", 91, 6) == "deny"
    assert verdict("10.9.1.1", 85, 17) == "deny"
    assert verdict("11.0.0.0", 85, 17) == "deny"  # the const default
    hit = store.lookup("acl", {"src": ip("1.1.1.1"), "dport": 85, "proto": 6})
    assert hit.priority == 5 and hit.match == {"dport": "80..90", "proto": 6}


def test_with_lpm_and_ternary_fields_priority_decides_not_prefix_length() -> None:
    store = new_store()
    insert(store, entry(MIXED, lpm(1, ip("10.0.0.0"), 8), act=action(DENY), priority=10))
    insert(store, entry(MIXED, lpm(1, ip("10.1.0.0"), 16), act=action(PERMIT), priority=5))
    insert(store, entry(MIXED, ternary(2, 1, 1), act=action(PERMIT), priority=20))
    assert store.lookup("mixed", {"dst": ip("10.1.0.1"), "flags": 0}).action == "deny"
    assert store.lookup("mixed", {"dst": ip("10.1.0.1"), "flags": 3}).action == "permit"
    assert store.lookup("mixed", {"dst": ip("10.1.0.1"), "flags": 3}).match == {"flags": "0x1/0x1"}


@settings(max_examples=60, deadline=None)
@given(
    rules=st.lists(
        st.tuples(
            st.integers(0, 255), st.integers(1, 255), st.integers(0, 255), st.integers(0, 255)
        ),
        max_size=12,
        unique_by=lambda r: r[0],
    ),
    packets=st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 255)), max_size=20),
)
def test_tcam_lookup_equals_a_direct_evaluation(
    rules: list[tuple[int, int, int, int]], packets: list[tuple[int, int]]
) -> None:
    """Random ternary/range rules with distinct priorities against the obvious reference."""
    store = new_store()
    installed = []
    for priority, mask, value, low in rules:
        rule = (priority + 1, mask, value & mask, low, min(low + 40, 255))
        match = [ternary(1, rule[2] << 24, rule[1] << 24), span(2, rule[3], rule[4])]
        insert(store, entry(ACL, *match, act=action(PERMIT), priority=rule[0]))
        installed.append(rule)
    for src, dport in packets:
        matching = [r for r in installed if (src >> 24) & r[1] == r[2] and r[3] <= dport <= r[4]]
        expected = max(matching, default=None)
        result = store.lookup("acl", {"src": src, "dport": dport, "proto": 0})
        assert result.hit == (expected is not None)
        if expected is not None:
            assert result.priority == expected[0]


@settings(max_examples=60, deadline=None)
@given(
    prefixes=st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(1, 32)), max_size=15),
    addresses=st.lists(st.integers(0, 0xFFFFFFFF), max_size=20),
)
def test_lpm_lookup_equals_a_direct_evaluation(
    prefixes: list[tuple[int, int]], addresses: list[int]
) -> None:
    store = new_store()
    installed: dict[tuple[int, int], int] = {}
    for value, plen in prefixes:
        network = value & (((1 << plen) - 1) << (32 - plen))
        if (network, plen) not in installed:
            installed[(network, plen)] = len(installed) + 1
            insert(
                store,
                entry(
                    ROUTES, exact(1, 0), lpm(2, network, plen), act=action(SET_NHOP, len(installed))
                ),
            )
    for address in addresses:
        best = max(
            (
                (plen, nhop)
                for (network, plen), nhop in installed.items()
                if address >> (32 - plen) == network >> (32 - plen)
            ),
            default=None,
        )
        result = store.lookup("routes", {"vrf": 0, "dst": address})
        assert (result.params["nhop"] if result.hit else None) == (best[1] if best else None)


# ---------------------------------------------------------- batches and lifecycle


def test_write_atomic_undoes_every_applied_update_on_failure() -> None:
    store = populated()
    before = read(store, entry(0)) + read(store, entry(0, is_default_action=True))
    batch = [
        update(p4r.Update.INSERT, entry(PORTS, exact(1, 7), exact(2, 1), act=action(DROP))),
        update(p4r.Update.MODIFY, entry(PORTS, exact(1, 1), exact(2, 10), act=action(DROP))),
        update(p4r.Update.DELETE, entry(ROUTES, exact(1, 0), lpm(2, ip("10.0.0.0"), 8))),
        update(p4r.Update.MODIFY, entry(PORTS, act=action(SET_PORT, 1), is_default_action=True)),
        update(p4r.Update.DELETE, entry(ACL, optional(3, 6), priority=99)),
    ]
    failure = store.write_atomic(batch)
    assert failure is not None and failure[0] == 4 and failure[1].code == rpc_code.NOT_FOUND
    after = read(store, entry(0)) + read(store, entry(0, is_default_action=True))
    assert sorted(e.SerializeToString() for e in after) == sorted(
        e.SerializeToString() for e in before
    )
    assert store.lookup("routes", {"vrf": 0, "dst": ip("10.1.1.1")}).params == {"nhop": 1}
    assert store.write_atomic(batch[:4]) is None
    assert store.entry_count("ports") == 3


def test_dataplane_insert_adds_a_readable_entry_to_an_exact_table() -> None:
    store = new_store()
    store.dataplane_insert("learned", {"key": 9}, "set_port", {"port": 3})
    assert store.lookup("learned", {"key": 9}) == Lookup(
        "learned", True, "set_port", {"port": 3}, 0, {"key": 9}
    )
    assert read(store, entry(LEARNED)) == [entry(LEARNED, exact(1, 9), act=action(SET_PORT, 3))]
    store.dataplane_insert("learned", {"key": 10}, "set_port", {"port": 3})
    refused(
        rpc_code.RESOURCE_EXHAUSTED,
        store.dataplane_insert,
        "learned",
        {"key": 11},
        "set_port",
        {"port": 3},
    )
    refused(
        rpc_code.ALREADY_EXISTS,
        store.dataplane_insert,
        "learned",
        {"key": 9},
        "set_port",
        {"port": 1},
    )
    refused(
        rpc_code.INVALID_ARGUMENT,
        store.dataplane_insert,
        "routes",
        {"vrf": 0, "dst": 1},
        "drop",
        {},
    )
    refused(
        rpc_code.INVALID_ARGUMENT, store.dataplane_insert, "learned", {"key": 12}, "set_port", {}
    )
    refused(rpc_code.INVALID_ARGUMENT, store.dataplane_insert, "learned", {"key": 12}, "nope", {})


def test_clear_empties_tables_and_resets_defaults() -> None:
    store = populated()
    modify(store, entry(PORTS, act=action(SET_PORT, 9), is_default_action=True))
    store.clear()
    assert read(store, entry(0)) == []
    assert store.lookup("ports", {"port": 1, "vlan": 10}) == Lookup("ports", False, "drop", {})
    assert store.lookup("routes", {"vrf": 0, "dst": ip("10.0.0.1")}).action == "NoAction"


def test_carry_over_keeps_only_tables_whose_shape_is_unchanged() -> None:
    old = populated()
    modify(old, entry(PORTS, act=action(SET_PORT, 9), is_default_action=True))
    changed = build_p4info()
    changed.tables[1].match_fields[1].bitwidth = 24  # routes.dst is now 24 bits wide
    new = TableStore(changed, initial_defaults=INITIAL_DEFAULTS)
    assert sorted(new.carry_over(old)) == ["acl", "learned", "marks", "mixed", "ports"]
    assert new.entry_count("ports") == 2 and new.entry_count("acl") == 3
    assert new.entry_count("routes") == 0
    assert new.lookup("ports", {"port": 9, "vlan": 9}).params == {"port": 9}
    insert(new, entry(PORTS, exact(1, 3), exact(2, 10), act=action(DROP)))
    assert [e.match[0].exact.value for e in read(new, entry(PORTS))] == [b"\x01", b"\x02", b"\x03"]


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda p: p.actions[1].preamble.__setattr__("id", NO_ACTION), "used by both"),
        (lambda p: p.tables[1].preamble.__setattr__("id", PORTS), "used by both"),
        (lambda p: p.tables[1].preamble.__setattr__("name", "ports"), "two tables named"),
        (lambda p: p.tables[0].match_fields[1].__setattr__("id", 1), "zero or repeated"),
        (lambda p: p.tables[0].match_fields[1].__setattr__("bitwidth", 0), "no bitwidth"),
        (lambda p: p.tables[0].action_refs.add(id=0x01000099), "not a known action"),
        (lambda p: p.actions[2].params.add(id=1, name="again", bitwidth=1), "zero or repeated"),
        (lambda p: p.tables[3].__setattr__("const_default_action_id", DROP), "not one of its"),
    ],
)
def test_inconsistent_p4info_is_invalid_argument(mutate: object, words: str) -> None:
    p4info = build_p4info()
    mutate(p4info)  # type: ignore[operator]
    with pytest.raises(P4RuntimeError, match=words) as info:
        TableStore(p4info)
    assert info.value.code == rpc_code.INVALID_ARGUMENT


def test_an_empty_p4info_is_a_valid_pipeline() -> None:
    assert read(TableStore(p4i.P4Info()), entry(0)) == []
