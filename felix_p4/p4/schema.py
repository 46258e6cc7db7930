"""The device's P4Info resolved by name, and encoding of TableEntry values to P4Runtime."""

from __future__ import annotations

from pathlib import Path

import attrs
from finsy import P4Schema
from finsy.proto import p4i, p4r
from google.protobuf import text_format

from felix_p4.p4.entries import (
    ActionProfileGroup,
    ActionProfileMember,
    Entity,
    Exact,
    Lpm,
    Match,
    Optional,
    Range,
    TableEntry,
    Ternary,
)


class SchemaError(Exception):
    """A name the control plane needs is missing from, or mismatched in, the P4Info."""


def to_bytes(value: int) -> bytes:
    """P4Runtime canonical form: big-endian without leading zero bytes, zero as one byte."""
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def load_p4info(path: Path) -> p4i.P4Info:
    info = p4i.P4Info()
    data = path.read_bytes()
    if path.suffix in (".txtpb", ".txt", ".pbtxt"):
        text_format.Parse(data.decode(), info)
    else:
        info.ParseFromString(data)
    return info


@attrs.frozen(slots=True)
class _Field:
    id: int
    bitwidth: int
    match_type: int


@attrs.frozen(slots=True)
class _Table:
    id: int
    name: str
    fields: dict[str, _Field]
    field_names: dict[int, str]
    actions: frozenset[str]


@attrs.frozen(slots=True)
class _Action:
    id: int
    name: str
    params: dict[str, tuple[int, int]]  # name -> (id, bitwidth)
    param_names: dict[int, str]


