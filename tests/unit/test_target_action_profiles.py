"""TableStore action profiles and selectors: members, groups, indirect tables, selection."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable

import pytest
from finsy.proto import p4i, p4r, rpc_code
from hypothesis import given
from hypothesis import strategies as st
from test_target_tables import (
    BOTH,
    DEFAULT_ONLY,
    EXACT,
    LPM,
    action,
    enc,
    entry,
    exact,
    ip,
    lpm,
    make_action,
    make_table,
    read,
    refused,
)

from felix_p4.softswitch.store import Lookup, P4RuntimeError, TableStore

NO_ACTION, DROP, SET_NHOP, SET_PORT = range(0x01000001, 0x01000005)
ECMP, ECMP_BY_VRF, NEXTHOPS, WCMP, DIRECT = range(0x02000001, 0x02000006)
SELECTOR, PROFILE, MEMBER_SELECTOR = range(0x11000001, 0x11000004)
INSERT, MODIFY, DELETE = p4r.Update.INSERT, p4r.Update.MODIFY, p4r.Update.DELETE

SELECTED_ACTIONS = [(SET_NHOP, BOTH), (DROP, BOTH), (NO_ACTION, DEFAULT_ONLY)]


def build_p4info() -> p4i.P4Info:
    """selector (sum of weights, size 16, groups up to 8) behind ecmp and ecmp_by_vrf;
    profile (no selector, 3 members) behind nexthops; member_selector (sum of members,
    size 4, groups up to 3 members of weight up to 5) behind wcmp; direct has no profile."""
    return p4i.P4Info(
        actions=[
            make_action(NO_ACTION, "NoAction"),
            make_action(DROP, "drop"),
            make_action(SET_NHOP, "set_nhop", ("nhop", 16)),
            make_action(SET_PORT, "set_port", ("port", 9)),
        ],
        tables=[
            make_table(
                ECMP,
                "ecmp",
                [("dst", 32, LPM)],
                SELECTED_ACTIONS,
                size=8,
                implementation_id=SELECTOR,
            ),
            make_table(
                ECMP_BY_VRF,
                "ecmp_by_vrf",
                [("vrf", 8, EXACT)],
                SELECTED_ACTIONS,
                implementation_id=SELECTOR,
            ),
            make_table(
                NEXTHOPS,
                "nexthops",
                [("port", 9, EXACT)],
                SELECTED_ACTIONS,
                implementation_id=PROFILE,
            ),
            make_table(
                WCMP,
                "wcmp",
                [("port", 9, EXACT)],
                [(SET_NHOP, BOTH)],
                implementation_id=MEMBER_SELECTOR,
            ),
            make_table(DIRECT, "direct", [("port", 9, EXACT)], [(SET_PORT, BOTH)]),
        ],
        action_profiles=[
            p4i.ActionProfile(
                preamble=p4i.Preamble(id=SELECTOR, name="selector"),
                table_ids=[ECMP, ECMP_BY_VRF],
                with_selector=True,
                size=16,
                max_group_size=8,
            ),
            p4i.ActionProfile(
                preamble=p4i.Preamble(id=PROFILE, name="profile"), table_ids=[NEXTHOPS], size=3
            ),
            p4i.ActionProfile(
                preamble=p4i.Preamble(id=MEMBER_SELECTOR, name="member_selector"),
                table_ids=[WCMP],
                with_selector=True,
                size=4,
                max_group_size=3,
                sum_of_members=p4i.ActionProfile.SumOfMembers(max_member_weight=5),
            ),
        ],
    )


def new_store(p4info: p4i.P4Info | None = None) -> TableStore:
    return TableStore(p4info or build_p4info())


def member(
    member_id: int, nhop: int | None = 1, profile: int = SELECTOR, action_id: int = SET_NHOP
) -> p4r.ActionProfileMember:
    m = p4r.ActionProfileMember(action_profile_id=profile, member_id=member_id)
    if nhop is not None:
        params = [p4r.Action.Param(param_id=1, value=enc(nhop))] if action_id == SET_NHOP else []
        m.action.CopyFrom(p4r.Action(action_id=action_id, params=params))
    return m


def group(
    group_id: int,
    *members: tuple[int, int],
    profile: int = SELECTOR,
    max_size: int = 8,
) -> p4r.ActionProfileGroup:
    return p4r.ActionProfileGroup(
        action_profile_id=profile,
        group_id=group_id,
        members=[p4r.ActionProfileGroup.Member(member_id=m, weight=w) for m, w in members],
        max_size=max_size,
    )


Entity = p4r.TableEntry | p4r.ActionProfileMember | p4r.ActionProfileGroup


def update(kind: int, entity: Entity) -> p4r.Update:
    if isinstance(entity, p4r.TableEntry):
        wrapped = p4r.Entity(table_entry=entity)
    elif isinstance(entity, p4r.ActionProfileMember):
        wrapped = p4r.Entity(action_profile_member=entity)
    else:
        wrapped = p4r.Entity(action_profile_group=entity)
    return p4r.Update(type=kind, entity=wrapped)  # type: ignore[arg-type]


def write(store: TableStore, kind: int, entity: Entity) -> None:
    store.write(update(kind, entity))


def to_member(member_id: int) -> p4r.TableAction:
    return p4r.TableAction(action_profile_member_id=member_id)


def to_group(group_id: int) -> p4r.TableAction:
    return p4r.TableAction(action_profile_group_id=group_id)


def ecmp(dst: str, plen: int = 8, act: p4r.TableAction | None = None) -> p4r.TableEntry:
    return entry(ECMP, lpm(1, ip(dst), plen), act=act)


def read_members(store: TableStore, profile: int = 0, member_id: int = 0) -> list[int]:
    request = p4r.ActionProfileMember(action_profile_id=profile, member_id=member_id)
    found = store.read(p4r.Entity(action_profile_member=request))
    return [e.action_profile_member.member_id for e in found]


def read_groups(store: TableStore, profile: int = 0, group_id: int = 0) -> list[int]:
    request = p4r.ActionProfileGroup(action_profile_id=profile, group_id=group_id)
    found = store.read(p4r.Entity(action_profile_group=request))
    return [e.action_profile_group.group_id for e in found]


def populated() -> TableStore:
    """Members 1-3 (nhop 10, 20, 30) in the selector, group 7 = {1: weight 1, 2: weight 3}."""
    store = new_store()
    for member_id in (1, 2, 3):
        write(store, INSERT, member(member_id, member_id * 10))
    write(store, INSERT, group(7, (2, 3), (1, 1)))
    return store


# ----------------------------------------------------------------------- storage


def test_members_and_groups_read_back_canonical_and_by_wildcard() -> None:
    store = new_store()
    written = member(5)
    written.action.params[0].value = b"\x00\x00\x09"  # leading zeros are legal on the wire
    write(store, INSERT, written)
    write(store, INSERT, member(4, 8))
    write(store, INSERT, member(1, profile=PROFILE))
    watched = p4r.ActionProfileGroup.Member(member_id=4, weight=2, watch_port=b"\x01")
    write(store, INSERT, group(9, (5, 1)))
    unordered = group(3, (5, 1))
    unordered.members.append(watched)
    write(store, INSERT, unordered)

    selector_members = store.read(
        p4r.Entity(action_profile_member=p4r.ActionProfileMember(action_profile_id=SELECTOR))
    )
    assert [e.action_profile_member for e in selector_members] == [member(4, 8), member(5, 9)]
    assert read_members(store) == [4, 5, 1]
    assert read_members(store, SELECTOR, 5) == [5] and read_members(store, SELECTOR, 6) == []
    assert read_members(store, PROFILE) == [1]

    assert read_groups(store) == [3, 9] and read_groups(store, PROFILE) == []
    [three] = store.read(
        p4r.Entity(
            action_profile_group=p4r.ActionProfileGroup(action_profile_id=SELECTOR, group_id=3)
        )
    )
    # Members come back in member_id order, watch_port as written.
    expected = p4r.ActionProfileGroup(
        action_profile_id=SELECTOR,
        group_id=3,
        members=[watched, p4r.ActionProfileGroup.Member(member_id=5, weight=1)],
        max_size=8,
    )
    assert three.action_profile_group == expected
    assert store.member_count("selector") == 2 and store.group_count("selector") == 2
    assert store.member_count("profile") == 1 and store.group_count("profile") == 0


def test_reads_of_an_unknown_action_profile_are_invalid_argument() -> None:
    store = new_store()
    bad = p4r.Entity(action_profile_member=p4r.ActionProfileMember(action_profile_id=0x11000099))
    refused(rpc_code.INVALID_ARGUMENT, store.read, bad)
    bad = p4r.Entity(action_profile_group=p4r.ActionProfileGroup(action_profile_id=0x11000099))
    refused(rpc_code.INVALID_ARGUMENT, store.read, bad)


def test_an_indirect_entry_reads_back_as_written_and_hits_its_members_action() -> None:
    store = populated()
    write(store, INSERT, ecmp("10.0.0.0", act=to_member(3)))
    write(store, INSERT, ecmp("11.0.0.0", act=to_group(7)))
    assert read(store, entry(ECMP)) == [
        ecmp("10.0.0.0", act=to_member(3)),
        ecmp("11.0.0.0", act=to_group(7)),
    ]
    assert store.lookup("ecmp", {"dst": ip("10.1.2.3")}) == Lookup(
        "ecmp", True, "set_nhop", {"nhop": 30}, 0, {"dst": "10.0.0.0/8"}, b"", 3, 0
    )
    chosen = store.lookup("ecmp", {"dst": ip("11.1.2.3")}, selector_hash=0)
    assert (chosen.action, chosen.params, chosen.member_id, chosen.group_id) == (
        "set_nhop",
        {"nhop": 10},
        1,
        7,
    )
    assert store.lookup("ecmp", {"dst": ip("12.0.0.1")}) == Lookup("ecmp", False, "NoAction", {})
    assert store.entry_count("ecmp") == 2


def test_read_of_an_indirect_table_filters_by_member_or_group() -> None:
    store = populated()
    write(store, INSERT, ecmp("10.0.0.0", act=to_member(3)))
    write(store, INSERT, ecmp("11.0.0.0", act=to_group(7)))
    write(store, INSERT, ecmp("12.0.0.0", act=to_member(1)))
    assert read(store, entry(ECMP, act=to_member(3))) == [ecmp("10.0.0.0", act=to_member(3))]
    assert read(store, entry(ECMP, act=to_group(7))) == [ecmp("11.0.0.0", act=to_group(7))]
    assert len(read(store, entry(ECMP, act=to_member(0)))) == 3


def test_modifying_a_member_changes_every_entry_and_group_using_it() -> None:
    store = populated()
    write(store, INSERT, ecmp("10.0.0.0", act=to_member(1)))
    write(store, INSERT, ecmp("11.0.0.0", act=to_group(7)))
    write(store, MODIFY, member(1, action_id=DROP))
    assert store.lookup("ecmp", {"dst": ip("10.0.0.1")}).action == "drop"
    assert store.lookup("ecmp", {"dst": ip("11.0.0.1")}, selector_hash=0).action == "drop"
    assert store.lookup("ecmp", {"dst": ip("11.0.0.1")}, selector_hash=1).params == {"nhop": 20}


def test_modify_of_an_indirect_entry_rebinds_or_keeps_its_member() -> None:
    store = populated()
    write(store, INSERT, ecmp("10.0.0.0", act=to_member(3)))
    write(store, MODIFY, entry(ECMP, lpm(1, ip("10.0.0.0"), 8), metadata=b"m"))
    assert store.lookup("ecmp", {"dst": ip("10.0.0.1")}).member_id == 3
    refused(rpc_code.FAILED_PRECONDITION, write, store, DELETE, member(3, None))
    write(store, MODIFY, ecmp("10.0.0.0", act=to_group(7)))
    assert store.lookup("ecmp", {"dst": ip("10.0.0.1")}).group_id == 7
    write(store, DELETE, member(3, None))  # rebinding the entry released it


# ---------------------------------------------------------------- indirect tables


@pytest.mark.parametrize(
    ("bad", "code", "words"),
    [
        (ecmp("10.0.0.0", act=action(SET_NHOP, 1)), rpc_code.INVALID_ARGUMENT, "indirect"),
        (
            entry(DIRECT, exact(1, 1), act=to_member(1)),
            rpc_code.INVALID_ARGUMENT,
            "direct table",
        ),
        (
            entry(NEXTHOPS, exact(1, 1), act=to_group(7)),
            rpc_code.INVALID_ARGUMENT,
            "no selector",
        ),
        (ecmp("10.0.0.0", act=to_member(0)), rpc_code.INVALID_ARGUMENT, "non-zero"),
        (ecmp("10.0.0.0", act=to_group(0)), rpc_code.INVALID_ARGUMENT, "non-zero"),
        (ecmp("10.0.0.0", act=p4r.TableAction()), rpc_code.INVALID_ARGUMENT, "is empty"),
        (ecmp("10.0.0.0", act=to_member(9)), rpc_code.NOT_FOUND, "no member 9"),
        (ecmp("10.0.0.0", act=to_group(9)), rpc_code.NOT_FOUND, "no group 9"),
        (
            entry(NEXTHOPS, exact(1, 1), act=to_member(1)),  # member 1 is the selector's
            rpc_code.NOT_FOUND,
            "no member 1",
        ),
        (
            ecmp(
                "10.0.0.0",
                act=p4r.TableAction(action_profile_action_set=p4r.ActionProfileActionSet()),
            ),
            rpc_code.UNIMPLEMENTED,
            "one-shot",
        ),
    ],
)
def test_bad_indirect_table_actions_are_refused_with_the_spec_code(
    bad: p4r.TableEntry, code: int, words: str
) -> None:
    store = populated()
    assert words in refused(code, write, store, INSERT, bad)
    assert read(store, entry(0)) == []


def test_modify_of_an_indirect_entry_to_a_missing_member_is_not_found() -> None:
    store = populated()
    write(store, INSERT, ecmp("10.0.0.0", act=to_member(1)))
    refused(rpc_code.NOT_FOUND, write, store, MODIFY, ecmp("10.0.0.0", act=to_member(9)))
    assert store.lookup("ecmp", {"dst": ip("10.0.0.1")}).member_id == 1


def test_an_indirect_tables_default_is_a_constant_no_action() -> None:
    store = populated()
    [default] = read(store, entry(ECMP, is_default_action=True))
    assert default == entry(ECMP, act=action(NO_ACTION), is_default_action=True, is_const=True)
    refused(
        rpc_code.PERMISSION_DENIED,
        write,
        store,
        MODIFY,
        entry(ECMP, act=to_member(1), is_default_action=True),
    )
    with pytest.raises(P4RuntimeError, match="constant NoAction") as info:
        TableStore(build_p4info(), initial_defaults={"ecmp": ("drop", {})})
    assert info.value.code == rpc_code.INVALID_ARGUMENT


def test_an_entry_on_an_empty_group_gives_the_default_and_names_the_group() -> None:
    store = populated()
    write(store, INSERT, group(8))
    write(store, INSERT, ecmp("10.0.0.0", act=to_group(8)))
    assert store.lookup("ecmp", {"dst": ip("10.0.0.1")}, 12345) == Lookup(
        "ecmp", False, "NoAction", {}, group_id=8
    )
    write(store, MODIFY, group(8, (3, 2)))
    assert store.lookup("ecmp", {"dst": ip("10.0.0.1")}).params == {"nhop": 30}
    write(store, MODIFY, group(8))
    assert not store.lookup("ecmp", {"dst": ip("10.0.0.1")}).hit


# ------------------------------------------------------------------------ members


@pytest.mark.parametrize(
    ("kind", "bad", "code", "words"),
    [
        (INSERT, member(1, 5), rpc_code.ALREADY_EXISTS, "already exists"),
        (MODIFY, member(9), rpc_code.NOT_FOUND, "does not exist"),
        (DELETE, member(9), rpc_code.NOT_FOUND, "does not exist"),
        (INSERT, member(9, None), rpc_code.INVALID_ARGUMENT, "action is required"),
        (MODIFY, member(1, None), rpc_code.INVALID_ARGUMENT, "action is required"),
        (INSERT, member(0), rpc_code.INVALID_ARGUMENT, "non-zero"),
        (INSERT, member(9, action_id=SET_PORT), rpc_code.INVALID_ARGUMENT, "not an action"),
        (INSERT, member(9, 1 << 16), rpc_code.INVALID_ARGUMENT, "fit in 16 bits"),
        (INSERT, member(9, action_id=NO_ACTION), rpc_code.PERMISSION_DENIED, "@defaultonly"),
        (INSERT, member(9, profile=0x11000099), rpc_code.INVALID_ARGUMENT, "unknown action"),
        (
            INSERT,
            member(9, profile=MEMBER_SELECTOR, action_id=DROP),  # not an action of wcmp
            rpc_code.INVALID_ARGUMENT,
            "not an action",
        ),
        (7, member(9), rpc_code.INVALID_ARGUMENT, "update type 7"),
    ],
)
def test_bad_member_writes_are_refused_with_the_spec_code(
    kind: int, bad: p4r.ActionProfileMember, code: int, words: str
) -> None:
    store = populated()
    before = read_members(store)
    assert words in refused(code, write, store, kind, bad)
    assert read_members(store) == before


def test_a_member_with_a_param_given_twice_is_invalid_argument() -> None:
    twice = member(9)
    twice.action.params.add(param_id=1, value=b"\x02")
    assert "twice" in refused(rpc_code.INVALID_ARGUMENT, write, new_store(), INSERT, twice)


def test_members_beyond_the_profile_size_are_resource_exhausted() -> None:
    store = new_store()
    for member_id in (1, 2, 3):
        write(store, INSERT, member(member_id, profile=PROFILE))
    refused(rpc_code.RESOURCE_EXHAUSTED, write, store, INSERT, member(4, profile=PROFILE))
    write(store, DELETE, member(3, None, profile=PROFILE))
    write(store, INSERT, member(4, profile=PROFILE))


def test_a_member_in_use_cannot_be_deleted_until_released() -> None:
    store = populated()
    write(store, INSERT, ecmp("10.0.0.0", act=to_member(2)))
    message = refused(rpc_code.FAILED_PRECONDITION, write, store, DELETE, member(2, None))
    assert "groups [7]" in message and "1 table entries" in message
    write(store, MODIFY, group(7, (1, 1)))
    refused(rpc_code.FAILED_PRECONDITION, write, store, DELETE, member(2, None))
    write(store, DELETE, ecmp("10.0.0.0"))
    # A delete looks only at the ids: the action may be anything.
    write(store, DELETE, member(2, action_id=SET_PORT))
    assert read_members(store) == [1, 3]


def test_a_member_used_by_an_entry_of_another_table_of_the_profile_is_in_use() -> None:
    store = populated()
    write(store, INSERT, entry(ECMP_BY_VRF, exact(1, 4), act=to_member(3)))
    refused(rpc_code.FAILED_PRECONDITION, write, store, DELETE, member(3, None))
    assert store.lookup("ecmp_by_vrf", {"vrf": 4}).params == {"nhop": 30}


# ------------------------------------------------------------------------- groups


@pytest.mark.parametrize(
    ("kind", "bad", "code", "words"),
    [
        (INSERT, group(7, (1, 1)), rpc_code.ALREADY_EXISTS, "already exists"),
        (MODIFY, group(8, (1, 1)), rpc_code.NOT_FOUND, "does not exist"),
        (DELETE, group(8), rpc_code.NOT_FOUND, "does not exist"),
        (INSERT, group(8, (1, 1), (9, 1)), rpc_code.NOT_FOUND, "member 9 does not exist"),
        (MODIFY, group(7, (9, 1)), rpc_code.NOT_FOUND, "member 9 does not exist"),
        (INSERT, group(8, (1, 1), (1, 2)), rpc_code.INVALID_ARGUMENT, "listed twice"),
        (INSERT, group(8, (1, 0)), rpc_code.INVALID_ARGUMENT, "weight 0"),
        (INSERT, group(8, (1, -2)), rpc_code.INVALID_ARGUMENT, "weight -2"),
        (INSERT, group(0, (1, 1)), rpc_code.INVALID_ARGUMENT, "non-zero"),
        (INSERT, group(8, (1, 1), max_size=9), rpc_code.INVALID_ARGUMENT, "1..8"),
        (INSERT, group(8, (1, 1), max_size=0), rpc_code.INVALID_ARGUMENT, "1..8"),
        (INSERT, group(8, (1, 1), max_size=-1), rpc_code.INVALID_ARGUMENT, "negative"),
        (MODIFY, group(7, (1, 1), max_size=4), rpc_code.INVALID_ARGUMENT, "cannot be modified"),
        (INSERT, group(8, (1, 3), max_size=2), rpc_code.RESOURCE_EXHAUSTED, "max_size 2"),
        (INSERT, group(8, (1, 1), profile=PROFILE), rpc_code.INVALID_ARGUMENT, "no selector"),
        (INSERT, group(8, profile=0x11000099), rpc_code.INVALID_ARGUMENT, "unknown action"),
    ],
)
def test_bad_group_writes_are_refused_with_the_spec_code(
    kind: int, bad: p4r.ActionProfileGroup, code: int, words: str
) -> None:
    store = populated()
    before = store.read(p4r.Entity(action_profile_group=p4r.ActionProfileGroup()))
    assert words in refused(code, write, store, kind, bad)
    assert store.read(p4r.Entity(action_profile_group=p4r.ActionProfileGroup())) == before


def test_a_group_in_use_cannot_be_deleted_until_released() -> None:
    store = populated()
    write(store, INSERT, ecmp("10.0.0.0", act=to_group(7)))
    write(store, INSERT, ecmp("11.0.0.0", act=to_group(7)))
    message = refused(rpc_code.FAILED_PRECONDITION, write, store, DELETE, group(7))
    assert "2 table entries" in message
    write(store, MODIFY, ecmp("10.0.0.0", act=to_member(1)))
    write(store, DELETE, ecmp("11.0.0.0"))
    write(store, DELETE, group(7, max_size=1234))  # a delete looks only at the ids
    assert read_groups(store) == [] and store.group_count("selector") == 0
    write(store, DELETE, member(2, None))  # the group held it; now nothing does


def test_the_selectors_size_bounds_the_sum_of_its_groups_weights() -> None:
    store = populated()  # group 7 takes 4 of 16
    write(store, INSERT, group(8, (1, 4), (3, 4)))
    write(store, INSERT, group(9, (2, 4)))
    assert "16" in refused(rpc_code.RESOURCE_EXHAUSTED, write, store, INSERT, group(10, (1, 1)))
    write(store, MODIFY, group(9, (2, 3)))  # a modify counts the group's new size only
    write(store, INSERT, group(10, (1, 1)))
    refused(rpc_code.RESOURCE_EXHAUSTED, write, store, MODIFY, group(10, (1, 2)))
    write(store, DELETE, group(8))
    write(store, MODIFY, group(10, (1, 8)))


def test_a_sum_of_members_selector_counts_members_and_caps_their_weight() -> None:
    store = new_store()
    for member_id in (1, 2, 3, 4):
        write(store, INSERT, member(member_id, profile=MEMBER_SELECTOR))
    heavy = group(1, (1, 5), (2, 5), (3, 5), profile=MEMBER_SELECTOR, max_size=3)
    write(store, INSERT, heavy)  # 15 in weights, but 3 members: it fits
    too_heavy = group(2, (4, 6), profile=MEMBER_SELECTOR, max_size=1)
    assert "max_member_weight 5" in refused(
        rpc_code.INVALID_ARGUMENT, write, store, INSERT, too_heavy
    )
    refused(
        rpc_code.RESOURCE_EXHAUSTED,
        write,
        store,
        INSERT,
        group(2, (4, 1), (1, 1), profile=MEMBER_SELECTOR, max_size=2),
    )
    write(store, INSERT, group(2, (4, 1), profile=MEMBER_SELECTOR, max_size=1))
    write(store, INSERT, entry(WCMP, exact(1, 1), act=to_group(1)))
    picks = Counter(store.lookup("wcmp", {"port": 1}, h).member_id for h in range(15))
    assert picks == {1: 5, 2: 5, 3: 5}


def test_without_max_group_size_a_group_may_leave_max_size_unset() -> None:
    p4info = build_p4info()
    p4info.action_profiles[0].max_group_size = 0
    store = new_store(p4info)
    write(store, INSERT, member(1))
    write(store, INSERT, group(1, (1, 16), max_size=0))
    refused(rpc_code.RESOURCE_EXHAUSTED, write, store, INSERT, group(2, max_size=17))


def test_when_weights_are_disallowed_only_zero_is_valid_and_members_weigh_the_same() -> None:
    p4info = build_p4info()
    p4info.action_profiles[0].weights_disallowed = True
    store = new_store(p4info)
    for member_id in (1, 2):
        write(store, INSERT, member(member_id, member_id))
    refused(rpc_code.INVALID_ARGUMENT, write, store, INSERT, group(1, (1, 1)))
    write(store, INSERT, group(1, (1, 0), (2, 0)))
    write(store, INSERT, ecmp("10.0.0.0", act=to_group(1)))
    picks = [store.lookup("ecmp", {"dst": ip("10.0.0.1")}, h).member_id for h in range(4)]
    assert picks == [1, 2, 1, 2]


# ---------------------------------------------------------------------- selection


@given(
    weights=st.dictionaries(st.integers(1, 2**32 - 1), st.integers(1, 20), min_size=1, max_size=8),
    start=st.integers(0, 2**64),
    rounds=st.integers(1, 2),
)
def test_group_selection_frequency_is_proportional_to_weight(
    weights: dict[int, int], start: int, rounds: int
) -> None:
    """Over any `rounds` x total-weight consecutive hashes each member is chosen exactly
    `rounds` x its weight times, and hash h picks position h % total of the members in
    member_id order, each repeated by its weight."""
    p4info = build_p4info()
    p4info.action_profiles[0].ClearField("max_group_size")
    p4info.action_profiles[0].ClearField("size")
    store = new_store(p4info)
    for member_id in weights:
        write(store, INSERT, member(member_id))
    write(store, INSERT, group(1, *weights.items(), max_size=0))
    write(store, INSERT, ecmp("10.0.0.0", act=to_group(1)))
    total = sum(weights.values())
    expanded = [m for m in sorted(weights) for _ in range(weights[m])]
    chosen = [
        store.lookup("ecmp", {"dst": ip("10.0.0.1")}, h).member_id
        for h in range(start, start + rounds * total)
    ]
    assert Counter(chosen) == {m: rounds * w for m, w in weights.items()}
    assert chosen[:total] == [expanded[h % total] for h in range(start, start + total)]


# --------------------------------------------------------- batches, clear, pipeline


def test_write_atomic_undoes_members_groups_and_their_references() -> None:
    store = populated()
    write(store, INSERT, ecmp("10.0.0.0", act=to_member(3)))
    state = snapshot(store)
    batch = [
        update(INSERT, member(4, 40)),
        update(INSERT, group(8, (4, 1), (1, 1))),
        update(MODIFY, group(7, (1, 1))),
        update(MODIFY, member(1, 11)),
        update(INSERT, ecmp("11.0.0.0", act=to_group(8))),
        update(MODIFY, ecmp("10.0.0.0", act=to_member(2))),
        update(DELETE, ecmp("10.0.0.0")),
        update(DELETE, member(3, None)),
        update(DELETE, member(9, None)),
    ]
    failure = store.write_atomic(batch)
    assert failure is not None and failure[0] == 8 and failure[1].code == rpc_code.NOT_FOUND
    assert snapshot(store) == state
    # The references are back as they were: 3 is the entry's again, 2 is in group 7 again.
    refused(rpc_code.FAILED_PRECONDITION, write, store, DELETE, member(3, None))
    refused(rpc_code.FAILED_PRECONDITION, write, store, DELETE, member(2, None))
    assert store.lookup("ecmp", {"dst": ip("10.0.0.1")}).params == {"nhop": 30}
    assert store.write_atomic(batch[:7]) is None
    assert store.write_atomic([update(DELETE, member(3, None))]) is None
    assert store.member_count("selector") == 3 and store.group_count("selector") == 2


def snapshot(store: TableStore) -> list[bytes]:
    everything = [
        p4r.Entity(table_entry=p4r.TableEntry()),
        p4r.Entity(action_profile_member=p4r.ActionProfileMember()),
        p4r.Entity(action_profile_group=p4r.ActionProfileGroup()),
    ]
    return [e.SerializeToString() for request in everything for e in store.read(request)]


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["member", "group", "entry"]),
        st.sampled_from([INSERT, MODIFY, DELETE]),
        st.integers(1, 4),  # id: member, group, or the entry's /8 prefix
        st.lists(st.integers(1, 4), max_size=3),  # group members; an entry's target
        st.booleans(),  # an entry points at a group
    ),
    max_size=40,
)


def operation(op: tuple[str, int, int, list[int], bool]) -> p4r.Update:
    kind, verb, ident, members, to_a_group = op
    if kind == "member":
        return update(verb, member(ident, ident))
    if kind == "group":
        return update(verb, group(ident, *((m, m) for m in members)))
    target = members[0] if members else 1
    return update(
        verb, ecmp(f"{ident}.0.0.0", act=to_group(target) if to_a_group else to_member(target))
    )


@given(OPERATIONS)
def test_a_delete_is_refused_exactly_while_something_uses_the_member_or_group(
    operations: list[tuple[str, int, int, list[int], bool]],
) -> None:
    """After any sequence of writes (some failing, some undone in rolled-back batches),
    deleting a member or group fails exactly when a group or entry that reads back uses it."""
    store = new_store()
    for index, op in enumerate(operations):
        if index % 3 == 2:
            # An all-or-none batch that fails at its end: nothing of it may stay.
            before = snapshot(store)
            failing = update(DELETE, member(99, None))
            assert store.write_atomic([operation(op), failing]) is not None
            assert snapshot(store) == before
            continue
        with contextlib.suppress(P4RuntimeError):
            store.write(operation(op))
    groups = store.read(p4r.Entity(action_profile_group=p4r.ActionProfileGroup()))
    entries = read(store, entry(ECMP))
    used_members = {m.member_id for g in groups for m in g.action_profile_group.members} | {
        e.action.action_profile_member_id for e in entries
    }
    used_groups = {e.action.action_profile_group_id for e in entries}
    probes = [(update(DELETE, member(m, None)), m in used_members) for m in read_members(store)]
    probes += [(update(DELETE, group(g)), g in used_groups) for g in read_groups(store)]
    sentinel = update(DELETE, member(99, None))
    for probe, in_use in probes:
        failure = store.write_atomic([probe, sentinel])
        assert failure is not None
        index, error = failure
        assert (index == 0) == in_use, error
        if in_use:
            assert error.code == rpc_code.FAILED_PRECONDITION


def test_clear_removes_members_groups_and_entries() -> None:
    store = populated()
    write(store, INSERT, ecmp("10.0.0.0", act=to_group(7)))
    store.clear()
    assert snapshot(store) == []
    assert store.member_count("selector") == 0 and store.group_count("selector") == 0
    write(store, INSERT, member(1))
    write(store, INSERT, group(7, (1, 8)))
    write(store, INSERT, group(8, (1, 8)))  # the whole selector size is free again


def test_carry_over_keeps_an_unchanged_profile_and_drops_a_changed_one() -> None:
    old = populated()
    write(old, INSERT, ecmp("10.0.0.0", act=to_group(7)))
    write(old, INSERT, member(1, profile=PROFILE))
    write(old, INSERT, entry(NEXTHOPS, exact(1, 5), act=to_member(1)))
    changed = build_p4info()
    changed.action_profiles[1].size = 4  # profile (behind nexthops) changes shape
    new = TableStore(changed)
    kept = new.carry_over(old)
    assert "ecmp" in kept and "nexthops" not in kept
    assert new.member_count("selector") == 3 and new.group_count("selector") == 1
    assert new.member_count("profile") == 0 and new.entry_count("nexthops") == 0
    assert new.lookup("ecmp", {"dst": ip("10.0.0.1")}, 1).params == {"nhop": 20}
    # References were rebuilt: what is in use stays protected, what is not can go.
    refused(rpc_code.FAILED_PRECONDITION, new.write, update(DELETE, group(7)))
    refused(rpc_code.FAILED_PRECONDITION, new.write, update(DELETE, member(2, None)))
    new.write(update(DELETE, member(3, None)))
    # Group 7 still takes 4 of the selector's 16.
    new.write(update(INSERT, group(8, (1, 8))))
    refused(rpc_code.RESOURCE_EXHAUSTED, new.write, update(INSERT, group(9, (1, 5))))


def test_carry_over_drops_entries_of_an_unchanged_table_whose_profile_changed() -> None:
    old = populated()
    write(old, INSERT, ecmp("10.0.0.0", act=to_member(1)))
    changed = build_p4info()
    changed.action_profiles[0].size = 32
    new = TableStore(changed)
    assert "ecmp" not in new.carry_over(old)
    assert snapshot(new) == []


# ------------------------------------------------------------------------- P4Info


def _retarget(p: p4i.P4Info) -> None:
    """nexthops moves to the selector, which does not list it."""
    p.tables[2].implementation_id = SELECTOR
    p.action_profiles[1].ClearField("table_ids")


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda p: p.action_profiles[0].table_ids.append(DIRECT), "not a table it implements"),
        (lambda p: p.action_profiles[0].table_ids.append(ECMP), "repeated"),
        (_retarget, "does not list it"),
        (lambda p: p.tables[1].action_refs.pop(), "same actions"),
        (lambda p: p.action_profiles[1].__setattr__("max_group_size", 2), "has no selector"),
        (lambda p: p.action_profiles[1].__setattr__("weights_disallowed", True), "no selector"),
        (lambda p: p.action_profiles[0].__setattr__("max_group_size", 17), "exceeds size"),
        (lambda p: p.action_profiles[0].__setattr__("size", -1), "negative"),
        (lambda p: p.tables[4].__setattr__("implementation_id", 0x11000099), "neither"),
        (lambda p: p.action_profiles[1].preamble.__setattr__("name", "selector"), "two action"),
    ],
)
def test_inconsistent_action_profiles_in_p4info_are_invalid_argument(
    mutate: Callable[[p4i.P4Info], None], words: str
) -> None:
    p4info = build_p4info()
    mutate(p4info)
    with pytest.raises(P4RuntimeError, match=words) as info:
        TableStore(p4info)
    assert info.value.code == rpc_code.INVALID_ARGUMENT


def test_a_table_implemented_by_another_extern_is_unimplemented() -> None:
    p4info = build_p4info()
    extern = p4info.externs.add(extern_type_id=0x81, extern_type_name="tna_action_selector")
    extern.instances.add(preamble=p4i.Preamble(id=0x81000001, name="other"))
    p4info.tables[4].implementation_id = 0x81000001
    store = TableStore(p4info)
    message = refused(
        rpc_code.UNIMPLEMENTED, write, store, INSERT, entry(DIRECT, exact(1, 1), act=to_member(1))
    )
    assert "not an action profile" in message
    refused(
        rpc_code.INVALID_ARGUMENT,
        write,
        store,
        INSERT,
        entry(DIRECT, exact(1, 1), act=action(SET_PORT, 1)),
    )


def test_other_entities_are_still_unimplemented() -> None:
    store = new_store()
    counter = p4r.Update(
        type=INSERT, entity=p4r.Entity(counter_entry=p4r.CounterEntry(counter_id=1))
    )
    refused(rpc_code.UNIMPLEMENTED, store.write, counter)
