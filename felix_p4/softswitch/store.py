"""Table store of the embedded target: P4Runtime-validated table and action profile writes,
reads and lookups."""

from __future__ import annotations

import bisect
import ipaddress
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import attrs
from finsy.proto import p4i, p4r, rpc_code


class P4RuntimeError(Exception):
    """An operation refused with a google.rpc.Code and a message meant for the client."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{_code_name(code)}: {message}")
        self.code = code
        self.message = message


def _code_name(code: int) -> str:
    try:
        return rpc_code.Code.Name(rpc_code.Code.ValueType(code))
    except ValueError:
        return f"code {code}"


@attrs.frozen(slots=True)
class Lookup:
    """The outcome of one table lookup: the entry hit (or the default) and its action.

    A result is built when its entry is written (for indirect tables, when it is looked up)
    and may be shared by every packet that hits the entry, so callers must treat `params` and
    `match` as read-only. `match` holds only the
    fields the entry constrains: exact and optional as integers, LPM as "10.0.0.0/8" (32 and
    128-bit fields as addresses, others in hex), ternary as "0x0a/0xff", range as "5..10".

    For an entry of an indirect table, `action` and `params` are those of the action profile
    member it points to (`member_id`), or, if it points to a group (`group_id`), of the member
    the selector chose. An entry pointing at an empty group gives the table's default result
    (a miss, NoAction) with `group_id` set, the spec's recommended `psa_empty_group_action`.
    """

    table: str
    hit: bool
    action: str
    params: dict[str, int]
    priority: int = 0
    match: dict[str, object] = attrs.field(factory=dict)
    metadata: bytes = b""  # the controller's opaque TableEntry.metadata (names, for traces)
    member_id: int = 0
    group_id: int = 0


def _invalid(message: str) -> P4RuntimeError:
    return P4RuntimeError(rpc_code.INVALID_ARGUMENT, message)


def _encode(value: int) -> bytes:
    """Canonical P4Runtime bytestring: the shortest big-endian string, one byte for zero."""
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def _decode(data: bytes, bitwidth: int, what: str) -> int:
    # The spec makes servers accept any length (leading zeros are how programs with
    # different widths interoperate) as long as the value itself fits the P4Info width.
    if not data:
        raise _invalid(f"{what}: empty bytestring")
    value = int.from_bytes(data, "big")
    if value.bit_length() > bitwidth:
        raise _invalid(f"{what}: value 0x{value:x} does not fit in {bitwidth} bits")
    return value


def _prefix_mask(prefix_len: int, bitwidth: int) -> int:
    return ((1 << prefix_len) - 1) << (bitwidth - prefix_len)


def _format_prefix(value: int, prefix_len: int, bitwidth: int) -> str:
    if bitwidth == 32:
        return f"{ipaddress.IPv4Address(value)}/{prefix_len}"
    if bitwidth == 128:
        return f"{ipaddress.IPv6Address(value)}/{prefix_len}"
    return f"0x{value:x}/{prefix_len}"


_KIND_BY_MATCH_TYPE = {
    p4i.MatchField.EXACT: "exact",
    p4i.MatchField.LPM: "lpm",
    p4i.MatchField.TERNARY: "ternary",
    p4i.MatchField.RANGE: "range",
    p4i.MatchField.OPTIONAL: "optional",
}
# Match kinds that make a table a TCAM: entries need a priority (P4Runtime spec §9.1).
_PRIORITY_KINDS = frozenset({"ternary", "range", "optional"})
_SCOPE_TABLE_ONLY = p4i.ActionRef.TABLE_ONLY
_SCOPE_DEFAULT_ONLY = p4i.ActionRef.DEFAULT_ONLY
_UPDATE_TYPES = frozenset({p4r.Update.INSERT, p4r.Update.MODIFY, p4r.Update.DELETE})


@attrs.frozen(slots=True)
class _Field:
    index: int  # position in the table's key, the order of normalized match tuples
    id: int
    name: str
    bitwidth: int
    kind: str  # the p4r.FieldMatch oneof name, or "other:<name>" for architecture kinds

    @property
    def all_ones(self) -> int:
        return (1 << self.bitwidth) - 1


@attrs.frozen(slots=True)
class _Param:
    id: int
    name: str
    bitwidth: int


@attrs.frozen(slots=True)
class _Action:
    id: int
    name: str
    params: tuple[_Param, ...]


# A normalized match is one slot per key field in P4Info order: None for "don't care",
# an int for exact/optional, (value, prefix_len) for LPM, (value, mask) for ternary and
# (low, high) for range. Together with the priority it is the entry's identity.
_Slots = tuple[object, ...]
_Key = tuple[_Slots, int]


@attrs.define(slots=True, eq=False)
class _Entry:
    """One installed entry. Mutable only so that lookups can record when it was last hit."""

    message: p4r.TableEntry  # canonical form, what reads return
    result: Lookup
    seq: int = 0  # insertion order, the tie-break among equal priorities
    order: tuple[int, int, int] = (0, 0, 0)  # TCAM tables: (-priority, -prefix bits, seq)
    masked: tuple[tuple[int, int, int], ...] = ()  # (field index, mask, value)
    ranges: tuple[tuple[int, int, int], ...] = ()  # (field index, low, high)
    last_hit_ns: int = 0


class _Table:
    """One table: its P4Info shape, entries, default entry and lookup index."""

    def __init__(self, info: p4i.Table, actions: Mapping[int, _Action]) -> None:
        self.id = info.preamble.id
        self.name = info.preamble.name
        fields: list[_Field] = []
        names: set[str] = set()
        for index, mf in enumerate(info.match_fields):
            kind = _field_kind(self.name, mf)
            if mf.id == 0 or any(f.id == mf.id for f in fields):
                raise _invalid(f"table {self.name}: match field id {mf.id} is zero or repeated")
            if not mf.name or mf.name in names:
                raise _invalid(f"table {self.name}: match field name {mf.name!r} empty or repeated")
            if mf.bitwidth <= 0 and not kind.startswith("other:"):
                raise _invalid(f"table {self.name}: match field {mf.name} has no bitwidth")
            names.add(mf.name)
            fields.append(_Field(index, mf.id, mf.name, mf.bitwidth, kind))
        self.fields = tuple(fields)
        self.fields_by_id = {f.id: f for f in fields}
        self.action_refs: dict[int, tuple[_Action, int]] = {}
        for ref in info.action_refs:
            if ref.id not in actions:
                raise _invalid(f"table {self.name}: action ref {ref.id} is not a known action")
            if ref.id in self.action_refs:
                raise _invalid(f"table {self.name}: action ref {ref.id} repeated")
            self.action_refs[ref.id] = (actions[ref.id], ref.scope)
        self.actions_by_name = {a.name: a for a, _ in self.action_refs.values()}
        if info.const_default_action_id and info.const_default_action_id not in self.action_refs:
            raise _invalid(
                f"table {self.name}: const default action {info.const_default_action_id} "
                "is not one of its actions"
            )
        if info.size < 0:
            raise _invalid(f"table {self.name}: negative size {info.size}")
        self.size = info.size  # 0: P4Info states no size, the store imposes no limit
        self.const_default_action_id = info.const_default_action_id
        self.is_const = info.is_const_table
        self.implementation_id = info.implementation_id
        self.indirect = info.implementation_id != 0
        # Indirect tables: the action profile behind it; None if the implementation is another
        # kind of extern, whose entries are then refused with UNIMPLEMENTED.
        self.profile: _Profile | None = None
        self.idle_timeout = info.idle_timeout_behavior == p4i.Table.NOTIFY_CONTROL
        kinds = [f.kind for f in fields]
        self.needs_priority = any(k in _PRIORITY_KINDS for k in kinds)
        self.exact_fields = tuple(f for f in fields if f.kind == "exact")
        lpm_count = kinds.count("lpm")
        if all(k == "exact" for k in kinds):
            self.strategy = "exact"
        elif lpm_count == 1 and all(k in ("exact", "lpm") for k in kinds):
            self.strategy = "lpm"
        else:
            self.strategy = "general"
        self.lpm_index = kinds.index("lpm") if self.strategy == "lpm" else -1
        # What must be unchanged for RECONCILE_AND_COMMIT to keep this table's entries.
        self.shape = (
            self.id,
            self.name,
            self.fields,
            tuple(
                sorted((a.id, a.name, a.params, scope) for a, scope in self.action_refs.values())
            ),
            self.const_default_action_id,
            self.is_const,
            self.implementation_id,
            self.idle_timeout,
        )
        self.entries: dict[_Key, _Entry] = {}
        self.plen_counts: dict[int, int] = {}  # LPM tables: entries per prefix length
        self.plens_desc: list[int] = []
        self.sorted_entries: list[_Entry] | None = None  # TCAM tables, rebuilt lazily
        # Placeholder until TableStore resolves the initial default against all actions.
        self.initial_default = _Entry(p4r.TableEntry(), Lookup(self.name, False, "", {}))
        self.default = self.initial_default

    def match(self, values: Sequence[int]) -> _Entry | None:
        if self.strategy == "exact":
            return self.entries.get((tuple(values), 0))
        if self.strategy == "lpm":
            index = self.lpm_index
            bitwidth = self.fields[index].bitwidth
            slots: list[object] = list(values)
            for plen in self.plens_desc:
                slots[index] = (
                    (values[index] & _prefix_mask(plen, bitwidth), plen) if plen else None
                )
                entry = self.entries.get((tuple(slots), 0))
                if entry is not None:
                    return entry
            return None
        if self.sorted_entries is None:
            self.sorted_entries = sorted(self.entries.values(), key=lambda e: e.order)
        for entry in self.sorted_entries:
            for index, mask, value in entry.masked:
                if values[index] & mask != value:
                    break
            else:
                for index, low, high in entry.ranges:
                    if not low <= values[index] <= high:
                        break
                else:
                    return entry
        return None

    def index_added(self, key: _Key) -> None:
        if self.strategy == "lpm":
            plen = self._plen(key)
            count = self.plen_counts.get(plen, 0)
            self.plen_counts[plen] = count + 1
            if count == 0:
                self.plens_desc = sorted(self.plen_counts, reverse=True)
        self.sorted_entries = None

    def index_removed(self, key: _Key) -> None:
        if self.strategy == "lpm":
            plen = self._plen(key)
            count = self.plen_counts[plen] - 1
            if count:
                self.plen_counts[plen] = count
            else:
                del self.plen_counts[plen]
                self.plens_desc = sorted(self.plen_counts, reverse=True)
        self.sorted_entries = None

    def _plen(self, key: _Key) -> int:
        slot = key[0][self.lpm_index]
        if slot is None:
            return 0
        assert isinstance(slot, tuple)
        return int(slot[1])


@attrs.frozen(slots=True)
class _Binding:
    """What a table entry's action resolves to: a direct action, or a member or group."""

    action: p4r.TableAction  # canonical, what reads return
    name: str = ""  # direct action only; members and groups are resolved at lookup
    params: dict[str, int] = attrs.field(factory=dict)
    member_id: int = 0
    group_id: int = 0


