"""Wildcard tables on the P4-DPDK engine use felix_wildcard (felix_swx.c): it holds rule sets
DPDK's own wildcard table type cannot build, and a packet gets the matching entry with the
lowest priority number and that entry's action data. Skips, with the reason, without DPDK."""

import random
import struct
from pathlib import Path

import attrs
import pytest

from felix_p4.swx import SwxError, SwxPipeline, availability

UNAVAILABLE = availability()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))

SPEC = Path(__file__).resolve().parents[2] / "docs" / "upstream" / "wildcard-tries.spec"
MEMORY_MB = 256
# Policy-like entries, 50 per program: DPDK's own type builds 1,000 of them, not 1,500 (out of
# ACL tries); felix_wildcard builds 1,500 in about 2 s.
N_ENTRIES = 1500
PER_PROGRAM = 50
MISS = 0xFFFFFFFF
KEY = struct.Struct("!HBQQHHBI")  # the spec's key_h: program .. icmp_type, then matched
FIELDS = (8, 64, 64, 16, 16, 8)  # bits of the ternary key fields, in spec order


@attrs.frozen(slots=True)
class Rule:
    """One entry: an exact program, (value, mask) per ternary field, priority and id."""

    program: int
    ternary: tuple[tuple[int, int], ...]
    priority: int
    id: int

    def line(self) -> str:
        fields = " ".join(f"{v:#x}/{m:#x}" for v, m in self.ternary)
        return f"match {self.program} {fields} priority {self.priority} action rule id {self.id}"

    def matches(self, program: int, values: tuple[int, ...]) -> bool:
        return program == self.program and all(
            x & m == v for x, (v, m) in zip(values, self.ternary, strict=True)
        )


def _bits(rng: random.Random, n: int) -> int:
    return sum(1 << rng.randrange(64) for _ in range(n)) if n else 0


def policy_rules(n: int, seed: int = 7) -> list[Rule]:
    """n entries as the driver writes policy stages: a program per PER_PROGRAM entries; IP-set
    membership as set bits, port ranges as prefixes, some protocols and ICMP types; every
    priority distinct, in an order unrelated to the entries'."""
    rng = random.Random(seed)
    priorities = rng.sample(range(1, 4 * n), n)
    rules: list[Rule] = []
    seen = set()
    while len(rules) < n:
        i = len(rules)
        proto = rng.choice([(6, 0xFF), (17, 0xFF), (1, 0xFF), (0, 0)])
        sets = []
        for chance in (0.7, 0.5):
            bits = _bits(rng, rng.randint(1, 3)) if rng.random() < chance else 0
            sets.append((bits, bits))
        ports = []
        for chance in (0.1, 0.6):
            width = rng.randint(0, 8) if rng.random() < chance else 16
            mask = (0xFFFF << width) & 0xFFFF
            ports.append((rng.randrange(1, 0x10000) & mask, mask))
        icmp = (rng.randrange(256), 0xFF) if proto[0] == 1 and rng.random() < 0.5 else (0, 0)
        ternary = (proto, *sets, *ports, icmp)
        # SWX knows an entry by its key: a second entry with the same one would replace it.
        if (i // PER_PROGRAM, ternary) not in seen:
            seen.add((i // PER_PROGRAM, ternary))
            rules.append(Rule(i // PER_PROGRAM, ternary, priorities[i], i))
    return rules


def key_for(rule: Rule, rng: random.Random) -> tuple[int, tuple[int, ...]]:
    """A key the rule matches, its don't-care bits random."""
    values = tuple(
        v | (rng.getrandbits(bits) & ~m) for (v, m), bits in zip(rule.ternary, FIELDS, strict=True)
    )
    return rule.program, values


def expected(rules: list[Rule], program: int, values: tuple[int, ...]) -> int:
    hits = [r for r in rules if r.matches(program, values)]
    return min(hits, key=lambda r: r.priority).id if hits else MISS


def matched(p: SwxPipeline, program: int, values: tuple[int, ...]) -> int:
    [(_, out)] = p.process(0, KEY.pack(program, *values, 0))
    return KEY.unpack(out)[-1]


def program_rules(p: SwxPipeline, rules: list[Rule]) -> None:
    for rule in rules:
        p.table_add("policy", rule.line())
    p.commit()


def test_dpdks_own_wildcard_type_cannot_build_the_rule_set():
    """The premise of the test below: without felix_wildcard, these entries do not fit."""
    with SwxPipeline.load(SPEC, 1, MEMORY_MB, wildcard_type=None) as p:
        with pytest.raises(SwxError, match="ENODEV"):
            program_rules(p, policy_rules(N_ENTRIES))


def test_a_rule_set_beyond_dpdks_wildcard_type_commits_and_matches_by_priority():
    rules = policy_rules(N_ENTRIES)
    rng = random.Random(3)
    with SwxPipeline.load(SPEC, 1, MEMORY_MB) as p:
        program_rules(p, rules)

        for rule in rng.sample(rules, 300):
            program, values = key_for(rule, rng)
            assert matched(p, program, values) == expected(rules, program, values)
        # Programs that have no entries, and keys of a program that its entries leave out.
        assert matched(p, N_ENTRIES // PER_PROGRAM + 1, (6, 0, 0, 0, 80, 0)) == MISS
        assert matched(p, 0, (0xFE, 0, 0, 0, 0, 0)) == expected(rules, 0, (0xFE, 0, 0, 0, 0, 0))


def test_an_entry_with_the_lower_priority_number_wins_and_carries_its_action_data():
    catch_all = Rule(1, ((0, 0),) * 6, 9, 100)
    tcp = Rule(1, ((6, 0xFF), *((0, 0),) * 5), 5, 200)
    tcp_set_3 = Rule(1, ((6, 0xFF), (8, 8), *((0, 0),) * 4), 1, 300)
    tcp_443 = (6, 8 | 1, 0, 1234, 443, 0)
    with SwxPipeline.load(SPEC, 1, MEMORY_MB) as p:
        program_rules(p, [catch_all, tcp, tcp_set_3])

        assert matched(p, 1, tcp_443) == 300
        assert matched(p, 1, (6, 1, 0, 1234, 443, 0)) == 200
        assert matched(p, 1, (17, 8, 0, 1234, 53, 0)) == 100
        assert matched(p, 2, tcp_443) == MISS

        p.table_delete("policy", tcp_set_3.line().split(" priority")[0])
        p.commit()
        assert matched(p, 1, tcp_443) == 200


def test_an_empty_table_misses_before_any_entry_and_after_the_last_is_deleted():
    rule = Rule(1, ((6, 0xFF), *((0, 0),) * 5), 1, 7)
    key = (6, 0, 0, 0, 80, 0)
    with SwxPipeline.load(SPEC, 1, MEMORY_MB) as p:
        p.commit()
        assert matched(p, 1, key) == MISS

        program_rules(p, [rule])
        assert matched(p, 1, key) == 7

        p.table_delete("policy", rule.line().split(" priority")[0])
        p.commit()
        assert matched(p, 1, key) == MISS
