"""Table entries as immutable values addressed by P4Info names (never raw ids)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

import attrs


@attrs.frozen(slots=True)
class Exact:
    value: int

    def __str__(self) -> str:
        return str(self.value)


@attrs.frozen(slots=True)
class Lpm:
    value: int
    prefix_len: int

    def __str__(self) -> str:
        return f"{self.value:#x}/{self.prefix_len}"


@attrs.frozen(slots=True)
class Ternary:
    value: int
    mask: int

    def __str__(self) -> str:
        return f"{self.value:#x}&&&{self.mask:#x}"


@attrs.frozen(slots=True)
class Range:
    low: int
    high: int

    def __str__(self) -> str:
        return f"{self.low}..{self.high}"


@attrs.frozen(slots=True)
class Optional:
    value: int

    def __str__(self) -> str:
        return f"={self.value}"


Match: TypeAlias = Exact | Lpm | Ternary | Range | Optional


def _dont_care(match: Match) -> bool:
    # P4Runtime requires a wildcard field to be omitted (/0 prefix, zero ternary mask), so
    # the canonical entry leaves it out and installed entries read back equal.
    return (isinstance(match, Lpm) and match.prefix_len == 0) or (
        isinstance(match, Ternary) and match.mask == 0
    )


# (table, match fields sorted by name, priority, is_default): what P4Runtime keys an entry by.
EntryKey: TypeAlias = tuple[str, tuple[tuple[str, Match], ...], int, bool]


@attrs.frozen(slots=True, cache_hash=True)
class TableEntry:
    table: str
    match: tuple[tuple[str, Match], ...] = ()
    action: str = ""
    params: tuple[tuple[str, int], ...] = ()
    priority: int = 0
    is_default: bool = False
    # P4Runtime TableEntry.metadata: opaque to the device; we keep the Calico names a rule
    # came from (for traces) and what a restart needs to recover allocations.
    metadata: bytes = b""
    # Indirect tables: the action comes from an action profile group (selector) instead.
    group: int = 0

    @classmethod
    def make(
        cls,
        table: str,
        match: Mapping[str, Match],
        action: str,
        params: Mapping[str, int] | None = None,
        priority: int = 0,
        metadata: bytes = b"",
    ) -> TableEntry:
        return cls(
            table,
            tuple(sorted((n, m) for n, m in match.items() if not _dont_care(m))),
            action,
            tuple(sorted((params or {}).items())),
            priority,
            False,
            metadata,
        )

    @property
    def key(self) -> EntryKey:
        return (self.table, self.match, self.priority, self.is_default)

    @classmethod
    def to_group(cls, table: str, match: Mapping[str, Match], group: int) -> TableEntry:
        return cls(table, tuple(sorted(match.items())), group=group)

    def __str__(self) -> str:
        fields = " ".join(f"{name}={m}" for name, m in self.match) or "(default)"
        args = ", ".join(f"{name}={value:#x}" for name, value in self.params)
        prio = f" priority={self.priority}" if self.priority else ""
        target = f"group {self.group}" if self.group else f"{self.action}({args})"
        return f"{self.table} {fields}{prio} -> {target}"


@attrs.frozen(slots=True, cache_hash=True)
class ActionProfileMember:
    """A member of an action profile: one action with its parameters (e.g. one backend)."""

    profile: str
    member_id: int
    action: str
    params: tuple[tuple[str, int], ...] = ()

    @property
    def table(self) -> str:
        return f"{self.profile}#members"

    @property
    def key(self) -> tuple[str, int]:
        return (self.table, self.member_id)

    def __str__(self) -> str:
        args = ", ".join(f"{name}={value:#x}" for name, value in self.params)
        return f"{self.profile} member {self.member_id} -> {self.action}({args})"


@attrs.frozen(slots=True, cache_hash=True)
class ActionProfileGroup:
    """A group of members (a service port's backends); the selector hashes among them."""

    profile: str
    group_id: int
    members: tuple[tuple[int, int], ...] = ()  # (member id, weight), sorted
    max_size: int = 0

    @property
    def table(self) -> str:
        return f"{self.profile}#groups"

    @property
    def key(self) -> tuple[str, int]:
        return (self.table, self.group_id)

    def __str__(self) -> str:
        return f"{self.profile} group {self.group_id} members {[m for m, _ in self.members]}"


# Everything the sync engine writes; each has .table (for ordering) and .key (identity).
Entity: TypeAlias = TableEntry | ActionProfileMember | ActionProfileGroup