@attrs.frozen(slots=True)
class _Member:
    message: p4r.ActionProfileMember  # canonical form, what reads return
    action: str
    params: dict[str, int]


@attrs.frozen(slots=True)
class _Group:
    message: p4r.ActionProfileGroup  # canonical form: members in member_id order
    member_ids: tuple[int, ...]  # in member_id order, the order selection expands by weight
    bounds: tuple[int, ...]  # cumulative weights of member_ids; empty for an empty group
    size: int  # what the group takes of the selector's size, per selector_size_semantics

    def choose(self, selector_hash: int) -> int:
        """The member at `selector_hash % total weight` of the weight-expanded member list."""
        index = selector_hash % self.bounds[-1]
        return self.member_ids[bisect.bisect_right(self.bounds, index)]


class _Profile:
    """One action profile or action selector: its P4Info shape, members and groups."""

    def __init__(self, info: p4i.ActionProfile, tables: Mapping[int, _Table]) -> None:
        self.id = info.preamble.id
        self.name = name = info.preamble.name
        self.with_selector = info.with_selector
        semantics = info.WhichOneof("selector_size_semantics")
        if info.size < 0 or info.max_group_size < 0:
            raise _invalid(f"action profile {name}: negative size or max_group_size")
        if not info.with_selector and (info.max_group_size or semantics or info.weights_disallowed):
            raise _invalid(
                f"action profile {name} has no selector: max_group_size, "
                "selector_size_semantics and weights_disallowed must be unset"
            )
        if info.size and info.max_group_size > info.size:
            raise _invalid(f"action profile {name}: max_group_size exceeds size")
        self.size = info.size  # 0: P4Info states no size, the store imposes no limit
        self.max_group_size = info.max_group_size
        # Unset semantics means sum_of_weights (spec, for backwards compatibility).
        self.sum_of_members = semantics == "sum_of_members"
        self.max_member_weight = info.sum_of_members.max_member_weight
        if self.max_member_weight < 0:
            raise _invalid(f"action profile {name}: negative max_member_weight")
        self.weights_disallowed = info.weights_disallowed
        self.table_ids = tuple(info.table_ids)
        if len(set(self.table_ids)) != len(self.table_ids):
            raise _invalid(f"action profile {name}: a table id is repeated")
        # Members may be bound to the actions of the tables the profile implements; the spec
        # requires those tables to have the same actions.
        self.action_refs: dict[int, tuple[_Action, int]] = {}
        for index, table_id in enumerate(self.table_ids):
            table = tables.get(table_id)
            if table is None or table.implementation_id != self.id:
                raise _invalid(
                    f"action profile {name}: table id {table_id} is not a table it implements"
                )
            if index == 0:
                self.action_refs = dict(table.action_refs)
            elif set(table.action_refs) != set(self.action_refs):
                raise _invalid(
                    f"action profile {name}: its tables do not all have the same actions"
                )
        # What must be unchanged for RECONCILE_AND_COMMIT to keep its members and groups.
        self.shape = (
            self.id,
            name,
            self.with_selector,
            self.size,
            self.max_group_size,
            semantics,
            self.max_member_weight,
            self.weights_disallowed,
            tuple(sorted(self.table_ids)),
            tuple(
                sorted((a.id, a.name, a.params, scope) for a, scope in self.action_refs.values())
            ),
        )
        self.members: dict[int, _Member] = {}
        self.groups: dict[int, _Group] = {}
        # How many groups and table entries use each member, and table entries each group:
        # what makes a DELETE FAILED_PRECONDITION.
        self.member_refs: dict[int, int] = {}
        self.group_refs: dict[int, int] = {}
        self.group_usage = 0  # sum of the groups' sizes, bounded by `size` for selectors


def _field_kind(table: str, mf: p4i.MatchField) -> str:
    if mf.WhichOneof("match") == "other_match_type":
        return f"other:{mf.other_match_type}"
    kind = _KIND_BY_MATCH_TYPE.get(mf.match_type)
    if kind is None:
        raise _invalid(f"table {table}: match field {mf.name} has no match type")
    return kind


