"""IP-set classification: one bit per referenced set and direction, and the entries that
give each packet address (or address, protocol and port) its membership bitmap.

Address members become LPM entries, one per distinct member prefix; an entry's bitmap holds
every set with a member covering that prefix, so the longest match alone carries all the
packet's sets. Named-port and service members (address, protocol, port) are exact entries.
Entries therefore grow with members, never with members times rules.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Hashable, Iterable

import attrs

from felix_p4.compile.fields import exact128, params128, prefix6
from felix_p4.model.policy import PortMember
from felix_p4.model.values import IPNetwork
from felix_p4.p4.entries import Exact, Lpm, TableEntry

DIRECTIONS = ("src", "dst")


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


@attrs.define
class _Direction:
    """Membership state for one direction: which referenced sets hold which members."""

    allocator: BitAllocator
    # prefix -> refs with that exact prefix as a member (only refs that have a bit)
    prefixes: dict[IPNetwork, set[SetRef]] = attrs.Factory(lambda: defaultdict(set))
    ports: dict[PortMember, set[SetRef]] = attrs.Factory(lambda: defaultdict(set))
    # ref -> its members, as classified (so a removal knows what to take back)
    members: dict[SetRef, frozenset[IPNetwork | PortMember]] = attrs.Factory(dict)


class Classifier:
    """Keeps the classification entries equal to the referenced sets' members and bits.

    `changed` collects the owners whose entries must be recomputed; `entries_for(owner)`
    computes them. Owners are ("addr", direction, prefix) and ("port", direction, member).
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self.dirs = {d: _Direction(BitAllocator(width, d)) for d in DIRECTIONS}
        self.changed: set[tuple[str, str, IPNetwork | PortMember]] = set()

    def bit(self, direction: str, ref: SetRef) -> int | None:
        return self.dirs[direction].allocator.get(ref)

    def reference(
        self, direction: str, ref: SetRef, members: Iterable[IPNetwork | PortMember]
    ) -> int:
        """Give `ref` a bit in `direction` (if it has none) and classify its members."""
        state = self.dirs[direction]
        bit = state.allocator.allocate(ref)
        if ref not in state.members:
            self.update_members(direction, ref, frozenset(members))
        return bit

    def release(self, direction: str, ref: SetRef) -> None:
        state = self.dirs[direction]
        self.update_members(direction, ref, frozenset())
        state.members.pop(ref, None)
        state.allocator.release(ref)

    def referenced(self, direction: str) -> list[SetRef]:
        return list(self.dirs[direction].members)

    def update_members(
        self, direction: str, ref: SetRef, members: frozenset[IPNetwork | PortMember]
    ) -> None:
        """Replace a referenced set's members; only the touched owners become dirty."""
        state = self.dirs[direction]
        old = state.members.get(ref, frozenset())
        for member in old - members:
            self._unindex(direction, state, ref, member)
        for member in members - old:
            self._index(direction, state, ref, member)
        state.members[ref] = members

    def _index(
        self, d: str, state: _Direction, ref: SetRef, member: IPNetwork | PortMember
    ) -> None:
        if isinstance(member, PortMember):
            state.ports[member].add(ref)
            self.changed.add(("port", d, member))
        else:
            state.prefixes[member].add(ref)
            self._touch_covered(d, state, member)

    def _unindex(
        self, d: str, state: _Direction, ref: SetRef, member: IPNetwork | PortMember
    ) -> None:
        if isinstance(member, PortMember):
            refs = state.ports.get(member)
            if refs is not None:
                refs.discard(ref)
                if not refs:
                    del state.ports[member]
            self.changed.add(("port", d, member))
        else:
            refs = state.prefixes.get(member)
            if refs is not None:
                refs.discard(ref)
                if not refs:
                    del state.prefixes[member]
            self._touch_covered(d, state, member)

    def _touch_covered(self, d: str, state: _Direction, prefix: IPNetwork) -> None:
        # The prefix's own entry changes, and so does every more specific member prefix's
        # (their bitmaps include the sets of covering prefixes). Host prefixes cover none.
        self.changed.add(("addr", d, prefix))
        if prefix.prefixlen == prefix.max_prefixlen:
            return
        for other in state.prefixes:
            if (
                other.version == prefix.version
                and other.prefixlen > prefix.prefixlen
                and other.subnet_of(prefix)  # type: ignore[arg-type]
            ):
                self.changed.add(("addr", d, other))

    def addr_bits(self, direction: str, prefix: IPNetwork) -> int:
        state = self.dirs[direction]
        if prefix not in state.prefixes:
            return 0
        bits = 0
        for length in range(prefix.prefixlen, -1, -1):
            cover = prefix.supernet(new_prefix=length) if length < prefix.prefixlen else prefix
            for ref in state.prefixes.get(cover, ()):
                bits |= 1 << state.allocator.bits[ref]
        return bits

    def port_bits(self, direction: str, member: PortMember) -> int:
        state = self.dirs[direction]
        bits = 0
        for ref in state.ports.get(member, ()):
            bits |= 1 << state.allocator.bits[ref]
        return bits

    def entries_for(self, owner: tuple[str, str, IPNetwork | PortMember]) -> list[TableEntry]:
        kind, direction, member = owner
        if kind == "port":
            assert isinstance(member, PortMember)
            bits = self.port_bits(direction, member)
            if not bits:
                return []
            return [
                TableEntry.make(
                    f"portset_{direction}",
                    {
                        "ip_version": Exact(member.addr.version),
                        **exact128("addr", int(member.addr)),
                        "proto": Exact(member.proto),
                        "port": Exact(member.port),
                    },
                    f"add_{direction}_sets",
                    params128("sets", bits),
                )
            ]
        assert not isinstance(member, PortMember)
        bits = self.addr_bits(direction, member)
        if not bits:
            return []
        if isinstance(member, ipaddress.IPv6Network):
            match, priority = prefix6("addr", member)
            return [
                TableEntry.make(
                    f"ipset_{direction}_v6",
                    match,
                    f"set_{direction}_sets",
                    params128("sets", bits),
                    priority,
                )
            ]
        return [
            TableEntry.make(
                f"ipset_{direction}_v4",
                {"addr": Lpm(int(member.network_address), member.prefixlen)},
                f"set_{direction}_sets",
                params128("sets", bits),
            )
        ]
