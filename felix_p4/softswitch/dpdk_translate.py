"""P4Runtime table entries as SWX entry text, resolved by name through p4c-dpdk's context JSON.

This is how IPDK's TDI layer maps a P4Info onto a P4-DPDK spec: every P4Info table is a context
table whose `target_name` is the spec's table or learner (the names differ: P4Info
`egress_stage_1` is spec `_egress_stage_0`); its key fields are the context's
`match_key_fields` by position; each action's `target_name` is `<control>.<spec action>` and its
parameters are the spec action's arguments, by name. Facts about the SWX side (entry text,
priorities, identities) are in felix_p4/swx/README.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from finsy.proto import p4i, p4r

from felix_p4.swx.spec import Spec

# SWX wildcard priorities: lower wins, 0 highest, at most 2^29 - 2 (the ACL stores
# RTE_ACL_MAX_PRIORITY - p). P4Runtime's higher-wins priority p becomes SWX_PRIORITY_MAX - p,
# so P4Runtime priorities 1..SWX_PRIORITY_MAX are representable.
SWX_PRIORITY_MAX = 2**29 - 2

_P4_KIND = {
    p4i.MatchField.EXACT: "exact",
    p4i.MatchField.LPM: "lpm",
    p4i.MatchField.TERNARY: "ternary",
}
# The spec's match kind each P4Runtime kind must have been compiled to.
_SPEC_KIND = {"exact": "exact", "lpm": "lpm", "ternary": "wildcard"}


class TranslationError(ValueError):
    """The P4Info, context JSON and spec do not describe the same program (or one SWX cannot
    hold); the message names the table, action or field."""


@attrs.frozen(slots=True)
class MatchFieldMap:
    p4_id: int
    name: str
    bits: int
    kind: str  # P4Runtime: exact | lpm | ternary


@attrs.frozen(slots=True)
class ParamMap:
    p4_id: int
    name: str  # the same in the P4Info and as the spec action's argument
    bits: int


@attrs.frozen(slots=True)
class ActionMap:
    p4_id: int
    name: str  # P4Info
    spec_name: str
    params: tuple[ParamMap, ...]  # in the spec's argument order
    output_port_params: frozenset[str]  # params the action sends the packet to (send_to_port)


@attrs.frozen(slots=True)
class TableMap:
    p4_id: int
    name: str  # P4Info
    spec_name: str
    learner: bool  # PNA add_on_miss: entries come from the data plane only
    prioritised: bool  # a wildcard table: P4Runtime priorities matter
    hashed: bool  # SWX's exact-match hash table, which enforces `size` itself
    size: int  # as the spec declares it
    fields: tuple[MatchFieldMap, ...]  # in the spec's key order
    actions: Mapping[int, ActionMap]  # by P4Info action id
    default_action: str  # P4Info name of the spec's initial default action
    default_params: Mapping[str, int]  # its arguments, by P4Info parameter name

    def action_named(self, spec_name: str) -> ActionMap:
        for action in self.actions.values():
            if action.spec_name == spec_name:
                return action
        raise KeyError(f"table {self.name} has no spec action {spec_name}")

    def action_named_p4(self, name: str) -> ActionMap:
        for action in self.actions.values():
            if action.name == name:
                return action
        raise KeyError(f"table {self.name} has no action {name}")


@attrs.frozen(slots=True)
class SwxEntry:
    match: str  # "match ...": the entry's identity in SWX (value and mask), what delete takes
    text: str  # the whole entry, for table_add


def _number(value: int, bits: int) -> str:
    # Fields up to 64 bits are strtoull'd; wider ones are exactly 2 x bytes hex digits.
    if bits <= 64:
        return hex(value)
    return "0x" + format(value, f"0{bits // 4}x")


def _prefix_mask(prefix_len: int, bits: int) -> int:
    return ((1 << prefix_len) - 1) << (bits - prefix_len)


class PipelineMap:
    """Every P4Info table and action of one program resolved to the spec's names."""

    def __init__(
        self, tables: Iterable[TableMap], order: Iterable[str], output_port_field: str
    ) -> None:
        self.tables = {t.p4_id: t for t in tables}
        self.by_name = {t.name: t for t in self.tables.values()}
        self.by_spec_name = {t.spec_name: t for t in self.tables.values()}
        self.order = tuple(order)  # P4Info table names in the order the pipeline applies them
        self.output_port_field = output_port_field

    @classmethod
    def build(cls, p4info: p4i.P4Info, context: Mapping[str, Any], spec: Spec) -> PipelineMap:
        actions = {a.preamble.id: a for a in p4info.actions}
        output_port_field = _output_port_field(spec)
        tables: list[TableMap] = []
        for info in p4info.tables:
            name = info.preamble.name
            ctx = next((t for t in context["tables"] if t["name"] == name), None)
            if ctx is None:
                raise TranslationError(f"table {name}: not in the context JSON")
            spec_table = spec.tables.get(ctx["target_name"])
            if spec_table is None:
                raise TranslationError(f"table {name}: spec has no table {ctx['target_name']}")
            fields = _fields(name, info, ctx, [k.kind for k in spec_table.key])
            kinds = {f.kind for f in fields}
            action_maps: dict[int, ActionMap] = {}
            for ctx_action in ctx["actions"]:
                p4_action = actions.get(ctx_action["handle"])
                if p4_action is None or p4_action.preamble.name != ctx_action["name"]:
                    raise TranslationError(
                        f"table {name}: context action {ctx_action['name']} is not in the P4Info"
                    )
                action_maps[p4_action.preamble.id] = _action(
                    name, p4_action, ctx_action, spec, spec_table.actions, output_port_field
                )
            default = action_maps.get(ctx["default_action_handle"])
            if default is None or default.spec_name != spec_table.default_action:
                raise TranslationError(
                    f"table {name}: the context's default action is not the spec's "
                    f"{spec_table.default_action}"
                )
            default_params = dict(spec_table.default_args)
            if set(default_params) != {p.name for p in default.params}:
                raise TranslationError(
                    f"table {name}: the spec's default arguments {sorted(default_params)} are "
                    f"not {default.name}'s parameters"
                )
            tables.append(
                TableMap(
                    p4_id=info.preamble.id,
                    name=name,
                    spec_name=spec_table.name,
                    learner=spec_table.learner,
                    prioritised=kinds == {"exact", "ternary"} or kinds == {"ternary"},
                    hashed=not spec_table.learner
                    and kinds == {"exact"}
                    and _contiguous(spec, [k.operand for k in spec_table.key]),
                    size=spec_table.size,
                    fields=fields,
                    actions=action_maps,
                    default_action=default.name,
                    default_params=default_params,
                )
            )
        by_spec = {t.spec_name: t.name for t in tables}
        order: list[str] = []
        for line in spec.instructions:
            words = line.split(":")[-1].split()
            if len(words) == 2 and words[0] == "table" and words[1] in by_spec:
                order.append(by_spec[words[1]])
        missing = sorted(set(by_spec.values()) - set(order))
        if missing:
            raise TranslationError(f"tables the spec never applies: {missing}")
        return cls(tables, order, output_port_field)

    def match(self, table: TableMap, match: Iterable[p4r.FieldMatch]) -> str:
        """The SWX match of a P4Runtime match (any valid form: omitted fields are don't-cares)."""
        given = {fm.field_id: fm for fm in match}
        words = ["match"]
        for f in table.fields:
            fm = given.get(f.p4_id)
            if f.kind == "exact":
                if fm is None:
                    raise TranslationError(f"table {table.name}: exact field {f.name} missing")
                words.append(_number(int.from_bytes(fm.exact.value, "big"), f.bits))
            elif fm is None:
                words.append(f"{_number(0, f.bits)}/{_number(0, f.bits)}")
            elif f.kind == "lpm":
                mask = _prefix_mask(fm.lpm.prefix_len, f.bits)
                value = int.from_bytes(fm.lpm.value, "big")
                words.append(f"{_number(value & mask, f.bits)}/{_number(mask, f.bits)}")
            else:
                mask = int.from_bytes(fm.ternary.mask, "big")
                value = int.from_bytes(fm.ternary.value, "big")
                words.append(f"{_number(value & mask, f.bits)}/{_number(mask, f.bits)}")
        return " ".join(words)

    def action(self, table: TableMap, action: p4r.Action) -> str:
        """`action <spec name> <arg> <value> ...` of a P4Runtime action of `table`."""
        mapped = table.actions.get(action.action_id)
        if mapped is None:
            raise TranslationError(f"table {table.name}: action id {action.action_id} unknown")
        values = {p.param_id: int.from_bytes(p.value, "big") for p in action.params}
        words = ["action", mapped.spec_name]
        for param in mapped.params:
            words += [param.name, _number(values.get(param.p4_id, 0), param.bits)]
        return " ".join(words)

    def entry(self, table: TableMap, te: p4r.TableEntry) -> SwxEntry:
        """The SWX entry of a (validated) P4Runtime entry with a direct action."""
        match = self.match(table, te.match)
        priority = ""
        if table.prioritised:
            if not 0 < te.priority <= SWX_PRIORITY_MAX:
                raise TranslationError(
                    f"table {table.name}: priority {te.priority} outside 1..{SWX_PRIORITY_MAX}"
                )
            priority = f" priority {SWX_PRIORITY_MAX - te.priority}"
        return SwxEntry(match, f"{match}{priority} {self.action(table, te.action.action)}")

    def output_ports(self, table: TableMap, action: p4r.Action) -> list[tuple[str, int]]:
        """(param, value) of each parameter of `action` that becomes the packet's output port."""
        mapped = table.actions.get(action.action_id)
        if mapped is None or not mapped.output_port_params:
            return []
        by_id = {p.p4_id: p.name for p in mapped.params}
        return [
            (by_id[p.param_id], int.from_bytes(p.value, "big"))
            for p in action.params
            if by_id.get(p.param_id) in mapped.output_port_params
        ]

    def initial_defaults(self) -> dict[str, tuple[str, dict[str, int]]]:
        """Each table's default action as the spec declares it (the store's initial defaults)."""
        return {t.name: (t.default_action, dict(t.default_params)) for t in self.tables.values()}