class PipelineSchema:
    """Name-based view of a P4Info. Every id the driver sends is resolved here."""

    def __init__(self, p4info: p4i.P4Info) -> None:
        self.p4info = p4info
        self.finsy = P4Schema(p4info)
        self._actions: dict[str, _Action] = {}
        self._action_names: dict[int, str] = {}
        for action in self.finsy.actions:
            params = {p.name: (p.id, p.bitwidth) for p in action.params}
            self._actions[action.name] = _Action(
                action.id, action.name, params, {pid: n for n, (pid, _) in params.items()}
            )
            self._action_names[action.id] = action.name
        # By alias: p4c gives a control-local profile its full path as name
        # ("MainControlImpl.services.service_selector") and the short name as alias.
        self._profiles = {p.alias or p.name: p.id for p in self.finsy.action_profiles}
        self._profile_names = {i: n for n, i in self._profiles.items()}
        self._tables: dict[str, _Table] = {}
        self._table_names: dict[int, str] = {}
        for table in self.finsy.tables:
            fields = {
                f.name: _Field(f.id, f.bitwidth, f.pbuf.match_type) for f in table.match_fields
            }
            self._tables[table.name] = _Table(
                table.id,
                table.name,
                fields,
                {f.id: n for n, f in fields.items()},
                frozenset(ref.name for ref in table.actions),
            )
            self._table_names[table.id] = table.name

    @property
    def table_names(self) -> list[str]:
        return list(self._tables)

    def entity_order(self) -> list[str]:
        """Write order: every profile's members, then groups, then tables."""
        return (
            [f"{p}#members" for p in self._profiles]
            + [f"{p}#groups" for p in self._profiles]
            + self.table_names
        )

    def _profile(self, name: str) -> int:
        try:
            return self._profiles[name]
        except KeyError:
            raise SchemaError(f"P4Info has no action profile {name!r}") from None

    def _action(self, action: str, params: tuple[tuple[str, int], ...]) -> p4r.Action:
        a = self._actions.get(action)
        if a is None:
            raise SchemaError(f"P4Info has no action {action!r}")
        pb = p4r.Action(action_id=a.id)
        for pname, value in params:
            pid = a.params.get(pname)
            if pid is None:
                raise SchemaError(f"action {action} has no param {pname!r}")
            pb.params.add(param_id=pid[0], value=to_bytes(value))
        return pb

    def _decode_action(self, pb: p4r.Action) -> tuple[str, tuple[tuple[str, int], ...]]:
        name = self._action_names[pb.action_id]
        a = self._actions[name]
        params = sorted(
            (a.param_names[p.param_id], int.from_bytes(p.value, "big")) for p in pb.params
        )
        return name, tuple(params)

    def encode_entity(self, entity: Entity) -> p4r.Entity:
        if isinstance(entity, TableEntry):
            return p4r.Entity(table_entry=self.encode(entity))
        if isinstance(entity, ActionProfileMember):
            return p4r.Entity(
                action_profile_member=p4r.ActionProfileMember(
                    action_profile_id=self._profile(entity.profile),
                    member_id=entity.member_id,
                    action=self._action(entity.action, entity.params),
                )
            )
        group = p4r.ActionProfileGroup(
            action_profile_id=self._profile(entity.profile),
            group_id=entity.group_id,
            max_size=entity.max_size,
        )
        for member_id, weight in entity.members:
            group.members.add(member_id=member_id, weight=weight)
        return p4r.Entity(action_profile_group=group)

    def decode_entity(self, pb: p4r.Entity) -> Entity:
        kind = pb.WhichOneof("entity")
        if kind == "table_entry":
            return self.decode(pb.table_entry)
        if kind == "action_profile_member":
            m = pb.action_profile_member
            action, params = self._decode_action(m.action)
            return ActionProfileMember(
                self._profile_names[m.action_profile_id], m.member_id, action, params
            )
        if kind == "action_profile_group":
            g = pb.action_profile_group
            return ActionProfileGroup(
                self._profile_names[g.action_profile_id],
                g.group_id,
                tuple(sorted((m.member_id, m.weight) for m in g.members)),
                g.max_size,
            )
        raise SchemaError(f"cannot decode entity of kind {kind}")

    def table_id(self, name: str) -> int:
        return self._table(name).id

    def action_param_width(self, action: str, param: str) -> int:
        try:
            return self._actions[action].params[param][1]
        except KeyError:
            raise SchemaError(f"P4Info has no action {action} with param {param}") from None

    def require(
        self, table: str, fields: dict[str, int], actions: dict[str, dict[str, int]]
    ) -> None:
        """Check that the P4Info has a table with these field widths and these actions."""
        t = self._table(table)
        for name, width in fields.items():
            f = t.fields.get(name)
            if f is None or f.bitwidth != width:
                raise SchemaError(f"table {table}: expected match field {name} of {width} bits")
        for action, params in actions.items():
            if action not in t.actions:
                raise SchemaError(f"table {table}: action {action} missing")
            a = self._actions[action]
            for pname, width in params.items():
                if a.params.get(pname, (0, -1))[1] != width:
                    raise SchemaError(f"action {action}: expected param {pname} of {width} bits")

    def _table(self, name: str) -> _Table:
        try:
            return self._tables[name]
        except KeyError:
            raise SchemaError(f"P4Info has no table {name!r}") from None

    def encode(self, entry: TableEntry) -> p4r.TableEntry:
        t = self._table(entry.table)
        pb = p4r.TableEntry(table_id=t.id, priority=entry.priority, metadata=entry.metadata)
        if entry.is_default:
            pb.is_default_action = True
        for name, m in entry.match:
            field = t.fields.get(name)
            if field is None:
                raise SchemaError(f"table {entry.table} has no match field {name!r}")
            fm = pb.match.add(field_id=field.id)
            if isinstance(m, Exact):
                fm.exact.value = to_bytes(m.value)
            elif isinstance(m, Lpm):
                fm.lpm.value = to_bytes(m.value)
                fm.lpm.prefix_len = m.prefix_len
            elif isinstance(m, Ternary):
                fm.ternary.value = to_bytes(m.value)
                fm.ternary.mask = to_bytes(m.mask)
            elif isinstance(m, Range):
                fm.range.low = to_bytes(m.low)
                fm.range.high = to_bytes(m.high)
            else:
                fm.optional.value = to_bytes(m.value)
        if entry.group:
            pb.action.action_profile_group_id = entry.group
        elif entry.action:
            pb.action.action.CopyFrom(self._action(entry.action, entry.params))
        return pb

    def decode(self, pb: p4r.TableEntry) -> TableEntry:
        table_name = self._table_names.get(pb.table_id)
        if table_name is None:
            raise SchemaError(f"unknown table id {pb.table_id}")
        t = self._tables[table_name]
        match: list[tuple[str, Match]] = []
        for fm in pb.match:
            name = t.field_names[fm.field_id]
            kind = fm.WhichOneof("field_match_type")
            m: Match
            if kind == "exact":
                m = Exact(int.from_bytes(fm.exact.value, "big"))
            elif kind == "lpm":
                m = Lpm(int.from_bytes(fm.lpm.value, "big"), fm.lpm.prefix_len)
            elif kind == "ternary":
                m = Ternary(
                    int.from_bytes(fm.ternary.value, "big"), int.from_bytes(fm.ternary.mask, "big")
                )
            elif kind == "range":
                m = Range(int.from_bytes(fm.range.low, "big"), int.from_bytes(fm.range.high, "big"))
            else:
                m = Optional(int.from_bytes(fm.optional.value, "big"))
            match.append((name, m))
        action_name = ""
        params: tuple[tuple[str, int], ...] = ()
        action_kind = pb.action.WhichOneof("type")
        if action_kind == "action":
            action_name, params = self._decode_action(pb.action.action)
        return TableEntry(
            table_name,
            tuple(sorted(match)),
            action_name,
            params,
            pb.priority,
            pb.is_default_action,
            pb.metadata,
            pb.action.action_profile_group_id if action_kind == "action_profile_group_id" else 0,
        )
