"""IP-set deltas (Felix's IPSetDeltaUpdate) end in the classification a full update gives."""

from hypothesis import given
from hypothesis import strategies as st

from felix_p4.compile.ipsets import Classifier

prefixes = st.builds(
    lambda net, length: (4, net & (((1 << 32) - 1) ^ ((1 << (32 - length)) - 1)), length),
    st.sampled_from([0x0A000000, 0x0A000001, 0x0A000102, 0x0A010000, 0xC0A80001]),
    st.sampled_from([8, 16, 24, 32]),
)
member_sets = st.frozensets(prefixes, max_size=6)


def _entries(classifier: Classifier) -> set:
    out = set()
    for direction in ("src", "dst"):
        state = classifier.dirs[direction]
        for prefix in state.prefixes:
            out.update(classifier.entries_for(("addr", direction, prefix)))
    return out


@given(member_sets, st.lists(st.tuples(member_sets, member_sets), max_size=5), member_sets)
def test_deltas_equal_a_full_replacement(initial, deltas, other):
    incremental = Classifier(128)
    incremental.reference("src", ("ipset", "a"), initial)
    incremental.reference("src", ("ipset", "b"), other)
    members = set(initial)
    for added, removed in deltas:
        removed = removed - added  # Felix's deltas are disjoint
        incremental.apply_delta("src", ("ipset", "a"), added, removed)
        members = (members | added) - removed
    scratch = Classifier(128)
    scratch.reference("src", ("ipset", "a"), members)
    scratch.reference("src", ("ipset", "b"), other)
    assert _entries(incremental) == _entries(scratch)