def _output_port_field(spec: Spec) -> str:
    """The metadata field `tx` sends the packet to (PNA: the output port)."""
    for line in reversed(spec.instructions):
        words = line.split(":")[-1].split()
        if len(words) == 2 and words[0] == "tx":
            return words[1]
    raise TranslationError("the spec's apply block has no tx")


def _fields(
    table: str, info: p4i.Table, ctx: Mapping[str, Any], spec_kinds: list[str]
) -> tuple[MatchFieldMap, ...]:
    p4_fields = {mf.name: mf for mf in info.match_fields}
    # A keyless table (its default entry only) has no key fields in the context.
    ctx_fields = sorted(ctx.get("match_key_fields", ()), key=lambda f: int(f["position"]))
    if len(ctx_fields) != len(p4_fields) or len(spec_kinds) != len(p4_fields):
        raise TranslationError(
            f"table {table}: {len(p4_fields)} P4Info key fields, {len(ctx_fields)} in the "
            f"context, {len(spec_kinds)} in the spec"
        )
    out = []
    for ctx_field, spec_kind in zip(ctx_fields, spec_kinds, strict=True):
        mf = p4_fields.get(ctx_field["name"])
        if mf is None:
            raise TranslationError(f"table {table}: key field {ctx_field['name']} not in P4Info")
        kind = _P4_KIND.get(mf.match_type)
        if kind is None:
            raise TranslationError(f"table {table}: field {mf.name}: SWX has no such match kind")
        if _SPEC_KIND[kind] != spec_kind or int(ctx_field["bit_width"]) != mf.bitwidth:
            raise TranslationError(
                f"table {table}: field {mf.name} is {kind} {mf.bitwidth} bits in the P4Info, "
                f"{spec_kind} {ctx_field['bit_width']} bits in the spec and context"
            )
        if mf.bitwidth % 8:
            raise TranslationError(f"table {table}: field {mf.name} is not whole bytes")
        out.append(MatchFieldMap(mf.id, mf.name, mf.bitwidth, kind))
    return tuple(out)


