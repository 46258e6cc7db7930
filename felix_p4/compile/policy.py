"""Policy programs: an endpoint's tiers and profiles for one direction, compiled to the rule
entries of the pipeline's policy stages.

A program is a sequence of first-match blocks, one per pipeline stage: one per tier that has
(non-staged) policies for the direction, ending in the tier's default action, then the
profiles, split after any profile holding a Pass rule, the last block ending in deny.
Programs are identified by content, so endpoints with the same tiers and profiles share one;
a changed policy yields a new program that endpoints move to once it is fully installed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Hashable, Iterable, Mapping

import attrs

from felix_p4.compile.ipsets import Classifier, OutOfBits, SetRef
from felix_p4.model.endpoints import WorkloadEndpoint
from felix_p4.model.policy import (
    IcmpMatch,
    IpSet,
    Policy,
    PolicyKey,
    PortRange,
    Profile,
    Rule,
)
from felix_p4.model.values import IPNetwork, parse_net
from felix_p4.pipeline import POLICY_STAGES, RULE_ACTIONS, SET_SETS, STAGES
from felix_p4.pipeline.entries import Exact, Match, TableEntry, Ternary
from felix_p4.pipeline.fields import ternary128

# A policy program's direction, seen from the workload (Calico's outbound and inbound rules).
POLICY_DIRECTIONS = ("egress", "ingress")
PORT_PROTOS = (6, 17, 132, 136)  # protocols whose packets carry ports (the parser's list)
ICMP_PROTO = {4: 1, 6: 58}
MAX_PROGRAM_ID = 0xFFFF


class CannotCompile(Exception):
    """A program the pipeline cannot hold (too many blocks, no bits or ids left)."""


@attrs.frozen(slots=True, cache_hash=True)
class Block:
    rules: tuple[tuple[str, Rule], ...]  # (where, rule) in evaluation order, log rules dropped
    end: str  # "deny", "pass" (next stage) or "none" (no catch-all; the next block goes on)
    end_where: str


@attrs.frozen(slots=True, cache_hash=True)
class ProgramSpec:
    direction: str
    blocks: tuple[Block, ...]

    @property
    def digest(self) -> str:
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]


def program_spec(
    endpoint: WorkloadEndpoint,
    direction: str,
    policies: Mapping[PolicyKey, Policy],
    profiles: Mapping[str, Profile],
) -> ProgramSpec:
    """Felix's evaluation order for one endpoint and direction, as blocks."""
    inbound = direction == "ingress"
    if endpoint.state != "active":
        return ProgramSpec(direction, (Block((), "deny", "endpoint not active: deny"),))
    blocks: list[Block] = []
    for tier in endpoint.tiers:
        keys = [k for k in (tier.ingress_policies if inbound else tier.egress_policies)]
        keys = [k for k in keys if not k.staged]
        if not keys:
            continue
        rules: list[tuple[str, Rule]] = []
        for key in keys:
            policy = policies.get(key)
            if policy is None:
                continue  # not (yet) sent: no rules, the tier's default still applies
            for index, rule in enumerate(policy.inbound if inbound else policy.outbound):
                if rule.action != "log":
                    rules.append((f"tier {tier.name} | {key} | {direction} rule {index}", rule))
        end = "pass" if tier.default_action == "Pass" else "deny"
        blocks.append(Block(tuple(rules), end, f"tier {tier.name} | end of tier ({end})"))
    current: list[tuple[str, Rule]] = []
    for profile_id in endpoint.profile_ids:
        profile = profiles.get(profile_id)
        if profile is None:
            continue
        has_pass = False
        for index, rule in enumerate(profile.inbound if inbound else profile.outbound):
            if rule.action != "log":
                current.append((f"profile {profile_id} | {direction} rule {index}", rule))
                has_pass = has_pass or rule.action == "pass"
        if has_pass:
            # Pass in a profile moves on to the next profile: end the block here.
            blocks.append(Block(tuple(current), "none", ""))
            current = []
    blocks.append(Block(tuple(current), "deny", "profiles | no profile allowed (deny)"))
    return ProgramSpec(direction, tuple(blocks))


# --- rule expansion --------------------------------------------------------------------


