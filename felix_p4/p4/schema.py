"""The device's P4Info resolved by name, and encoding of TableEntry values to P4Runtime."""

from __future__ import annotations

import attrs
from finsy import P4Schema
from finsy.proto import p4i, p4r

from felix_p4.pipeline import MATCH_TYPE_NUMBER, SELECTOR, Action, Pipeline
from felix_p4.pipeline.entries import (
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


class ValueTooWide(SchemaError):
    """A value that does not fit its field or parameter; sending it would truncate it."""


def to_bytes(value: int) -> bytes:
    """P4Runtime canonical form: big-endian without leading zero bytes, zero as one byte."""
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def _checked(value: int, width: int, table: str, name: str, match: Match) -> bytes:
    """`value` in P4Runtime's canonical bytes, or ValueTooWide when it does not fit `width`."""
    bits = value.bit_length()
    if value < 0 or bits > width:
        raise ValueTooWide(f"table {table}: {name}={match} does not fit {width} bits")
    return value.to_bytes((bits + 7) // 8 or 1, "big")


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
        self._profile_sizes = {p.alias or p.name: p.size for p in self.finsy.action_profiles}
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
        self._sizes = {t.preamble.name: t.size for t in p4info.tables}

    @property
    def table_names(self) -> list[str]:
        return list(self._tables)

    def _profile(self, name: str) -> int:
        try:
            return self._profiles[name]
        except KeyError:
            raise SchemaError(f"P4Info has no action profile {name!r}") from None

    def _action(self, action: str, params: tuple[tuple[str, int], ...]) -> p4r.Action:
        pb = p4r.Action()
        self._fill_action(pb, action, params)
        return pb

    def _fill_action(
        self, pb: p4r.Action, action: str, params: tuple[tuple[str, int], ...]
    ) -> None:
        a = self._actions.get(action)
        if a is None:
            raise SchemaError(f"P4Info has no action {action!r}")
        pb.action_id = a.id
        add = pb.params.add
        for pname, value in params:
            pid = a.params.get(pname)
            if pid is None:
                raise SchemaError(f"action {action} has no param {pname!r}")
            bits = value.bit_length()
            if value < 0 or bits > pid[1]:
                raise ValueTooWide(f"action {action}: {pname}={value} does not fit {pid[1]} bits")
            add(param_id=pid[0], value=value.to_bytes((bits + 7) // 8 or 1, "big"))

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

    def check(self, pipeline: Pipeline) -> None:
        """Refuse a device whose P4Info differs from the declared pipeline: every declared
        table, key (match kind and width), action and parameter must be there as declared.
        The first difference is raised as one line naming it."""
        for table in pipeline.tables:
            t = self._tables.get(table.name)
            if t is None:
                raise SchemaError(f"P4Info has no table {table.name!r}")
            for key in table.keys:
                if key.match == SELECTOR:
                    continue
                f = t.fields.get(key.name)
                if f is None:
                    raise SchemaError(f"table {table.name}: P4Info has no match field {key.name!r}")
                if f.bitwidth != key.bits or f.match_type != MATCH_TYPE_NUMBER[key.match]:
                    raise SchemaError(
                        f"table {table.name}: match field {key.name} is {f.bitwidth} bits "
                        f"(kind {f.match_type}); declared {key.bits} bits {key.match}"
                    )
            extra = set(t.fields) - {k.name for k in table.match_keys}
            if extra:
                raise SchemaError(
                    f"table {table.name}: P4Info has undeclared fields {sorted(extra)}"
                )
            for action in (*table.actions, table.default):
                if action.name not in t.actions:
                    raise SchemaError(f"table {table.name}: P4Info lacks action {action.name}")
                self._check_action(action)
        for profile in pipeline.profiles:
            if profile.name not in self._profiles:
                raise SchemaError(f"P4Info has no action profile {profile.name!r}")
            for action in profile.actions:
                self._check_action(action)
        for action in pipeline.direct_actions:
            self._check_action(action)

    def _check_action(self, action: Action) -> None:
        a = self._actions.get(action.name)
        if a is None:
            raise SchemaError(f"P4Info has no action {action.name!r}")
        declared = {p.name: p.bits for p in action.params}
        found = {name: width for name, (_, width) in a.params.items()}
        if declared != found:
            raise SchemaError(
                f"action {action.name}: P4Info parameters {found}, declared {declared}"
            )

    def size(self, name: str) -> int:
        """The size the device's P4Info gives a table or action profile (0: unknown)."""
        if name in self._sizes:
            return self._sizes[name]
        profile = name.split("#", 1)[0]
        return self._profile_sizes.get(profile, 0)

    def _table(self, name: str) -> _Table:
        try:
            return self._tables[name]
        except KeyError:
            raise SchemaError(f"P4Info has no table {name!r}") from None

    def encode(self, entry: TableEntry) -> p4r.TableEntry:
        """The P4Runtime form of `entry`, every value checked against its width (ValueTooWide
        rather than a truncated entry). The hot path of every write: values are converted to
        bytes once, with their length taken from the same bit_length the check uses."""
        t = self._table(entry.table)
        pb = p4r.TableEntry(table_id=t.id, priority=entry.priority, metadata=entry.metadata)
        if entry.is_default:
            pb.is_default_action = True
        fields = t.fields
        add = pb.match.add
        for name, m in entry.match:
            field = fields.get(name)
            if field is None:
                raise SchemaError(f"table {entry.table} has no match field {name!r}")
            width = field.bitwidth
            if isinstance(m, Exact):
                add(field_id=field.id).exact.value = _checked(m.value, width, entry.table, name, m)
            elif isinstance(m, Lpm):
                if m.prefix_len > width:
                    raise ValueTooWide(f"table {entry.table}: {name}={m} prefix beyond {width}")
                fm = add(field_id=field.id)
                fm.lpm.value = _checked(m.value, width, entry.table, name, m)
                fm.lpm.prefix_len = m.prefix_len
            elif isinstance(m, Ternary):
                fm = add(field_id=field.id)
                fm.ternary.value = _checked(m.value, width, entry.table, name, m)
                fm.ternary.mask = _checked(m.mask, width, entry.table, name, m)
            elif isinstance(m, Range):
                fm = add(field_id=field.id)
                fm.range.low = _checked(m.low, width, entry.table, name, m)
                fm.range.high = _checked(m.high, width, entry.table, name, m)
            else:
                add(field_id=field.id).optional.value = _checked(
                    m.value, width, entry.table, name, m
                )
        if entry.group:
            pb.action.action_profile_group_id = entry.group
        elif entry.action:
            self._fill_action(pb.action.action, entry.action, entry.params)
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