def _action(
    table: str,
    p4_action: p4i.Action,
    ctx_action: Mapping[str, Any],
    spec: Spec,
    table_actions: tuple[str, ...],
    output_port_field: str,
) -> ActionMap:
    # p4c-dpdk names a control's action "<control>.<spec action>" in the context.
    spec_name = str(ctx_action["target_name"]).rsplit(".", 1)[-1]
    spec_action = spec.actions.get(spec_name)
    if spec_action is None or spec_name not in table_actions:
        raise TranslationError(
            f"table {table}: action {p4_action.preamble.name} is spec action {spec_name}, "
            "which the spec's table does not list"
        )
    p4_params = {p.name: p for p in p4_action.params}
    args = spec.structs[spec_action.args].fields if spec_action.args else ()
    if {a.name for a in args} != set(p4_params):
        raise TranslationError(
            f"action {p4_action.preamble.name}: P4Info params {sorted(p4_params)}, spec "
            f"{spec_name} arguments {[a.name for a in args]}"
        )
    params = []
    for arg in args:
        p = p4_params[arg.name]
        if p.bitwidth != arg.bits:
            raise TranslationError(
                f"action {p4_action.preamble.name}: param {p.name} is {p.bitwidth} bits, "
                f"spec argument {arg.bits}"
            )
        params.append(ParamMap(p.id, p.name, p.bitwidth))
    outputs = frozenset(
        words[2][2:]
        for words in (line.split(":")[-1].split() for line in spec_action.body)
        if len(words) == 3
        and words[0] == "mov"
        and words[1] == output_port_field
        and words[2].startswith("t.")
    )
    name = p4_action.preamble.name
    return ActionMap(p4_action.preamble.id, name, spec_name, tuple(params), outputs)


def _contiguous(spec: Spec, operands: list[str]) -> bool:
    """Whether the key fields form one unbroken span (DPDK then picks its hash table)."""
    spans = []
    for operand in operands:
        _, field = spec.struct_of(operand)
        spans.append((field.offset, field.offset + field.bits // 8))
    starts = {start for start, _ in spans}
    return sum(1 for _, end in spans if end in starts) == len(spans) - 1
