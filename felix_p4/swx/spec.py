"""A P4-DPDK (SWX) pipeline spec, as p4c-dpdk writes it: structs, headers, tables, learners, and
the limits SWX puts on them, checked without DPDK.

SWX instruction operands hold a field's byte offset in 8 bits, so a field starting past byte
255 of its struct aliases an earlier one (neither p4c nor DPDK checks); `hash` needs its
destination within the metadata's first 32 bytes; field widths are whole bytes.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import attrs

MAX_OPERAND_OFFSET = 255  # bytes: the largest offset an 8-bit operand can hold
MAX_HASH_DST_OFFSET = 31  # bytes: hash truncates its destination's bit offset to 8 bits


class SpecError(Exception):
    """A spec that cannot be parsed, or that breaks a limit of SWX; the message says which."""


@attrs.frozen(slots=True)
class Field:
    name: str
    bits: int
    offset: int  # bytes from the start of its struct


@attrs.frozen(slots=True)
class Struct:
    name: str
    fields: tuple[Field, ...]

    @property
    def size(self) -> int:
        return sum(f.bits for f in self.fields) // 8

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"struct {self.name} has no field {name!r}")


@attrs.frozen(slots=True)
class MatchField:
    operand: str  # m.<field> or h.<header>.<field>
    kind: str  # exact | wildcard | lpm (learners: exact)


@attrs.frozen(slots=True)
class Action:
    name: str
    args: str  # the struct type of its arguments, or "" for none
    body: tuple[str, ...]


@attrs.frozen(slots=True)
class Table:
    name: str
    key: tuple[MatchField, ...]
    actions: tuple[str, ...]
    default_action: str
    size: int
    learner: bool = False
    timeouts: tuple[int, ...] = ()
    default_args: tuple[tuple[str, int], ...] = ()  # the default action's arguments


@attrs.frozen(slots=True)
class Spec:
    structs: dict[str, Struct]
    headers: dict[str, str]  # header instance -> struct type
    metadata: str  # the metadata struct type
    actions: dict[str, Action]
    tables: dict[str, Table]
    instructions: tuple[str, ...]  # the apply block

    @property
    def metadata_struct(self) -> Struct:
        return self.structs[self.metadata]

    def struct_of(self, operand: str) -> tuple[Struct, Field]:
        """The struct and field an operand (m.x, h.hdr.x, t.x of an action) names."""
        if operand.startswith("m."):
            struct = self.metadata_struct
            return struct, struct.field(operand[2:])
        if operand.startswith("h."):
            header, _, name = operand[2:].partition(".")
            struct = self.structs[self.headers[header]]
            return struct, struct.field(name)
        raise KeyError(f"{operand!r} is not a header or metadata field")

    def is_wildcard(self, table: Table) -> bool:
        """SWX stores this table in a wildcard (ACL) table, not a hash table: a key field is not
        exact, or the exact fields leave gaps (rte_swx_pipeline.c, table_match_type_resolve)."""
        if table.learner or not table.key:
            return False
        if any(f.kind != "exact" for f in table.key):
            return True
        spans = sorted(
            (field.offset, field.offset + field.bits // 8)
            for _, field in (self.struct_of(f.operand) for f in table.key)
        )
        return any(end != start for (_, end), (start, _) in itertools.pairwise(spans))

    def key_bytes(self, table: Table) -> int:
        return sum(self.struct_of(f.operand)[1].bits for f in table.key) // 8

    def action_data_bytes(self, table: Table) -> int:
        sizes = [0]
        for name in table.actions:
            action = self.actions.get(name)
            if action is not None and action.args:
                sizes.append(self.structs[action.args].size)
        return max(sizes)

    def learner_bytes(self, table: Table) -> int:
        """Memory SWX allocates for a learner (rte_swx_table_learner.c): one bucket per key
        slot rounded to a power of two, each bucket a 64-byte header, 4 keys and 4 action
        data slots (8 bytes of state plus the data), rounded to a power of two."""
        key = _pow2(self.key_bytes(table))
        data = _pow2(8 + self.action_data_bytes(table))
        return _pow2(table.size) * _pow2(64 + 4 * key + 4 * data)

    def violations(self) -> list[str]:
        """Every way this spec breaks SWX's operand limits (empty when it runs as compiled)."""
        out = []
        for struct in self.structs.values():
            for f in struct.fields:
                if f.offset > MAX_OPERAND_OFFSET:
                    out.append(
                        f"struct {struct.name}: field {f.name} starts at byte {f.offset}, "
                        f"past the {MAX_OPERAND_OFFSET} an SWX operand can address"
                    )
                if f.bits % 8:
                    out.append(f"struct {struct.name}: field {f.name} is {f.bits} bits")
        for line in self.instructions + tuple(i for a in self.actions.values() for i in a.body):
            words = line.split()
            if words and words[0] == "hash" and len(words) > 2:
                _, field = self.struct_of(words[2])
                if field.offset > MAX_HASH_DST_OFFSET:
                    out.append(
                        f"hash destination {words[2]} at byte {field.offset}: SWX's hash "
                        f"needs it within the first {MAX_HASH_DST_OFFSET + 1} bytes"
                    )
        return out


