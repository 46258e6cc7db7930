"""IP-set classification: one bit per referenced set and direction, and the entries that
give each packet address (or address, protocol and port) its membership bitmap.

Address members become LPM entries, one per distinct member prefix; an entry's bitmap holds
every set with a member covering that prefix, so the longest match alone carries all the
packet's sets. Named-port and service members (address, protocol, port) are exact entries.
Entries therefore grow with members, never with members times rules.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping

import attrs

from felix_p4.model.policy import IpSet, IpSetMember, PortMember
from felix_p4.model.values import PREFIX_BITS, IPNetwork, Prefix, prefix_mask, prefix_of
from felix_p4.pipeline import ADD_SETS, IPSET, PORTSET, SET_SETS
from felix_p4.pipeline.entries import Exact, Lpm, TableEntry
from felix_p4.pipeline.fields import exact128, params128, ternary128

# Which of a packet's addresses (and ports) a set-membership bit classifies.
SET_SIDES = ("src", "dst")


class OutOfBits(Exception):
    """Every membership bit of a direction is in use; the message names the direction."""


# What a bit stands for: a Felix IP set ("ipset", id) or an anonymous set of a rule's nets
# ("nets", frozenset of networks), so equal net lists in many rules share one bit.
SetRef = tuple[str, Hashable]


class BitAllocator:
    """Membership bits of one direction, lowest free first; recoverable from the device."""

    def __init__(self, width: int, direction: str) -> None:
        self.width = width
        self.direction = direction
        self.bits: dict[SetRef, int] = {}
        self._free = list(range(width - 1, -1, -1))

    def get(self, ref: SetRef) -> int | None:
        return self.bits.get(ref)

    def allocate(self, ref: SetRef) -> int:
        bit = self.bits.get(ref)
        if bit is not None:
            return bit
        if not self._free:
            raise OutOfBits(f"all {self.width} {self.direction} IP-set bits are in use")
        bit = self._free.pop()
        self.bits[ref] = bit
        return bit

    def assign(self, ref: SetRef, bit: int) -> bool:
        """Take over an allocation read back from the device; False if it cannot be used."""
        if ref in self.bits or bit not in self._free:
            return self.bits.get(ref) == bit
        self._free.remove(bit)
        self.bits[ref] = bit
        return True

    def release(self, ref: SetRef) -> int | None:
        bit = self.bits.pop(ref, None)
        if bit is not None:
            self._free.append(bit)
            self._free.sort(reverse=True)
        return bit


BITS = PREFIX_BITS
_mask = prefix_mask


def _member(m: IPNetwork | Prefix | PortMember) -> Prefix | PortMember:
    """Classifier members are integer prefixes (rules' CIDR lists arrive as networks)."""
    return m if isinstance(m, (tuple, PortMember)) else prefix_of(m)


@attrs.define
class _Direction:
    """Membership state for one direction: which referenced sets hold which members."""

    allocator: BitAllocator
    # prefix -> refs with that exact prefix as a member (only refs that have a bit)
    prefixes: dict[Prefix, set[SetRef]] = attrs.Factory(lambda: defaultdict(set))
    # version -> prefix length -> how many member prefixes have it (what to probe)
    lengths: dict[int, dict[int, int]] = attrs.Factory(lambda: {4: {}, 6: {}})
    ports: dict[PortMember, set[SetRef]] = attrs.Factory(lambda: defaultdict(set))
    # ref -> its members, as classified (so a removal knows what to take back)
    members: dict[SetRef, set[Prefix | PortMember]] = attrs.Factory(dict)


Owner = tuple[str, str, "Prefix | PortMember"]


class Classifier:
    """Keeps the classification entries equal to the referenced sets' members and bits.

    `changed` collects the owners whose entries must be recomputed; `entries_for(owner)`
    computes them. Owners are ("addr", direction, prefix) and ("port", direction, member).
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self.dirs = {d: _Direction(BitAllocator(width, d)) for d in SET_SIDES}
        self.changed: set[Owner] = set()

    def bit(self, direction: str, ref: SetRef) -> int | None:
        return self.dirs[direction].allocator.get(ref)

    def sets_changed(
        self,
        set_ids: Iterable[str],
        set_of: Callable[[str], IpSet | None],
        deltas: Mapping[str, tuple[frozenset[IpSetMember], frozenset[IpSetMember]]],
    ) -> None:
        """New members of Felix IP sets that rules reference: reclassify only those (by
        Felix's delta when the set only changed by deltas since the last apply)."""
        wanted = set(set_ids)
        for side, state in self.dirs.items():
            for ref in [r for r in state.members if r[0] == "ipset" and r[1] in wanted]:
                delta = deltas.get(str(ref[1]))
                if delta is not None:
                    self.apply_delta(side, ref, *delta)
                    continue
                ipset = set_of(str(ref[1]))
                self.update_members(side, ref, ipset.members if ipset is not None else ())

    def reference(
        self, direction: str, ref: SetRef, members: Iterable[IPNetwork | Prefix | PortMember]
    ) -> int:
        """Give `ref` a bit in `direction` (if it has none) and classify its members."""
        state = self.dirs[direction]
        bit = state.allocator.allocate(ref)
        if ref not in state.members:
            self.update_members(direction, ref, members)
        return bit

    def release(self, direction: str, ref: SetRef) -> None:
        state = self.dirs[direction]
        self._change(direction, state, ref, set(), set(state.members.get(ref, ())))
        state.members.pop(ref, None)
        state.allocator.release(ref)

    def update_members(
        self, direction: str, ref: SetRef, members: Iterable[IPNetwork | Prefix | PortMember]
    ) -> None:
        """Replace a referenced set's members; only the touched owners become dirty."""
        state = self.dirs[direction]
        new = {_member(m) for m in members}
        old = state.members.get(ref, set())
        self._change(direction, state, ref, new - old, old - new)

    def apply_delta(
        self,
        direction: str,
        ref: SetRef,
        added: Iterable[Prefix | PortMember],
        removed: Iterable[Prefix | PortMember],
    ) -> None:
        """Felix's IPSetDeltaUpdate: work proportional to the delta, not to the set."""
        state = self.dirs[direction]
        current = state.members.get(ref, set())
        self._change(
            direction,
            state,
            ref,
            {m for m in added if m not in current},
            {m for m in removed if m in current},
        )

    def _change(
        self,
        d: str,
        state: _Direction,
        ref: SetRef,
        added: set[Prefix | PortMember],
        removed: set[Prefix | PortMember],
    ) -> None:
        members = state.members.setdefault(ref, set())
        for member in removed:
            self._unindex(d, state, ref, member)
        members -= removed
        for member in added:
            self._index(d, state, ref, member)
        members |= added

    def _index(self, d: str, state: _Direction, ref: SetRef, member: Prefix | PortMember) -> None:
        if isinstance(member, PortMember):
            state.ports[member].add(ref)
            self.changed.add(("port", d, member))
            return
        refs = state.prefixes[member]
        if not refs:
            lengths = state.lengths[member[0]]
            lengths[member[2]] = lengths.get(member[2], 0) + 1
        refs.add(ref)
        self._touch_covered(d, state, member)

    def _unindex(self, d: str, state: _Direction, ref: SetRef, member: Prefix | PortMember) -> None:
        if isinstance(member, PortMember):
            port_refs = state.ports.get(member)
            if port_refs is not None:
                port_refs.discard(ref)
                if not port_refs:
                    del state.ports[member]
            self.changed.add(("port", d, member))
            return
        refs = state.prefixes.get(member)
        if refs is not None:
            refs.discard(ref)
            if not refs:
                del state.prefixes[member]
                lengths = state.lengths[member[0]]
                lengths[member[2]] -= 1
                if not lengths[member[2]]:
                    del lengths[member[2]]
        self._touch_covered(d, state, member)

    def _touch_covered(self, d: str, state: _Direction, prefix: Prefix) -> None:
        # The prefix's own entry changes, and so does every more specific member prefix's
        # (their bitmaps include the sets of covering prefixes). Host prefixes cover none.
        self.changed.add(("addr", d, prefix))
        version, network, length = prefix
        if length == BITS[version]:
            return
        mask = _mask(version, length)
        for other in state.prefixes:
            if other[0] == version and other[2] > length and other[1] & mask == network:
                self.changed.add(("addr", d, other))

    def addr_bits(self, direction: str, prefix: Prefix) -> int:
        state = self.dirs[direction]
        if prefix not in state.prefixes:
            return 0
        version, network, length = prefix
        bits = 0
        allocated = state.allocator.bits
        for cover_length in state.lengths[version]:
            if cover_length > length:
                continue
            cover = (version, network & _mask(version, cover_length), cover_length)
            for ref in state.prefixes.get(cover, ()):
                bits |= 1 << allocated[ref]
        return bits

    def port_bits(self, direction: str, member: PortMember) -> int:
        state = self.dirs[direction]
        bits = 0
        for ref in state.ports.get(member, ()):
            bits |= 1 << state.allocator.bits[ref]
        return bits

    def entries_for(self, owner: Owner) -> list[TableEntry]:
        kind, direction, member = owner
        if kind == "port":
            assert isinstance(member, PortMember)
            bits = self.port_bits(direction, member)
            if not bits:
                return []
            return [
                TableEntry.make(
                    PORTSET[direction].name,
                    {
                        "ip_version": Exact(member.addr.version),
                        **exact128("addr", int(member.addr)),
                        "proto": Exact(member.proto),
                        "port": Exact(member.port),
                    },
                    ADD_SETS[direction].name,
                    params128("sets", bits),
                )
            ]
        assert not isinstance(member, PortMember)
        bits = self.addr_bits(direction, member)
        if not bits:
            return []
        version, network, length = member
        if version == 6:
            return [
                TableEntry.make(
                    IPSET[(direction, 6)].name,
                    ternary128("addr", network, _mask(6, length)),
                    SET_SETS[direction].name,
                    params128("sets", bits),
                    length + 1,  # longer prefixes win, as with LPM
                )
            ]
        return [
            TableEntry.make(
                IPSET[(direction, 4)].name,
                {"addr": Lpm(network, length)},
                SET_SETS[direction].name,
                params128("sets", bits),
            )
        ]
