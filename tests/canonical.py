"""Device entries in a form two drivers can be compared by: program ids replaced by program
digests and set bits by set names (both are allocation order, which may differ)."""

from __future__ import annotations

import json

import attrs
from finsy.proto import p4r

from felix_p4.p4.artefacts import DEFAULT_P4INFO, load_p4info
from felix_p4.p4.schema import PipelineSchema
from felix_p4.pipeline.entries import (
    ActionProfileGroup,
    ActionProfileMember,
    Entity,
    Exact,
    TableEntry,
    Ternary,
)

SCHEMA = PipelineSchema(load_p4info(DEFAULT_P4INFO))


def canonical(entities: list[Entity]) -> set:
    """Entities with program ids replaced by program digests, set bits by set names, service
    group and service ids by the service port they stand for, members by their backend, and a
    service port's buckets by the set of backends they hold."""
    entries = [e for e in entities if isinstance(e, TableEntry)]
    members = {
        e.member_id: tuple(sorted(e.params)) for e in entities if isinstance(e, ActionProfileMember)
    }
    groups = {e.group_id: e for e in entities if isinstance(e, ActionProfileGroup)}
    group_keys: dict[int, str] = {}
    for e in entries:
        if e.table == "services" and e.metadata:
            info = json.loads(e.metadata)
            if "group" in info:
                group_keys[info["group"]] = info["group_key"]
    programs: dict[tuple[str, int], str] = {}
    bits: dict[str, dict[int, str]] = {"src": {}, "dst": {}}
    for e in entries:
        if "_stage_" in e.table and e.priority == 1 and b'"program"' in e.metadata:
            info = json.loads(e.metadata)
            program = dict(e.match)["program"]
            assert isinstance(program, Exact)
            programs[(e.table.split("_stage_")[0], program.value)] = info["program"]
            for side in ("src", "dst"):
                for bit, text in info["bits"][side].items():
                    bits[side][int(bit)] = text

    def names(side: str, value: int, mask: int | None = None) -> tuple:
        out = []
        for bit in range(128):
            if (mask if mask is not None else value) >> bit & 1:
                out.append((bits[side].get(bit, f"?{bit}"), value >> bit & 1))
        return tuple(sorted(out))

    result = set()
    spread: dict[str, set[tuple]] = {}
    for e in entries:
        fields = dict(e.match)
        match = []
        for side in ("src_sets", "dst_sets"):
            hi, lo = fields.pop(f"{side}_hi", None), fields.pop(f"{side}_lo", None)
            if hi is None and lo is None:
                continue
            value = mask = 0
            for shift, part in ((64, hi), (0, lo)):
                if isinstance(part, Ternary):
                    value |= part.value << shift
                    mask |= part.mask << shift
            match.append((side, names(side[:3], value, mask)))
        for name, m in sorted(fields.items()):
            if name == "program" and isinstance(m, Exact):
                direction = e.table.split("_stage_")[0]
                match.append((name, programs.get((direction, m.value), f"?{m.value}")))
            else:
                match.append((name, m))
        if e.table == "service_backends" and e.group:
            group = groups.get(e.group)
            backends = (
                tuple(sorted((members.get(m, f"?{m}"), w) for m, w in group.members))
                if group is not None
                else "?"
            )
            result.add((e.table, group_keys.get(e.group, f"?{e.group}"), backends))
            continue
        if e.table == "service_backends":
            # Buckets: which backends a service port spreads over. How many buckets, and which
            # bucket holds whom, depend on the port's history (counts are kept while they stay
            # even enough, so flows keep their backends), not only on the state.
            bucket_group = dict(e.match)["group"]
            assert isinstance(bucket_group, Exact)
            key = group_keys.get(bucket_group.value, f"?{bucket_group.value}")
            spread.setdefault(key, set()).add(tuple(sorted(e.params)))
            continue
        params = dict(e.params)
        if e.table == "services" and e.metadata:
            info = json.loads(e.metadata)
            for name in ("group", "service_id", "affinity", "bucket_mask"):
                params.pop(name, None)
                info.pop(name, None)
            # The affinity scope's generation counts the backends that left since the group
            # was made: history, which a fresh compile of the same state does not have.
            info.pop("affinity_key", None)
            e = attrs.evolve(e, metadata=json.dumps(info, sort_keys=True).encode())
        out_params = []
        if "sets_hi" in params:
            side = "src" if "_src" in e.table else "dst"
            sets = (params.pop("sets_hi") << 64) | params.pop("sets_lo")
            out_params.append(("sets", names(side, sets)))
        for name, value in sorted(params.items()):
            if name in ("egress_program", "ingress_program"):
                out_params.append((name, programs.get((name.split("_")[0], value), f"?{value}")))
            else:
                out_params.append((name, value))
        metadata = json.loads(e.metadata) if e.metadata else {}
        metadata.pop("bits", None)
        result.add(
            (
                e.table,
                tuple(sorted(match, key=repr)),
                e.action,
                tuple(out_params),
                e.priority,
                json.dumps(metadata, sort_keys=True),
            )
        )
    for key, backends in spread.items():
        result.add(("service_backends", key, tuple(sorted(backends))))
    return result


def device_entries(target) -> list[Entity]:
    """Every table entry, action profile member and group the target holds."""
    out: list[Entity] = []
    for wildcard in (
        p4r.Entity(table_entry=p4r.TableEntry()),
        p4r.Entity(action_profile_member=p4r.ActionProfileMember()),
        p4r.Entity(action_profile_group=p4r.ActionProfileGroup()),
    ):
        for entity in target.tables.read(wildcard):
            if entity.HasField("table_entry") and not entity.table_entry.table_id:
                continue
            out.append(SCHEMA.decode_entity(entity))
    return out