_BLOCK = re.compile(r"^(struct|action|table|learner|selector|regarray|metarray)\s+(\S+)")


def _blocks(lines: list[str]) -> Iterator[tuple[str, str, list[str], str]]:
    """(kind, name, body lines, header line) of every brace block; apply as ("apply", "")."""
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith(("//", ";")):
            continue
        head = line
        if line == "apply {" or line.startswith("apply"):
            kind, name = "apply", ""
        else:
            m = _BLOCK.match(line)
            if not m:
                continue
            kind, name = m.group(1), m.group(2)
        if not head.endswith("{"):
            continue
        depth = 1
        body: list[str] = []
        while i < len(lines) and depth:
            text = lines[i].strip()
            i += 1
            depth += text.count("{") - text.count("}")
            if depth > 0:
                body.append(text)
        yield kind, name, body, head


def parse(text: str) -> Spec:
    lines = text.splitlines()
    structs: dict[str, Struct] = {}
    headers: dict[str, str] = {}
    metadata = ""
    actions: dict[str, Action] = {}
    tables: dict[str, Table] = {}
    instructions: tuple[str, ...] = ()
    for line in lines:
        words = line.split()
        if len(words) == 4 and words[0] == "header" and words[2] == "instanceof":
            headers[words[1]] = words[3]
        elif len(words) == 3 and words[0] == "metadata" and words[1] == "instanceof":
            metadata = words[2]
    for kind, name, body, head in _blocks(lines):
        if kind == "struct":
            fields = []
            offset = 0
            for entry in body:
                m = re.match(r"bit<(\d+)>\s+(\S+)", entry)
                if not m:
                    continue
                bits = int(m.group(1))
                fields.append(Field(m.group(2), bits, offset // 8))
                offset += bits
            structs[name] = Struct(name, tuple(fields))
        elif kind == "action":
            m = re.search(r"args\s+(?:instanceof\s+)?(\S+)", head)
            args = m.group(1) if m and m.group(1) != "none" else ""
            actions[name] = Action(name, args, tuple(b for b in body if b))
        elif kind in ("table", "learner"):
            tables[name] = _table(name, body, kind == "learner")
        elif kind == "apply":
            instructions = tuple(b for b in body if b)
    if not metadata:
        raise SpecError("the spec declares no metadata")
    return Spec(structs, headers, metadata, actions, tables, instructions)


def _table(name: str, body: list[str], learner: bool) -> Table:
    key: list[MatchField] = []
    actions: list[str] = []
    timeouts: list[int] = []
    default = ""
    default_args: list[tuple[str, int]] = []
    size = 0
    section = ""
    for text in body:
        if text in ("key {", "actions {", "timeout {"):
            section = text.split()[0]
            continue
        if text.startswith("}"):
            section = ""
            continue
        words = text.split()
        if not words:
            continue
        if section == "key":
            key.append(MatchField(words[0], words[1] if len(words) > 1 else "exact"))
        elif section == "actions":
            actions.append(words[0])
        elif section == "timeout":
            timeouts.append(int(words[0], 0))
        elif words[0] == "default_action":
            default = words[1]
            # default_action <action> args none | args <name> <value> ... [const]
            rest = words[3:] if len(words) > 2 and words[2] == "args" else []
            if rest and rest[-1] == "const":
                rest = rest[:-1]
            if rest != ["none"]:
                default_args = [(rest[i], int(rest[i + 1], 0)) for i in range(0, len(rest) - 1, 2)]
        elif words[0] == "size":
            size = int(words[1], 0)
    return Table(
        name,
        tuple(key),
        tuple(actions),
        default,
        size,
        learner,
        tuple(timeouts),
        tuple(default_args),
    )


def _pow2(value: int) -> int:
    return 1 << max(0, value - 1).bit_length()


def load(path: Path) -> Spec:
    return parse(path.read_text())