def _compile_actions(p4info: p4i.P4Info) -> dict[int, _Action]:
    actions: dict[int, _Action] = {}
    for info in p4info.actions:
        name = info.preamble.name
        params: list[_Param] = []
        for p in info.params:
            if p.id == 0 or any(q.id == p.id or q.name == p.name for q in params):
                raise _invalid(f"action {name}: param {p.name!r} (id {p.id}) zero or repeated")
            if p.bitwidth <= 0:
                raise _invalid(f"action {name}: param {p.name} has no bitwidth")
            params.append(_Param(p.id, p.name, p.bitwidth))
        actions[info.preamble.id] = _Action(info.preamble.id, name, tuple(params))
    return actions


def _check_ids_and_names(p4info: p4i.P4Info) -> None:
    """P4Runtime addresses every object by id; we also address tables and actions by name."""
    groups: list[tuple[str, Iterable[p4i.Preamble]]] = [
        ("table", (o.preamble for o in p4info.tables)),
        ("action", (o.preamble for o in p4info.actions)),
        ("action profile", (o.preamble for o in p4info.action_profiles)),
        ("counter", (o.preamble for o in p4info.counters)),
        ("direct counter", (o.preamble for o in p4info.direct_counters)),
        ("meter", (o.preamble for o in p4info.meters)),
        ("direct meter", (o.preamble for o in p4info.direct_meters)),
        ("controller packet metadata", (o.preamble for o in p4info.controller_packet_metadata)),
        ("value set", (o.preamble for o in p4info.value_sets)),
        ("register", (o.preamble for o in p4info.registers)),
        ("digest", (o.preamble for o in p4info.digests)),
        ("extern", (i.preamble for e in p4info.externs for i in e.instances)),
    ]
    seen: dict[int, str] = {}
    for kind, preambles in groups:
        names: set[str] = set()
        for pre in preambles:
            what = f"{kind} {pre.name!r}"
            if pre.id == 0:
                raise _invalid(f"P4Info: {what} has id 0")
            if pre.id in seen:
                raise _invalid(f"P4Info: id 0x{pre.id:08x} used by both {seen[pre.id]} and {what}")
            if kind in ("table", "action", "action profile") and pre.name in names:
                raise _invalid(f"P4Info: two {kind}s named {pre.name!r}")
            seen[pre.id] = what
            names.add(pre.name)


