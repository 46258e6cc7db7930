"""P4Runtime encoding per table entry, ours (`PipelineSchema.encode_entity`) against finsy's
(`P4TableEntry.encode`), over the snapshot's compiled entries: issue 11 kept ours on this figure.

Both produce the same protobuf for every entry (checked on each run): the comparison is of cost
only. finsy is timed twice: building its `P4TableEntry` from ours and encoding it (what the
driver would do), and encoding an already built one (finsy's encoder alone).
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from finsy import P4IndirectAction, P4TableAction, P4TableEntry, P4TableMatch

from felix_p4.p4.schema import PipelineSchema
from felix_p4.pipeline.entries import Entity, Exact, Lpm, Match, Optional, Range, TableEntry

SAMPLE = 40_000  # entries timed per encoder (a seeded sample where the snapshot has more)
REPEATS = 5  # each encoder runs this many times over the sample; the fastest run counts


def _finsy_value(match: Match) -> Any:
    if isinstance(match, Exact | Optional):
        return match.value
    if isinstance(match, Lpm):
        return (match.value, match.prefix_len)
    if isinstance(match, Range):
        return (match.low, match.high)
    return (match.value, match.mask)


def finsy_entry(entry: TableEntry) -> P4TableEntry:
    """The same entry as finsy's P4TableEntry, addressed by the same P4Info names."""
    action: P4TableAction | P4IndirectAction | None
    if entry.group:
        action = P4IndirectAction(group_id=entry.group)
    elif entry.action:
        action = P4TableAction(entry.action, **dict(entry.params))
    else:
        action = None
    return P4TableEntry(
        entry.table,
        match=P4TableMatch({name: _finsy_value(m) for name, m in entry.match}),
        action=action,
        is_default_action=entry.is_default,
        priority=entry.priority,
        metadata=entry.metadata,
    )


def _fastest(encoders: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Seconds of each encoder's fastest run; the encoders take turns, so noise from a shared
    machine falls on all of them, and the garbage collector is off while one runs (as timeit
    does)."""
    best = dict.fromkeys(encoders, float("inf"))
    for _ in range(REPEATS):
        for name, work in encoders.items():
            gc.collect()
            gc.disable()
            try:
                started = time.perf_counter()
                work()
                best[name] = min(best[name], time.perf_counter() - started)
            finally:
                gc.enable()
    return best


def encoding_costs(schema: PipelineSchema, entities: Sequence[Entity]) -> dict[str, Any]:
    """Microseconds per entry for each encoder and finsy's cost relative to ours."""
    entries = [e for e in entities if isinstance(e, TableEntry)]
    sample = random.Random(1).sample(entries, SAMPLE) if len(entries) > SAMPLE else entries
    built = [finsy_entry(e) for e in sample]
    finsy_schema = schema.finsy
    differ = sum(
        schema.encode_entity(e).SerializeToString(deterministic=True)
        != f.encode(finsy_schema).SerializeToString(deterministic=True)
        for e, f in zip(sample, built, strict=True)
    )
    seconds = _fastest(
        {
            "ours": lambda: [schema.encode_entity(e) for e in sample],
            "finsy": lambda: [finsy_entry(e).encode(finsy_schema) for e in sample],
            "finsy_encode_only": lambda: [f.encode(finsy_schema) for f in built],
        }
    )
    n = len(sample)
    return {
        "entries": len(entries),
        "sampled": n,
        "repeats": REPEATS,
        "differing_encodings": differ,
        "us_per_entry": {name: 1e6 * s / n for name, s in seconds.items()},
        "ratio": seconds["finsy"] / seconds["ours"],
        "ratio_encode_only": seconds["finsy_encode_only"] / seconds["ours"],
    }