def _ranges(values: set[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in sorted(values):
        if out and out[-1][1] == v - 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


def _subtract(
    ranges: Iterable[tuple[int, int]], holes: Iterable[PortRange]
) -> list[tuple[int, int]]:
    """The parts of `ranges` outside every hole."""
    result = list(ranges)
    for hole in holes:
        nxt = []
        for lo, hi in result:
            if hole.last < lo or hole.first > hi:
                nxt.append((lo, hi))
                continue
            if lo < hole.first:
                nxt.append((lo, hole.first - 1))
            if hole.last < hi:
                nxt.append((hole.last + 1, hi))
        result = nxt
    return result


def _icmp_rects(
    icmp: IcmpMatch | None, not_icmp: IcmpMatch | None
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    full = (0, 255)
    rects = [(full, full)]
    if icmp is not None:
        code = (icmp.code, icmp.code) if icmp.code is not None else full
        rects = [((icmp.type, icmp.type), code)]
    if not_icmp is not None:
        t = not_icmp.type
        allowed = [((0, t - 1), full), ((t + 1, 255), full)]
        if not_icmp.code is not None:
            c = not_icmp.code
            allowed += [((t, t), (0, c - 1)), ((t, t), (c + 1, 255))]
        rects = [
            (
                (max(a[0][0], b[0][0]), min(a[0][1], b[0][1])),
                (max(a[1][0], b[1][0]), min(a[1][1], b[1][1])),
            )
            for a in rects
            for b in allowed
        ]
        rects = [r for r in rects if r[0][0] <= r[0][1] and r[1][0] <= r[1][1]]
    return rects


@attrs.frozen(slots=True)
class _Side:
    """One end (src or dst) of an expanded alternative: bits that must be 1, bits that must
    be 0, the port ranges, and whether the port criterion needs a port-carrying protocol."""

    ones: int
    zeros: int
    ports: tuple[int, int]
    needs_ports: bool


def _side_alternatives(
    ones: int,
    zeros: int,
    ports: tuple[PortRange, ...],
    not_ports: tuple[PortRange, ...],
    named_bits: list[int],
) -> list[_Side]:
    everything = [(0, 0xFFFF)]
    if ports or named_bits:
        alts = [
            _Side(ones, zeros, r, True)
            for r in _subtract(((p.first, p.last) for p in ports), not_ports)
        ]
        for bit in named_bits:
            for r in _subtract(everything, not_ports):
                alts.append(_Side(ones | (1 << bit), zeros, r, False))
        return alts
    return [_Side(ones, zeros, r, False) for r in _subtract(everything, not_ports)]


# The rule key's fields a rule matches as ranges, in the order _prefixes expands them.
_RANGED = ("proto", "src_port", "dst_port", "icmp_type", "icmp_code")


def _prefixes(lo: int, hi: int, width: int) -> list[Ternary | None]:
    """The ternary value/masks that together match exactly lo..hi (None: everything).

    P4-DPDK has no range match: a range is written as the fewest aligned power-of-two blocks
    covering it (a 16-bit range takes at most 30)."""
    full = (1 << width) - 1
    if (lo, hi) == (0, full):
        return [None]
    out: list[Ternary | None] = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << width  # the largest block aligned at lo
        while size > hi - lo + 1:
            size >>= 1
        out.append(Ternary(lo, full ^ (size - 1)))
        lo += size
    return out


class RuleExpander:
    """Turns one Calico rule into ternary/range match alternatives over the stage key."""

    def __init__(self, classifier: Classifier, set_of: Callable[[str], IpSet | None]) -> None:
        self.classifier = classifier
        self.set_of = set_of

    def _bit(self, side: str, ref: SetRef, refs: set[tuple[str, SetRef]]) -> int:
        refs.add((side, ref))
        kind, ident = ref
        if kind == "nets":
            members: Iterable = ident  # type: ignore[assignment]
        else:
            ipset = self.set_of(str(ident))
            members = ipset.members if ipset is not None else ()
        return self.classifier.reference(side, ref, members)

    def expand(self, rule: Rule, refs: set[tuple[str, SetRef]]) -> list[dict[str, Match]]:
        families = [rule.ip_version] if rule.ip_version else [4, 6]
        for nets in (rule.src_nets, rule.not_src_nets, rule.dst_nets, rule.not_dst_nets):
            if nets:
                # A net list with no net of a family makes the rule skip that family.
                families = [f for f in families if any(n.version == f for n in nets)]
        if not families:
            return []

        def bits(side: str, ids: Iterable[str]) -> int:
            out = 0
            for set_id in ids:
                out |= 1 << self._bit(side, ("ipset", set_id), refs)
            return out

        def nets_bit(side: str, nets: tuple[IPNetwork, ...]) -> int:
            return 1 << self._bit(side, ("nets", frozenset(nets)), refs) if nets else 0

        src_ones = bits("src", rule.src_ip_sets) | nets_bit("src", rule.src_nets)
        src_zeros = (
            bits("src", rule.not_src_ip_sets)
            | nets_bit("src", rule.not_src_nets)
            | bits("src", rule.not_src_named_port_sets)
        )
        dst_ones = (
            bits("dst", rule.dst_ip_sets)
            | nets_bit("dst", rule.dst_nets)
            | bits("dst", rule.dst_ip_port_sets)
        )
        dst_zeros = (
            bits("dst", rule.not_dst_ip_sets)
            | nets_bit("dst", rule.not_dst_nets)
            | bits("dst", rule.not_dst_named_port_sets)
        )
        src_named = [self._bit("src", ("ipset", s), refs) for s in rule.src_named_port_sets]
        dst_named = [self._bit("dst", ("ipset", s), refs) for s in rule.dst_named_port_sets]
        src_alts = _side_alternatives(
            src_ones, src_zeros, rule.src_ports, rule.not_src_ports, src_named
        )
        dst_alts = _side_alternatives(
            dst_ones, dst_zeros, rule.dst_ports, rule.not_dst_ports, dst_named
        )

        icmp = rule.icmp is not None or rule.not_icmp is not None
        # Families matter to the entry only for ICMP (its protocol differs) or when restricted.
        versions: list[int | None] = list(families) if icmp or len(families) == 1 else [None]
        width = self.classifier.width
        out: list[dict[str, Match]] = []
        for version in versions:
            protos = set(range(256)) if rule.protocol is None else {rule.protocol}
            protos.discard(rule.not_protocol if rule.not_protocol is not None else -1)
            if icmp:
                assert version is not None
                protos &= {ICMP_PROTO[version]}
            for src in src_alts:
                for dst in dst_alts:
                    if (src.ones & src.zeros) or (dst.ones & dst.zeros):
                        continue  # a set required both in and out: never matches
                    alt_protos = (
                        protos & set(PORT_PROTOS) if src.needs_ports or dst.needs_ports else protos
                    )
                    sets = {
                        **ternary128("src_sets", src.ones, src.ones | src.zeros),
                        **ternary128("dst_sets", dst.ones, dst.ones | dst.zeros),
                    }
                    if version:
                        sets["ip_version"] = Ternary(version, 0xFF)
                    for plo, phi in _ranges(alt_protos):
                        for (tlo, thi), (clo, chi) in _icmp_rects(rule.icmp, rule.not_icmp):
                            for fields in itertools.product(
                                _prefixes(plo, phi, 8),
                                _prefixes(*src.ports, 16),
                                _prefixes(*dst.ports, 16),
                                _prefixes(tlo, thi, 8),
                                _prefixes(clo, chi, 8),
                            ):
                                match: dict[str, Match] = dict(sets)
                                for name, value in zip(_RANGED, fields, strict=True):
                                    if value is not None:
                                        match[name] = value
                                out.append(match)
        assert width > 0
        return out


# --- programs ------------------------------------------------------------------------------


@attrs.define(eq=False)  # identity: programs are tracked in sets by object
class Program:
    spec: ProgramSpec
    id: int
    entries: list[TableEntry]
    refs: set[tuple[str, SetRef]]
    registered: bool = False  # its entries have been handed to the sync engine

    @property
    def owner(self) -> Hashable:
        return ("program", self.spec.direction, self.id)


def ref_text(ref: SetRef) -> str:
    kind, ident = ref
    if kind == "nets":
        return "nets:" + ",".join(sorted(str(n) for n in ident))  # type: ignore[attr-defined]
    return f"{kind}:{ident}"


def ref_from_text(text: str) -> SetRef:
    kind, _, ident = text.partition(":")
    if kind == "nets":
        return ("nets", frozenset(parse_net(n, "recovered nets") for n in ident.split(",") if n))
    return (kind, ident)


_STAGE_DIRECTION = {table.name: d for d, tables in STAGES.items() for table in tables}
# Membership bits per direction: the bitmap parameters of the classification actions.
SET_BITS = sum(p.bits for p in SET_SETS["src"].params)


class PolicyCompiler:
    """Allocates program ids and set bits, compiles programs, and tracks who uses them."""

    def __init__(self, classifier: Classifier, stages: int = POLICY_STAGES) -> None:
        self.width = classifier.width
        self.stages = stages
        self.classifier = classifier
        self.programs: dict[ProgramSpec, Program] = {}
        self._ids: dict[str, set[int]] = {d: set() for d in POLICY_DIRECTIONS}
        self._recovered: dict[tuple[str, str], int] = {}
        self._set_refs: dict[tuple[str, SetRef], int] = {}

    def stage_table(self, direction: str, stage: int) -> str:
        return STAGES[direction][stage].name

    def recover(self, installed: Iterable[TableEntry]) -> None:
        """Adopt program ids and set bits found in installed anchors (see `_anchor`)."""
        for entry in installed:
            if not entry.metadata or entry.table not in _STAGE_DIRECTION or entry.priority != 1:
                continue
            try:
                info = json.loads(entry.metadata)
            except ValueError:
                continue
            if "program" not in info:
                continue
            direction = _STAGE_DIRECTION[entry.table]
            program_id = dict(entry.match)["program"]
            assert isinstance(program_id, Exact)
            self._recovered[(direction, info["program"])] = program_id.value
            for side, bits in info.get("bits", {}).items():
                for bit, text in bits.items():
                    self.classifier.dirs[side].allocator.assign(ref_from_text(text), int(bit))

    def _allocate_id(self, spec: ProgramSpec) -> int:
        used = self._ids[spec.direction]
        recovered = self._recovered.pop((spec.direction, spec.digest), None)
        if recovered is not None and recovered not in used:
            used.add(recovered)
            return recovered
        reserved = {i for (d, _), i in self._recovered.items() if d == spec.direction}
        for candidate in range(1, MAX_PROGRAM_ID + 1):
            if candidate not in used and candidate not in reserved:
                used.add(candidate)
                return candidate
        raise CannotCompile(f"all {MAX_PROGRAM_ID} {spec.direction} program ids are in use")

    def ensure(self, spec: ProgramSpec, set_of: Callable[[str], IpSet | None]) -> Program:
        program = self.programs.get(spec)
        if program is not None:
            return program
        if len(spec.blocks) > self.stages:
            raise CannotCompile(
                f"{spec.direction} policy needs {len(spec.blocks)} stages; the pipeline has "
                f"{self.stages} (tiers with policies plus profile blocks)"
            )
        refs: set[tuple[str, SetRef]] = set()
        expander = RuleExpander(self.classifier, set_of)
        program_id = self._allocate_id(spec)
        try:
            entries = self._entries(spec, program_id, expander, refs)
        except OutOfBits as exc:
            # Undo what this attempt took: its id and the set bits no other program holds.
            self._ids[spec.direction].discard(program_id)
            for side_ref in refs - self._set_refs.keys():
                self.classifier.release(*side_ref)
            raise CannotCompile(str(exc)) from None
        for ref in refs:
            self._set_refs[ref] = self._set_refs.get(ref, 0) + 1
        program = Program(spec, program_id, entries, refs)
        self.programs[spec] = program
        return program

    def _entries(
        self,
        spec: ProgramSpec,
        program_id: int,
        expander: RuleExpander,
        refs: set[tuple[str, SetRef]],
    ) -> list[TableEntry]:
        entries: list[TableEntry] = []
        last = len(spec.blocks) - 1
        for index, block in enumerate(spec.blocks):
            table = self.stage_table(spec.direction, index)
            expanded: list[tuple[str, str, dict[str, Match]]] = []
            seen: set[tuple[tuple[str, Match], ...]] = set()
            for where, rule in block.rules:
                for match in expander.expand(rule, refs):
                    # A later entry matching exactly what an earlier one does can never be
                    # hit (first match wins): leave it out.
                    identity = tuple(sorted(match.items()))
                    if identity in seen:
                        continue
                    seen.add(identity)
                    expanded.append((where, rule.action, match))
            priority = len(expanded) + 2
            for where, action, match in expanded:
                priority -= 1
                entries.append(
                    TableEntry.make(
                        table,
                        {"program": Exact(program_id), **match},
                        RULE_ACTIONS[action].name,
                        priority=priority,
                        metadata=json.dumps({"where": where}).encode(),
                    )
                )
            if block.end != "none":
                info: dict[str, object] = {"where": block.end_where}
                if index == last:
                    info.update(self._anchor(spec, refs))
                entries.append(
                    TableEntry.make(
                        table,
                        {"program": Exact(program_id)},
                        RULE_ACTIONS[block.end].name,
                        priority=1,
                        metadata=json.dumps(info, sort_keys=True).encode(),
                    )
                )
        return entries

    def _anchor(self, spec: ProgramSpec, refs: set[tuple[str, SetRef]]) -> dict[str, object]:
        """What a restarted driver needs to reuse this program id and its set bits."""
        bits: dict[str, dict[str, str]] = {"src": {}, "dst": {}}
        for side, ref in sorted(refs, key=lambda r: (r[0], ref_text(r[1]))):
            bit = self.classifier.bit(side, ref)
            if bit is not None:
                bits[side][str(bit)] = ref_text(ref)
        return {"program": spec.digest, "bits": bits}

    def release(self, program: Program) -> None:
        del self.programs[program.spec]
        self._ids[program.spec.direction].discard(program.id)
        self._release_refs(program.refs)

    def _release_refs(self, refs: Iterable[tuple[str, SetRef]]) -> None:
        for side_ref in refs:
            count = self._set_refs.get(side_ref, 0) - 1
            if count > 0:
                self._set_refs[side_ref] = count
                continue
            self._set_refs.pop(side_ref, None)
            self.classifier.release(*side_ref)

    def drop_recovered(self) -> None:
        """After the first apply: ids and bits read back but not reused are free again."""
        self._recovered.clear()
        for side in ("src", "dst"):
            allocator = self.classifier.dirs[side].allocator
            for ref in list(allocator.bits):
                if (side, ref) not in self._set_refs:
                    allocator.release(ref)