class TableStore:
    """Every table and action profile of one pipeline, written and read per the P4Runtime
    spec, looked up by name.

    Implemented: table entries of direct and indirect tables, action profile members and
    action selector groups. Refused with UNIMPLEMENTED: direct counters and meters, one-shot
    action selector programming (`action_profile_action_set`), and tables whose
    `implementation_id` is an extern other than an action profile. Const entries declared in
    the P4 source are not loaded (P4Info does not carry them). Group members' `watch` and
    `watch_port` are stored and read back but never exclude a member (the target has no
    ports to watch). An action profile's `size` bounds its number of members; a selector's
    also bounds the sum of its groups' sizes (weights or members, per
    `selector_size_semantics`). Groups may bind members to different actions.

    A direct table's initial default action is, in order: `initial_defaults[table]` (the action
    and params the P4 source declares, supplied by the behavioural model), the P4Info's
    `initial_default_action`, its `const_default_action_id` (if that action has no params),
    "NoAction" if the P4Info has such an action, else "" (a miss that runs no action). An
    indirect table's default is the spec's constant NoAction: any other initial default is
    refused, and a MODIFY of it is PERMISSION_DENIED.
    """

    def __init__(
        self,
        p4info: p4i.P4Info,
        *,
        initial_defaults: Mapping[str, tuple[str, dict[str, int]]] | None = None,
        limits: Mapping[str, int] | None = None,
    ) -> None:
        _check_ids_and_names(p4info)
        actions = _compile_actions(p4info)
        self._tables: dict[int, _Table] = {}
        self._tables_by_name: dict[str, _Table] = {}
        for info in p4info.tables:
            table = _Table(info, actions)
            if limits and info.preamble.name in limits:
                # A device that holds fewer entries than its P4Info says (hardware often does).
                table.size = limits[info.preamble.name]
            self._tables[table.id] = table
            self._tables_by_name[table.name] = table
        self._profiles: dict[int, _Profile] = {}
        self._profiles_by_name: dict[str, _Profile] = {}
        for profile_info in p4info.action_profiles:
            profile = _Profile(profile_info, self._tables)
            self._profiles[profile.id] = profile
            self._profiles_by_name[profile.name] = profile
            # The P4Info alias too: p4c names a control-local profile by its full path.
            self._profiles_by_name.setdefault(profile_info.preamble.alias, profile)
        externs = {i.preamble.id for e in p4info.externs for i in e.instances}
        for table in self._tables.values():
            if not table.indirect:
                continue
            profile_or_none = self._profiles.get(table.implementation_id)
            if profile_or_none is None:
                if table.implementation_id not in externs:
                    raise _invalid(
                        f"table {table.name}: implementation_id 0x{table.implementation_id:08x} "
                        "is neither an action profile nor an extern instance"
                    )
                continue
            if table.id not in profile_or_none.table_ids:
                raise _invalid(
                    f"table {table.name}: action profile {profile_or_none.name} does not list it"
                )
            table.profile = profile_or_none
        defaults = dict(initial_defaults or {})
        unknown = sorted(set(defaults) - set(self._tables_by_name))
        if unknown:
            raise _invalid(f"initial defaults given for tables not in the P4Info: {unknown}")
        no_action = next((a for a in actions.values() if a.name == "NoAction"), None)
        for info in p4info.tables:
            table = self._tables[info.preamble.id]
            table.initial_default = self._initial_default(
                table, info, defaults.get(table.name), no_action
            )
            table.default = table.initial_default
        self._seq = 0
        # Undo steps of the batch being applied all-or-none; None outside such a batch.
        self._journal: list[Callable[[], None]] | None = None

    # ----------------------------------------------------------------------- writes

    def write(self, update: p4r.Update) -> None:
        """Apply one update, or raise P4RuntimeError and change nothing."""
        entity = update.entity
        which = entity.WhichOneof("entity")
        if which is None:
            raise _invalid("update has no entity")
        if which == "table_entry":
            self._write_entry(update.type, entity.table_entry)
        elif which == "action_profile_member":
            self._write_member(update.type, entity.action_profile_member)
        elif which == "action_profile_group":
            self._write_group(update.type, entity.action_profile_group)
        else:
            raise P4RuntimeError(
                rpc_code.UNIMPLEMENTED, f"{which} is not implemented by the embedded target"
            )

    def _write_entry(self, kind: int, te: p4r.TableEntry) -> None:
        table = self._table(te.table_id)
        if kind not in _UPDATE_TYPES:
            raise _invalid(f"table {table.name}: update type {kind} is not INSERT/MODIFY/DELETE")
        if te.is_const:
            raise _invalid(f"table {table.name}: is_const must be false in a write")
        if te.HasField("time_since_last_hit"):
            raise _invalid(f"table {table.name}: time_since_last_hit must be unset in a write")
        if te.is_default_action:
            self._write_default(table, kind, te)
            return
        if table.is_const:
            raise P4RuntimeError(
                rpc_code.PERMISSION_DENIED, f"table {table.name} is const; its entries are fixed"
            )
        if kind == p4r.Update.INSERT and not table.fields:
            raise _invalid(f"table {table.name} has no key; only its default entry can be set")
        key = self._key(table, te.match, te.priority)
        if kind == p4r.Update.DELETE:
            # Only the key counts for a delete (spec §9.1): the rest may be nonsense.
            if key not in table.entries:
                raise P4RuntimeError(rpc_code.NOT_FOUND, self._describe(table, key, "no entry"))
            self._remove(table, key)
            return
        self._check_entry_extras(table, te)
        existing = table.entries.get(key)
        if kind == p4r.Update.INSERT:
            if not te.HasField("action"):
                raise _invalid(f"table {table.name}: INSERT needs an action")
            binding = self._bind(table, te.action)
            if existing is not None:
                raise P4RuntimeError(
                    rpc_code.ALREADY_EXISTS, self._describe(table, key, "entry already exists")
                )
            if table.size and len(table.entries) >= table.size:
                raise P4RuntimeError(
                    rpc_code.RESOURCE_EXHAUSTED, f"table {table.name} is full ({table.size})"
                )
            self._seq += 1
            seq = self._seq
        else:
            resolved = self._bind(table, te.action) if te.HasField("action") else None
            if existing is None:
                raise P4RuntimeError(rpc_code.NOT_FOUND, self._describe(table, key, "no entry"))
            if resolved is None:
                # An unset action leaves the entry's action as it is (spec §9.1.2).
                result = existing.result
                resolved = _Binding(
                    existing.message.action,
                    result.action,
                    result.params,
                    result.member_id,
                    result.group_id,
                )
            binding = resolved
            seq = existing.seq
        self._put(table, key, self._entry(table, key, te, binding, seq))

    def _write_member(self, kind: int, m: p4r.ActionProfileMember) -> None:
        profile = self._profile(m.action_profile_id)
        what = f"action profile {profile.name}: member {m.member_id}"
        if kind not in _UPDATE_TYPES:
            raise _invalid(f"{what}: update type {kind} is not INSERT/MODIFY/DELETE")
        if m.member_id == 0:
            raise _invalid(f"action profile {profile.name}: member_id must be non-zero")
        existing = profile.members.get(m.member_id)
        if kind == p4r.Update.DELETE:
            # Only the ids count for a delete (spec §9.2.1).
            if existing is None:
                raise P4RuntimeError(rpc_code.NOT_FOUND, f"{what} does not exist")
            if profile.member_refs.get(m.member_id):
                groups = sorted(
                    g for g, group in profile.groups.items() if m.member_id in group.member_ids
                )
                entries = profile.member_refs[m.member_id] - len(groups)
                raise P4RuntimeError(
                    rpc_code.FAILED_PRECONDITION,
                    f"{what} is still in groups {groups} and used by {entries} table entries",
                )
            self._remove_member(profile, m.member_id)
            return
        if not m.HasField("action"):
            raise _invalid(f"{what}: an action is required")
        ref = profile.action_refs.get(m.action.action_id)
        if ref is None:
            raise _invalid(
                f"{what}: action id {m.action.action_id} is not an action of the profile's tables"
            )
        action, scope = ref
        if scope == _SCOPE_DEFAULT_ONLY:
            raise P4RuntimeError(
                rpc_code.PERMISSION_DENIED,
                f"{what}: action {action.name} is @defaultonly, not for entries",
            )
        name, params, canonical = self._checked_params(action, m.action)
        if kind == p4r.Update.INSERT:
            if existing is not None:
                raise P4RuntimeError(rpc_code.ALREADY_EXISTS, f"{what} already exists")
            if profile.size and len(profile.members) >= profile.size:
                raise P4RuntimeError(
                    rpc_code.RESOURCE_EXHAUSTED,
                    f"action profile {profile.name} is full ({profile.size} members)",
                )
        elif existing is None:
            raise P4RuntimeError(rpc_code.NOT_FOUND, f"{what} does not exist")
        message = p4r.ActionProfileMember(
            action_profile_id=profile.id, member_id=m.member_id, action=canonical
        )
        self._put_member(profile, _Member(message, name, params))

    def _write_group(self, kind: int, g: p4r.ActionProfileGroup) -> None:
        profile = self._profile(g.action_profile_id)
        what = f"action profile {profile.name}: group {g.group_id}"
        if kind not in _UPDATE_TYPES:
            raise _invalid(f"{what}: update type {kind} is not INSERT/MODIFY/DELETE")
        if not profile.with_selector:
            raise _invalid(f"action profile {profile.name} has no selector, so no groups")
        if g.group_id == 0:
            raise _invalid(f"action profile {profile.name}: group_id must be non-zero")
        existing = profile.groups.get(g.group_id)
        if kind == p4r.Update.DELETE:
            # Only the ids count for a delete (spec §9.2.2).
            if existing is None:
                raise P4RuntimeError(rpc_code.NOT_FOUND, f"{what} does not exist")
            users = profile.group_refs.get(g.group_id, 0)
            if users:
                raise P4RuntimeError(
                    rpc_code.FAILED_PRECONDITION, f"{what} is still used by {users} table entries"
                )
            self._remove_group(profile, g.group_id)
            return
        group = self._group(profile, g, what)
        if kind == p4r.Update.INSERT:
            if existing is not None:
                raise P4RuntimeError(rpc_code.ALREADY_EXISTS, f"{what} already exists")
        else:
            if existing is None:
                raise P4RuntimeError(rpc_code.NOT_FOUND, f"{what} does not exist")
            if g.max_size != existing.message.max_size:
                raise _invalid(
                    f"{what}: max_size {g.max_size} differs from the inserted "
                    f"{existing.message.max_size}; it cannot be modified"
                )
        unit = "members" if profile.sum_of_members else "the sum of weights"
        for limit, of in ((g.max_size, "its max_size"), (profile.max_group_size, "max_group_size")):
            if limit and group.size > limit:
                raise P4RuntimeError(
                    rpc_code.RESOURCE_EXHAUSTED, f"{what}: {unit} {group.size} exceeds {of} {limit}"
                )
        usage = profile.group_usage - (existing.size if existing else 0) + group.size
        if profile.size and usage > profile.size:
            raise P4RuntimeError(
                rpc_code.RESOURCE_EXHAUSTED,
                f"{what}: the selector's groups would take {usage} of its size {profile.size}",
            )
        self._put_group(profile, group)

    @staticmethod
    def _group(profile: _Profile, g: p4r.ActionProfileGroup, what: str) -> _Group:
        """Validate a group's max_size and members (INSERT or MODIFY) into its stored form."""
        # Rules on setting max_size (spec §9.2.2.1).
        if g.max_size < 0:
            raise _invalid(f"{what}: negative max_size {g.max_size}")
        if profile.max_group_size and not 0 < g.max_size <= profile.max_group_size:
            raise _invalid(
                f"{what}: max_size {g.max_size} must be in 1..{profile.max_group_size}, "
                "the selector's max_group_size"
            )
        if profile.size and g.max_size > profile.size:
            raise P4RuntimeError(
                rpc_code.RESOURCE_EXHAUSTED,
                f"{what}: max_size {g.max_size} exceeds the selector's size {profile.size}",
            )
        weights: dict[int, int] = {}
        for member in g.members:
            mid, weight = member.member_id, member.weight
            if mid in weights:
                raise _invalid(f"{what}: member {mid} is listed twice; use its weight")
            if profile.weights_disallowed:
                if weight != 0:
                    raise _invalid(f"{what}: weights are disallowed, member {mid} has {weight}")
                weight = 1  # the switch weighs members itself; we weigh them equally
            elif weight < 1:
                raise _invalid(f"{what}: member {mid} has weight {weight}, it must be >= 1")
            elif profile.max_member_weight and weight > profile.max_member_weight:
                raise _invalid(
                    f"{what}: member {mid} weight {weight} exceeds max_member_weight "
                    f"{profile.max_member_weight}"
                )
            if mid not in profile.members:
                raise P4RuntimeError(rpc_code.NOT_FOUND, f"{what}: member {mid} does not exist")
            weights[mid] = weight
        member_ids = tuple(sorted(weights))
        bounds: list[int] = []
        total = 0
        for mid in member_ids:
            total += weights[mid]
            bounds.append(total)
        message = p4r.ActionProfileGroup(
            action_profile_id=profile.id,
            group_id=g.group_id,
            members=sorted(g.members, key=lambda m: m.member_id),
            max_size=g.max_size,
        )
        size = len(member_ids) if profile.sum_of_members else total
        return _Group(message, member_ids, tuple(bounds), size)

    def write_atomic(self, updates: Sequence[p4r.Update]) -> tuple[int, P4RuntimeError] | None:
        """Apply all updates or none: on the first failure undo the applied ones and return
        (index of the failed update, its error)."""
        journal: list[Callable[[], None]] = []
        self._journal = journal
        failure: tuple[int, P4RuntimeError] | None = None
        try:
            for index, update in enumerate(updates):
                try:
                    self.write(update)
                except P4RuntimeError as err:
                    failure = index, err
                    break
        except BaseException:
            self._undo(journal)
            raise
        finally:
            self._journal = None
        if failure is not None:
            self._undo(journal)
        return failure

    def _undo(self, journal: list[Callable[[], None]]) -> None:
        # Journaling off while undoing, else each step would journal its own reversal.
        self._journal = None
        for step in reversed(journal):
            step()

    def dataplane_insert(
        self, table: str, key: Mapping[str, int], action: str, params: Mapping[str, int]
    ) -> None:
        """Insert an entry from the data plane (PNA add_on_miss) into an exact-match table.

        The entry is stored exactly as a client INSERT would store it, so reads return it.
        """
        t = self._tables_by_name.get(table)
        if t is None:
            raise _invalid(f"no table named {table!r}")
        if t.strategy != "exact" or not t.fields:
            raise _invalid(f"table {table} is not an exact-match table")
        a = t.actions_by_name.get(action)
        if a is None:
            raise _invalid(f"table {table}: {action!r} is not one of its actions")
        extra = sorted(set(params) - {p.name for p in a.params})
        if extra:
            raise _invalid(f"table {table}: action {action} has no params {extra}")
        try:
            match = [
                p4r.FieldMatch(
                    field_id=f.id, exact=p4r.FieldMatch.Exact(value=_encode(key[f.name]))
                )
                for f in t.fields
            ]
            action_params = [
                p4r.Action.Param(param_id=p.id, value=_encode(params[p.name])) for p in a.params
            ]
        except KeyError as missing:
            raise _invalid(f"table {table}: no value for {missing}") from None
        except OverflowError:
            raise _invalid(f"table {table}: negative value in key or params") from None
        entry = p4r.TableEntry(
            table_id=t.id,
            match=match,
            action=p4r.TableAction(action=p4r.Action(action_id=a.id, params=action_params)),
        )
        self.write(p4r.Update(type=p4r.Update.INSERT, entity=p4r.Entity(table_entry=entry)))

    def dataplane_delete(self, table: str, key: Mapping[str, int]) -> None:
        """Remove a data-plane entry of an exact-match table (expiry of a learned flow)."""
        t = self._tables_by_name.get(table)
        if t is None or t.strategy != "exact":
            raise _invalid(f"no exact-match table named {table!r}")
        match = [
            p4r.FieldMatch(field_id=f.id, exact=p4r.FieldMatch.Exact(value=_encode(key[f.name])))
            for f in t.fields
        ]
        entry = p4r.TableEntry(table_id=t.id, match=match)
        self.write(p4r.Update(type=p4r.Update.DELETE, entity=p4r.Entity(table_entry=entry)))

    def clear(self) -> None:
        """Remove every entry, member and group, and reset default entries to their initial
        action."""
        for table in self._tables.values():
            table.entries.clear()
            table.plen_counts.clear()
            table.plens_desc = []
            table.sorted_entries = None
            table.default = table.initial_default
        for profile in self._profiles.values():
            profile.members.clear()
            profile.groups.clear()
            profile.member_refs.clear()
            profile.group_refs.clear()
            profile.group_usage = 0

    def carry_over(self, old: TableStore) -> list[str]:
        """Take the entries of every table whose shape `old` shares (RECONCILE_AND_COMMIT),
        and the members and groups of every action profile whose shape it shares.

        Tables that changed, or whose entries no longer fit the new size, start empty, and so
        do indirect tables whose action profile changed. Returns the names of the tables
        carried over.
        """
        for profile in self._profiles.values():
            former = old._profiles.get(profile.id)
            if former is None or former.shape != profile.shape:
                continue
            profile.members = dict(former.members)
            profile.groups = dict(former.groups)
            for group in profile.groups.values():
                self._count_group(profile, group, 1)
        kept: list[str] = []
        for table in self._tables.values():
            before = old._tables.get(table.id)
            if before is None or before.shape != table.shape:
                continue
            if table.size and len(before.entries) > table.size:
                continue
            implementation = table.profile
            if implementation is not None:
                former = old._profiles.get(implementation.id)
                if former is None or former.shape != implementation.shape:
                    continue
            table.entries = dict(before.entries)
            table.plen_counts = dict(before.plen_counts)
            table.plens_desc = list(before.plens_desc)
            table.sorted_entries = None
            if before.default is not before.initial_default:
                table.default = before.default
            for entry in table.entries.values():
                self._count_entry(table, entry.result, 1)
            kept.append(table.name)
        self._seq = max(self._seq, old._seq)
        return kept

    # ------------------------------------------------------------------------ reads

    def read(self, entity: p4r.Entity) -> list[p4r.Entity]:
        """Entities matching one read request, with the spec's wildcard rules (§9.1.6)."""
        which = entity.WhichOneof("entity")
        if which is None:
            raise _invalid("read request has no entity")
        if which == "table_entry":
            return self._read_entries(entity.table_entry)
        if which == "action_profile_member":
            return self._read_members(entity.action_profile_member)
        if which == "action_profile_group":
            return self._read_groups(entity.action_profile_group)
        raise P4RuntimeError(
            rpc_code.UNIMPLEMENTED, f"{which} is not implemented by the embedded target"
        )

    def _read_entries(self, te: p4r.TableEntry) -> list[p4r.Entity]:
        if te.table_id == 0:
            if te.match:
                raise _invalid("a match filter needs a table_id")
            tables: Iterable[_Table] = self._tables.values()
        else:
            tables = (self._table(te.table_id),)
        if te.HasField("counter_data") or te.HasField("meter_config"):
            raise P4RuntimeError(rpc_code.UNIMPLEMENTED, "direct resources are not implemented")
        if te.HasField("meter_counter_data"):
            raise P4RuntimeError(rpc_code.UNIMPLEMENTED, "direct resources are not implemented")
        want_hit_time = te.HasField("time_since_last_hit")
        if want_hit_time and te.is_default_action:
            raise _invalid("default entries have no idle timeout")
        action_id = 0
        reference: p4r.TableAction | None = None  # a member or group the entries point to
        if te.HasField("action"):
            kind = te.action.WhichOneof("type")
            if kind == "action":
                action_id = te.action.action.action_id
            elif kind in ("action_profile_member_id", "action_profile_group_id") and getattr(
                te.action, kind
            ):
                reference = te.action
        now = time.monotonic_ns()
        found: list[p4r.Entity] = []
        for table in tables:
            if want_hit_time and not table.idle_timeout and te.table_id:
                raise _invalid(f"table {table.name} does not support idle timeout")
            for entry in self._candidates(table, te):
                msg = entry.message
                if action_id and msg.action.action.action_id != action_id:
                    continue
                if reference is not None and msg.action != reference:
                    continue
                if te.priority and msg.priority != te.priority:
                    continue
                if te.controller_metadata and msg.controller_metadata != te.controller_metadata:
                    continue
                if te.metadata and msg.metadata != te.metadata:
                    continue
                out = p4r.Entity(table_entry=msg)
                if want_hit_time and table.idle_timeout:
                    out.table_entry.time_since_last_hit.elapsed_ns = now - entry.last_hit_ns
                found.append(out)
        return found

    def _read_members(self, m: p4r.ActionProfileMember) -> list[p4r.Entity]:
        """Members by (action_profile_id, member_id), 0 meaning all; in member_id order."""
        found: list[p4r.Entity] = []
        for profile in self._read_profiles(m.action_profile_id):
            if m.member_id:
                member = profile.members.get(m.member_id)
                chosen = [] if member is None else [member]
            else:
                chosen = [profile.members[i] for i in sorted(profile.members)]
            found.extend(p4r.Entity(action_profile_member=c.message) for c in chosen)
        return found

    def _read_groups(self, g: p4r.ActionProfileGroup) -> list[p4r.Entity]:
        """Groups by (action_profile_id, group_id), 0 meaning all; in group_id order."""
        found: list[p4r.Entity] = []
        for profile in self._read_profiles(g.action_profile_id):
            if g.group_id:
                group = profile.groups.get(g.group_id)
                chosen = [] if group is None else [group]
            else:
                chosen = [profile.groups[i] for i in sorted(profile.groups)]
            found.extend(p4r.Entity(action_profile_group=c.message) for c in chosen)
        return found

    def _read_profiles(self, profile_id: int) -> Iterable[_Profile]:
        return self._profiles.values() if profile_id == 0 else (self._profile(profile_id),)

    def entry_count(self, table: str) -> int:
        """Number of entries in a table, not counting its default entry."""
        return len(self._tables_by_name[table].entries)

    def member_count(self, profile: str) -> int:
        """Number of members in an action profile or selector."""
        return len(self._profiles_by_name[profile].members)

    def group_count(self, profile: str) -> int:
        """Number of groups in an action selector."""
        return len(self._profiles_by_name[profile].groups)

    def lookup(self, table: str, key: Mapping[str, int], selector_hash: int = 0) -> Lookup:
        """Match packet field values (by match field name) against a table's entries.

        Exact tables hit by dict, LPM tables take the longest prefix, tables with
        ternary/range/optional fields take the highest priority (then the longest total
        prefix, then the oldest entry); a miss returns the default entry's action.

        An entry pointing to a group selects one member: the group's members in member_id
        order, each repeated `weight` times, indexed by `selector_hash % total weight`.
        `selector_hash` stands in for the selector's hash of the packet's selector fields.
        """
        t = self._tables_by_name[table]
        try:
            values = [key[f.name] for f in t.fields]
        except KeyError as missing:
            raise KeyError(f"lookup in table {table}: no value for match field {missing}") from None
        entry = t.match(values)
        if entry is None:
            return t.default.result
        # Kept for every table: idle-timeout reads and data plane expiry both need it.
        entry.last_hit_ns = time.monotonic_ns()
        result = entry.result
        profile = t.profile
        if profile is None:
            return result
        member_id, group_id = result.member_id, result.group_id
        if group_id:
            group = profile.groups[group_id]
            if not group.member_ids:
                return attrs.evolve(t.default.result, group_id=group_id)
            member_id = group.choose(selector_hash)
        member = profile.members[member_id]
        return attrs.evolve(result, action=member.action, params=member.params, member_id=member_id)

    # ---------------------------------------------------------------------- helpers

    def _table(self, table_id: int) -> _Table:
        table = self._tables.get(table_id)
        if table is None:
            raise _invalid(f"unknown table id {table_id}")
        return table

    def _profile(self, profile_id: int) -> _Profile:
        profile = self._profiles.get(profile_id)
        if profile is None:
            raise _invalid(f"unknown action profile id {profile_id}")
        return profile

    def _candidates(self, table: _Table, te: p4r.TableEntry) -> Iterable[_Entry]:
        if te.is_default_action:
            if te.match:
                raise _invalid(f"table {table.name}: the default entry has no match")
            return (table.default,)
        if not te.match:
            return table.entries.values()
        slots, _ = self._key(table, te.match, te.priority, for_read=True)
        if not table.needs_priority or te.priority:
            entry = table.entries.get((slots, te.priority))
            return () if entry is None else (entry,)
        return [e for (s, _), e in table.entries.items() if s == slots]

    def _key(
        self,
        table: _Table,
        match: Iterable[p4r.FieldMatch],
        priority: int,
        *,
        for_read: bool = False,
    ) -> _Key:
        slots: list[object] = [None] * len(table.fields)
        for fm in match:
            field = table.fields_by_id.get(fm.field_id)
            if field is None:
                raise _invalid(f"table {table.name}: unknown match field id {fm.field_id}")
            if slots[field.index] is not None:
                raise _invalid(f"table {table.name}: match field {field.name} given twice")
            slots[field.index] = self._field_value(table, field, fm)
        for field in table.exact_fields:
            if slots[field.index] is None:
                raise _invalid(f"table {table.name}: exact match field {field.name} is missing")
        if not for_read:
            if table.needs_priority and priority <= 0:
                raise _invalid(
                    f"table {table.name} has ternary/range/optional fields: "
                    f"priority must be > 0, not {priority}"
                )
            if not table.needs_priority and priority != 0:
                raise _invalid(
                    f"table {table.name} has no ternary/range/optional fields: "
                    f"priority must be 0, not {priority}"
                )
        return tuple(slots), priority

    @staticmethod
    def _field_value(table: _Table, field: _Field, fm: p4r.FieldMatch) -> object:
        what = f"table {table.name}: match field {field.name}"
        given = fm.WhichOneof("field_match_type")
        if field.kind.startswith("other:"):
            raise P4RuntimeError(
                rpc_code.UNIMPLEMENTED, f"{what}: match kind {field.kind[6:]} is not implemented"
            )
        if given != field.kind:
            raise _invalid(f"{what} is {field.kind}, the request gives {given}")
        width = field.bitwidth
        if given == "exact":
            return _decode(fm.exact.value, width, what)
        if given == "optional":
            return _decode(fm.optional.value, width, what)
        if given == "lpm":
            plen = fm.lpm.prefix_len
            if plen == 0:
                raise _invalid(f"{what}: prefix_len 0 is a don't-care; omit the field")
            if not 0 < plen <= width:
                raise _invalid(f"{what}: prefix_len {plen} outside 1..{width}")
            value = _decode(fm.lpm.value, width, what)
            if value & ~_prefix_mask(plen, width):
                raise _invalid(f"{what}: value 0x{value:x} has bits set beyond prefix_len {plen}")
            return value, plen
        if given == "ternary":
            value = _decode(fm.ternary.value, width, what)
            mask = _decode(fm.ternary.mask, width, f"{what} mask")
            if mask == 0:
                raise _invalid(f"{what}: mask 0 is a don't-care; omit the field")
            if value & ~mask:
                raise _invalid(f"{what}: value 0x{value:x} has bits outside mask 0x{mask:x}")
            return value, mask
        low = _decode(fm.range.low, width, f"{what} low")
        high = _decode(fm.range.high, width, f"{what} high")
        if low > high:
            raise _invalid(f"{what}: range low {low} > high {high}")
        if low == 0 and high == field.all_ones:
            raise _invalid(f"{what}: the full range is a don't-care; omit the field")
        return low, high

    def _bind(self, table: _Table, ta: p4r.TableAction) -> _Binding:
        """Resolve an entry's action: a direct action, or an existing member or group."""
        which = ta.WhichOneof("type")
        if not table.indirect:
            name, params, canonical = self._action(table, ta, default=False)
            return _Binding(p4r.TableAction(action=canonical), name, params)
        if which == "action":
            raise _invalid(f"table {table.name} is indirect: a direct action is not allowed")
        if which == "action_profile_action_set":
            raise P4RuntimeError(
                rpc_code.UNIMPLEMENTED, "one-shot action selector programming is not implemented"
            )
        profile = table.profile
        if profile is None:
            raise P4RuntimeError(
                rpc_code.UNIMPLEMENTED,
                f"table {table.name}: its implementation is not an action profile",
            )
        if which == "action_profile_member_id":
            member_id = ta.action_profile_member_id
            if member_id == 0:
                raise _invalid(f"table {table.name}: action_profile_member_id must be non-zero")
            if member_id not in profile.members:
                raise P4RuntimeError(
                    rpc_code.NOT_FOUND,
                    f"table {table.name}: action profile {profile.name} has no member {member_id}",
                )
            return _Binding(
                p4r.TableAction(action_profile_member_id=member_id), member_id=member_id
            )
        if which == "action_profile_group_id":
            group_id = ta.action_profile_group_id
            if not profile.with_selector:
                raise _invalid(
                    f"table {table.name}: action profile {profile.name} has no selector, "
                    "so entries point to members only"
                )
            if group_id == 0:
                raise _invalid(f"table {table.name}: action_profile_group_id must be non-zero")
            if group_id not in profile.groups:
                raise P4RuntimeError(
                    rpc_code.NOT_FOUND,
                    f"table {table.name}: action selector {profile.name} has no group {group_id}",
                )
            return _Binding(p4r.TableAction(action_profile_group_id=group_id), group_id=group_id)
        raise _invalid(f"table {table.name}: the entry's action is empty")

    def _action(
        self, table: _Table, ta: p4r.TableAction, *, default: bool
    ) -> tuple[str, dict[str, int], p4r.Action]:
        """A direct table's action, checked against the table's actions and their scopes."""
        which = ta.WhichOneof("type")
        if which != "action":
            raise _invalid(f"table {table.name} is a direct table: {which} is not allowed")
        action_id = ta.action.action_id
        ref = table.action_refs.get(action_id)
        if ref is None:
            raise _invalid(f"table {table.name}: action id {action_id} is not one of its actions")
        action, scope = ref
        # A valid action in the wrong scope is PERMISSION_DENIED (spec §9.1.2).
        if default and scope == _SCOPE_TABLE_ONLY:
            raise P4RuntimeError(
                rpc_code.PERMISSION_DENIED,
                f"table {table.name}: action {action.name} is @tableonly, not a default action",
            )
        if not default and scope == _SCOPE_DEFAULT_ONLY:
            raise P4RuntimeError(
                rpc_code.PERMISSION_DENIED,
                f"table {table.name}: action {action.name} is @defaultonly, not for entries",
            )
        return self._checked_params(action, ta.action)

    @classmethod
    def _checked_params(
        cls, action: _Action, call: p4r.Action
    ) -> tuple[str, dict[str, int], p4r.Action]:
        given = {p.param_id: p.value for p in call.params}
        if len(given) != len(call.params):
            raise _invalid(f"action {action.name}: a param is given twice")
        return cls._params(action, given)

    @staticmethod
    def _params(
        action: _Action, given: Mapping[int, bytes]
    ) -> tuple[str, dict[str, int], p4r.Action]:
        known = {p.id for p in action.params}
        extra = sorted(set(given) - known)
        if extra:
            raise _invalid(f"action {action.name}: unknown param ids {extra}")
        values: dict[str, int] = {}
        canonical: list[p4r.Action.Param] = []
        for p in action.params:
            if p.id not in given:
                raise _invalid(f"action {action.name}: param {p.name} is missing")
            value = _decode(given[p.id], p.bitwidth, f"action {action.name}: param {p.name}")
            values[p.name] = value
            canonical.append(p4r.Action.Param(param_id=p.id, value=_encode(value)))
        return action.name, values, p4r.Action(action_id=action.id, params=canonical)

    @staticmethod
    def _check_entry_extras(table: _Table, te: p4r.TableEntry) -> None:
        if te.idle_timeout_ns and not table.idle_timeout:
            raise _invalid(f"table {table.name} does not support idle timeout")
        if te.idle_timeout_ns < 0:
            raise _invalid(f"table {table.name}: negative idle_timeout_ns")
        if (
            te.HasField("counter_data")
            or te.HasField("meter_config")
            or te.HasField("meter_counter_data")
        ):
            raise P4RuntimeError(rpc_code.UNIMPLEMENTED, "direct resources are not implemented")

    def _entry(
        self,
        table: _Table,
        key: _Key,
        te: p4r.TableEntry,
        binding: _Binding,
        seq: int,
    ) -> _Entry:
        slots, priority = key
        match: list[p4r.FieldMatch] = []
        readable: dict[str, object] = {}
        masked: list[tuple[int, int, int]] = []
        ranges: list[tuple[int, int, int]] = []
        prefix_bits = 0
        for field, slot in zip(table.fields, slots, strict=True):
            if slot is None:
                continue
            fid, kind = field.id, field.kind
            if kind in ("exact", "optional"):
                assert isinstance(slot, int)
                if kind == "exact":
                    exact = p4r.FieldMatch.Exact(value=_encode(slot))
                    match.append(p4r.FieldMatch(field_id=fid, exact=exact))
                else:
                    optional = p4r.FieldMatch.Optional(value=_encode(slot))
                    match.append(p4r.FieldMatch(field_id=fid, optional=optional))
                readable[field.name] = slot
                masked.append((field.index, field.all_ones, slot))
                continue
            assert isinstance(slot, tuple)
            a, b = slot
            if kind == "lpm":
                lpm = p4r.FieldMatch.LPM(value=_encode(a), prefix_len=b)
                match.append(p4r.FieldMatch(field_id=fid, lpm=lpm))
                readable[field.name] = _format_prefix(a, b, field.bitwidth)
                masked.append((field.index, _prefix_mask(b, field.bitwidth), a))
                prefix_bits += b
            elif kind == "ternary":
                ternary = p4r.FieldMatch.Ternary(value=_encode(a), mask=_encode(b))
                match.append(p4r.FieldMatch(field_id=fid, ternary=ternary))
                readable[field.name] = f"0x{a:x}/0x{b:x}"
                masked.append((field.index, b, a))
            else:
                span = p4r.FieldMatch.Range(low=_encode(a), high=_encode(b))
                match.append(p4r.FieldMatch(field_id=fid, range=span))
                readable[field.name] = f"{a}..{b}"
                ranges.append((field.index, a, b))
        message = p4r.TableEntry(
            table_id=table.id,
            match=match,
            action=binding.action,
            priority=priority,
            controller_metadata=te.controller_metadata,
            metadata=te.metadata,
            idle_timeout_ns=te.idle_timeout_ns,
        )
        result = Lookup(
            table.name,
            True,
            binding.name,
            binding.params,
            priority,
            readable,
            te.metadata,
            binding.member_id,
            binding.group_id,
        )
        return _Entry(
            message=message,
            result=result,
            seq=seq,
            order=(-priority, -prefix_bits, seq),
            masked=tuple(masked),
            ranges=tuple(ranges),
            last_hit_ns=time.monotonic_ns(),
        )

    def _write_default(self, table: _Table, kind: int, te: p4r.TableEntry) -> None:
        if kind != p4r.Update.MODIFY:
            raise _invalid(f"table {table.name}: the default entry can only be MODIFIED")
        if te.match or te.priority:
            raise _invalid(f"table {table.name}: the default entry has no match and priority 0")
        if te.idle_timeout_ns:
            raise _invalid(f"table {table.name}: default entries have no idle timeout")
        self._check_entry_extras(table, te)
        if table.const_default_action_id:
            raise P4RuntimeError(
                rpc_code.PERMISSION_DENIED, f"table {table.name}: the default action is const"
            )
        if table.indirect:
            # The spec fixes the default of indirect tables to a constant NoAction.
            raise P4RuntimeError(
                rpc_code.PERMISSION_DENIED, f"table {table.name}: indirect table default is const"
            )
        if not te.HasField("action"):
            # An unset action resets the default entry to what the P4 program declares.
            self._set_default(table, table.initial_default)
            return
        action, params, canonical = self._action(table, te.action, default=True)
        message = p4r.TableEntry(
            table_id=table.id,
            action=p4r.TableAction(action=canonical),
            is_default_action=True,
            controller_metadata=te.controller_metadata,
            metadata=te.metadata,
        )
        self._set_default(table, _Entry(message, Lookup(table.name, False, action, params)))

    def _initial_default(
        self,
        table: _Table,
        info: p4i.Table,
        from_model: tuple[str, dict[str, int]] | None,
        no_action: _Action | None,
    ) -> _Entry:
        chosen: tuple[str, dict[str, int], p4r.Action] | None = None
        if info.HasField("initial_default_action"):
            call = info.initial_default_action
            ref = table.action_refs.get(call.action_id)
            if ref is None:
                raise _invalid(f"table {table.name}: initial default action is not one of its")
            given = {arg.param_id: arg.value for arg in call.arguments}
            chosen = self._params(ref[0], given)
        if from_model is not None:
            name, values = from_model
            action = table.actions_by_name.get(name)
            if action is None:
                raise _invalid(f"table {table.name}: initial default {name!r} is not its action")
            unknown = sorted(set(values) - {p.name for p in action.params})
            if unknown:
                raise _invalid(
                    f"table {table.name}: initial default {name} has no params {unknown}"
                )
            try:
                encoded = {p.id: _encode(values[p.name]) for p in action.params if p.name in values}
            except OverflowError:
                raise _invalid(f"table {table.name}: negative initial default param") from None
            resolved = self._params(action, encoded)
            if chosen is not None and chosen[2] != resolved[2]:
                raise _invalid(
                    f"table {table.name}: P4Info initial default {chosen[0]} {chosen[1]} differs "
                    f"from the behavioural model's {name} {values}"
                )
            chosen = resolved
        const_id = table.const_default_action_id
        if chosen is None and const_id:
            const_action = table.action_refs[const_id][0]
            if const_action.params:
                raise _invalid(
                    f"table {table.name}: const default {const_action.name} takes params "
                    "that the P4Info does not give"
                )
            chosen = self._params(const_action, {})
        if chosen is None and no_action is not None:
            chosen = self._params(no_action, {})
        if chosen is None:
            return _Entry(
                p4r.TableEntry(table_id=table.id, is_default_action=True, is_const=table.indirect),
                Lookup(table.name, False, "", {}),
            )
        name, params, canonical = chosen
        if table.indirect and name != "NoAction":
            raise _invalid(
                f"table {table.name} is indirect: its default is a constant NoAction, not {name}"
            )
        if const_id and canonical.action_id != const_id:
            raise _invalid(f"table {table.name}: initial default {name} is not its const default")
        ref = table.action_refs.get(canonical.action_id)
        if ref is not None and ref[1] == _SCOPE_TABLE_ONLY:
            raise _invalid(f"table {table.name}: initial default {name} is @tableonly")
        message = p4r.TableEntry(
            table_id=table.id,
            action=p4r.TableAction(action=canonical),
            is_default_action=True,
            is_const=bool(const_id) or table.indirect,
        )
        return _Entry(message, Lookup(table.name, False, name, params))

    def _describe(self, table: _Table, key: _Key, what: str) -> str:
        slots, priority = key
        fields = ", ".join(
            f"{f.name}={s}" for f, s in zip(table.fields, slots, strict=True) if s is not None
        )
        suffix = f" priority {priority}" if priority else ""
        return f"table {table.name}: {what} for {{{fields}}}{suffix}"

    # Every change to entries, members and groups goes through these primitives so that
    # indexes, reference counts and the undo journal of an all-or-none batch stay right.
    # Undo steps are primitives too, so they restore the counts they change.

    def _put(self, table: _Table, key: _Key, entry: _Entry) -> None:
        old = table.entries.get(key)
        table.entries[key] = entry
        if old is None:
            table.index_added(key)
        else:
            table.sorted_entries = None
            self._count_entry(table, old.result, -1)
        self._count_entry(table, entry.result, 1)
        if self._journal is not None:
            if old is None:
                self._journal.append(lambda: self._remove(table, key))
            else:
                self._journal.append(lambda: self._put(table, key, old))

    def _remove(self, table: _Table, key: _Key) -> None:
        old = table.entries.pop(key)
        table.index_removed(key)
        self._count_entry(table, old.result, -1)
        if self._journal is not None:
            self._journal.append(lambda: self._put(table, key, old))

    def _set_default(self, table: _Table, entry: _Entry) -> None:
        old = table.default
        table.default = entry
        if self._journal is not None:
            self._journal.append(lambda: self._set_default(table, old))

    def _put_member(self, profile: _Profile, member: _Member) -> None:
        member_id = member.message.member_id
        old = profile.members.get(member_id)
        profile.members[member_id] = member
        if self._journal is not None:
            if old is None:
                self._journal.append(lambda: self._remove_member(profile, member_id))
            else:
                self._journal.append(lambda: self._put_member(profile, old))

    def _remove_member(self, profile: _Profile, member_id: int) -> None:
        old = profile.members.pop(member_id)
        if self._journal is not None:
            self._journal.append(lambda: self._put_member(profile, old))

    def _put_group(self, profile: _Profile, group: _Group) -> None:
        group_id = group.message.group_id
        old = profile.groups.get(group_id)
        if old is not None:
            self._count_group(profile, old, -1)
        profile.groups[group_id] = group
        self._count_group(profile, group, 1)
        if self._journal is not None:
            if old is None:
                self._journal.append(lambda: self._remove_group(profile, group_id))
            else:
                self._journal.append(lambda: self._put_group(profile, old))

    def _remove_group(self, profile: _Profile, group_id: int) -> None:
        old = profile.groups.pop(group_id)
        self._count_group(profile, old, -1)
        if self._journal is not None:
            self._journal.append(lambda: self._put_group(profile, old))

    @staticmethod
    def _count_entry(table: _Table, result: Lookup, step: int) -> None:
        profile = table.profile
        if profile is None:
            return
        if result.member_id:
            _bump(profile.member_refs, result.member_id, step)
        if result.group_id:
            _bump(profile.group_refs, result.group_id, step)

    @staticmethod
    def _count_group(profile: _Profile, group: _Group, step: int) -> None:
        for member_id in group.member_ids:
            _bump(profile.member_refs, member_id, step)
        profile.group_usage += step * group.size


def _bump(counts: dict[int, int], key: int, step: int) -> None:
    count = counts.get(key, 0) + step
    if count:
        counts[key] = count
    else:
        del counts[key]
