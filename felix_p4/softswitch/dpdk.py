"""The embedded target's DPDK engine: mirrors the P4Runtime table store into DPDK's SWX pipeline
running the packaged P4-DPDK spec, and runs packets through it.

The table store stays the authority on P4Runtime semantics (validation, ALREADY_EXISTS and
NOT_FOUND, reads, sizes). Every update it accepts is translated by name (dpdk_translate) and
committed to SWX once per Write RPC, one table at a time; a table whose changes SWX refuses has
its updates undone in the store and reported (RESOURCE_EXHAUSTED when full, INTERNAL otherwise),
so the store and SWX never disagree.

SWX knows an entry by its value and mask only, so P4Runtime entries that differ only in priority
are one SWX entry: the highest-priority one is programmed, and the next takes its place when it
is deleted. Frames are checked at the ports as a NIC would before they reach the pipeline (see
`felix_p4.softswitch.ingress`). Learned state (conntrack, service pins, affinity) lives only in SWX:
reads of learner tables return nothing, and a pipeline commit starts with none.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import attrs
from finsy.proto import p4i, p4r, rpc_code

from felix_p4 import pipeline as P
from felix_p4.p4.artefacts import P4SRC, load_p4info
from felix_p4.softswitch.dpdk_translate import (
    SWX_PRIORITY_MAX,
    PipelineMap,
    TableMap,
    TranslationError,
)
from felix_p4.softswitch.ingress import PORT_MTU, ingress_drop_reason
from felix_p4.softswitch.packet import describe
from felix_p4.softswitch.store import P4RuntimeError, TableStore
from felix_p4.swx import SwxError, SwxPipeline
from felix_p4.swx import spec as swx_spec

log = logging.getLogger(__name__)

SPEC = "felix_pna.spec"
CONTEXT = "felix_pna.context.json"
P4INFO = "felix_pna.p4info.txtpb"

# pipeline/headers.p4: the expiry profile of ClientIP affinity entries, whose timeout the target
# sets (the spec's timeout list is compiled in; DPDK 22.11 can change one on the live pipeline).
AFFINITY_PROFILE = 6


@attrs.frozen(slots=True)
class DpdkSettings:
    """How the DPDK engine runs: P4 ports 0..n_ports-1, the EAL's memory, timeouts, sizes."""

    n_ports: int = 256
    memory_mb: int = 1024  # DPDK's EAL pool; a pipeline push briefly holds two pipelines
    affinity_seconds: int = 10800  # seconds: Kubernetes' default ClientIP timeout
    mtu: int = PORT_MTU  # longest frame a port takes (SWX cuts longer ones; we drop them)
    # P4Info table name -> entries SWX holds, fewer than the P4Info says (testing, small devices)
    table_limits: Mapping[str, int] = attrs.field(factory=dict)
    # P4 port -> caller-owned non-blocking fd (AF_PACKET socket, TAP fd) instead of a test port:
    # how `felix-p4 target --port NAME=N` binds ports to interfaces (softswitch/interfaces.py).
    port_fds: Mapping[int, int] = attrs.field(factory=dict)


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@attrs.define(slots=True)
class _TableMirror:
    """What SWX holds for one table: the store's entries grouped by SWX identity (value and
    mask), each group by P4Runtime priority, and the default entry."""

    groups: dict[str, dict[int, p4r.TableEntry]]
    default: p4r.TableEntry


@attrs.define(slots=True)
class _Change:
    """One table's part of a Write: what each touched entry and the default were before."""

    indices: list[int] = attrs.Factory(list)
    # (SWX match, P4Runtime priority) -> (the P4Runtime match, the entry before, or None)
    entries: dict[tuple[str, int], tuple[Sequence[p4r.FieldMatch], p4r.TableEntry | None]] = (
        attrs.Factory(dict)
    )
    key_indices: dict[str, list[int]] = attrs.Factory(dict)  # SWX match -> updates touching it
    default_before: p4r.TableEntry | None = None  # set when the default was written

    def split(self, matches: set[str]) -> tuple[_Change, _Change]:
        """(the part touching `matches`, the rest)."""
        parts = (_Change(), _Change(default_before=self.default_before))
        for (match, priority), entry in self.entries.items():
            parts[match not in matches].entries[(match, priority)] = entry
        for match, indices in self.key_indices.items():
            parts[match not in matches].key_indices[match] = indices
        taken = {i for m in matches for i in self.key_indices.get(m, ())}
        parts[0].indices = [i for i in self.indices if i in taken]
        parts[1].indices = [i for i in self.indices if i not in taken]
        return parts


class DpdkEngine:
    """The SWX pipeline of one device, kept equal to its table store."""

    def __init__(self, settings: DpdkSettings | None = None) -> None:
        self.settings = settings or DpdkSettings()
        self.p4info = load_p4info(P4SRC / P4INFO)
        self._packaged = self.p4info.SerializeToString(deterministic=True)
        spec_text = (P4SRC / SPEC).read_text()
        spec = swx_spec.parse(spec_text)
        context = json.loads((P4SRC / CONTEXT).read_text())
        self.map = PipelineMap.build(self.p4info, context, spec)
        self._spec_text = spec_text
        if self.settings.table_limits:
            self._spec_text = _with_sizes(spec_text, self.map, self.settings.table_limits)
            self.map = PipelineMap.build(self.p4info, context, swx_spec.parse(self._spec_text))
        if self.settings.n_ports < 1:
            raise ValueError("the DPDK engine needs at least one port")
        outside = sorted(p for p in self.settings.port_fds if not 0 <= p < self.settings.n_ports)
        if outside:
            raise ValueError(
                f"ports {outside} bound to interfaces are not ports of this target "
                f"(ports 0..{self.settings.n_ports - 1})"
            )
        self.pipeline: SwxPipeline | None = None
        self._mirrors: dict[int, _TableMirror] = {}

    # ------------------------------------------------------------ hooks of EmbeddedTarget

    def initial_defaults(self, p4info: p4i.P4Info) -> dict[str, tuple[str, dict[str, int]]]:
        """The store's initial default entries: the spec's."""
        return self.map.initial_defaults()

    def verify(self, config: p4r.ForwardingPipelineConfig) -> None:
        if config.p4info.SerializeToString(deterministic=True) != self._packaged:
            raise P4RuntimeError(
                rpc_code.INVALID_ARGUMENT,
                "the DPDK engine runs the packaged pipeline, whose P4Info differs from the one "
                f"pushed ({_first_difference(self.p4info, config.p4info)}); push felix-p4's "
                "P4Info or use --engine model",
            )

    def reset(self, tables: TableStore) -> None:
        """A new pipeline: a fresh SWX pipeline holding what `tables` holds (nothing learned).
        The old pipeline keeps running until the new one is programmed."""
        with resources.as_file(P4SRC / SPEC) as packaged, tempfile.TemporaryDirectory() as tmp:
            spec_path = packaged
            if self.settings.table_limits:
                spec_path = Path(tmp) / SPEC
                spec_path.write_text(self._spec_text)
            try:
                new = SwxPipeline.load(
                    spec_path,
                    self.settings.n_ports,
                    self.settings.memory_mb,
                    port_fds=dict(self.settings.port_fds),
                    mtu=self.settings.mtu,
                )
            except SwxError as exc:
                raise P4RuntimeError(rpc_code.INTERNAL, f"DPDK pipeline: {exc}") from exc
        try:
            affinity = self.map.by_name[P.SERVICE_AFFINITY.name].spec_name
            new.set_learner_timeout(affinity, AFFINITY_PROFILE, self.settings.affinity_seconds)
            mirrors = self._program_store(new, tables)
        except (SwxError, _Refused) as exc:
            new.close()
            raise P4RuntimeError(rpc_code.INTERNAL, f"DPDK pipeline: {exc}") from exc
        old, self.pipeline, self._mirrors = self.pipeline, new, mirrors
        if old is not None:
            old.close()
        log.info("DPDK pipeline started: %d ports", self.settings.n_ports)

    def check(self, update: p4r.Update) -> None:
        """Refuse what the store would accept but SWX cannot run (before the store sees it)."""
        which = update.entity.WhichOneof("entity")
        if which != "table_entry":
            raise P4RuntimeError(
                rpc_code.UNIMPLEMENTED, f"{which} is not implemented by the DPDK engine"
            )
        te = update.entity.table_entry
        table = self.map.tables.get(te.table_id)
        if table is None:
            return  # the store says NOT_FOUND
        if table.learner:
            raise P4RuntimeError(
                rpc_code.UNIMPLEMENTED,
                f"table {table.name} is learned by the data plane (add_on_miss); P4-DPDK "
                "cannot write its entries from the control plane",
            )
        if table.prioritised and te.priority > SWX_PRIORITY_MAX:
            raise P4RuntimeError(
                rpc_code.OUT_OF_RANGE,
                f"table {table.name}: priority {te.priority} above {SWX_PRIORITY_MAX}, the "
                "highest SWX's wildcard tables hold",
            )
        if update.type != p4r.Update.DELETE and te.action.HasField("action"):
            for param, port in self.map.output_ports(table, te.action.action):
                if port >= self.settings.n_ports:
                    raise P4RuntimeError(
                        rpc_code.INVALID_ARGUMENT,
                        f"table {table.name}: {param} {port} is not a port of this target "
                        f"(ports 0..{self.settings.n_ports - 1})",
                    )

    def apply(
        self, tables: TableStore, accepted: Sequence[tuple[int, p4r.Update]], atomic: bool
    ) -> dict[int, P4RuntimeError]:
        """Commit what the store accepted to SWX, one table at a time. Refused updates are undone
        in the store and returned by index: new entries beyond a table's size, and every update
        of a table whose commit SWX refuses. Atomic: if any is refused, all are undone."""
        if not accepted:
            return {}
        if self.pipeline is None:
            raise P4RuntimeError(rpc_code.FAILED_PRECONDITION, "the DPDK pipeline is not running")
        pending = list(self._collect(tables, accepted).items())
        done: list[tuple[TableMap, _Change]] = []
        failed: dict[int, P4RuntimeError] = {}
        while pending:
            table_id, change = pending.pop(0)
            table = self.map.tables[table_id]
            over = self._over_capacity(table, change)
            if over is not None:
                refused, change = change.split(over)
                self._undo(tables, table, refused)
                error = P4RuntimeError(
                    rpc_code.RESOURCE_EXHAUSTED,
                    f"table {table.name} is full ({table.size} entries in SWX)",
                )
                failed.update(dict.fromkeys(refused.indices, error))
                if atomic:
                    pending.insert(0, (table_id, change))
                    break
            try:
                self._commit(table, change, forward=True)
            except _Refused as exc:
                self._undo(tables, table, change)
                error = P4RuntimeError(exc.code, f"table {table.name}: {exc.message}")
                failed.update(dict.fromkeys(change.indices, error))
                if atomic:
                    break
            else:
                done.append((table, change))
        if failed and atomic:
            # All or none: the tables not reached were never programmed; those done are put back.
            for table_id, change in pending:
                self._undo(tables, self.map.tables[table_id], change)
            for table, change in reversed(done):
                try:
                    self._commit(table, change, forward=False)
                except _Refused as exc:
                    log.error(
                        "DPDK pipeline: table %s could not be put back; SWX and the store "
                        "differ: %s",
                        table.name,
                        exc.message,
                    )
                self._revert_store(tables, table, change)
        return failed

    # ------------------------------------------------------------------------- packets

    def trace(self, in_port: int, frame: bytes, commit: bool) -> dict[str, Any]:
        """Run one frame through SWX: the verdict, the frame as it left, and every table whose
        hit or miss counter moved, in pipeline order (the model engine's result shape, plus
        `out_hex`: the frame's bytes; `params` are {}: counters do not say which entry hit)."""
        if not commit:
            raise ValueError(
                "the DPDK engine cannot trace without committing: SWX learns flows, pins and "
                "affinities as the packet passes; ask for commit (felix-p4 trace --commit)"
            )
        pipeline = self.pipeline
        if pipeline is None:
            raise RuntimeError("no pipeline has been set on the target")
        if not 0 <= in_port < self.settings.n_ports or in_port in self.settings.port_fds:
            raise ValueError(
                f"in_port {in_port} is not a test port of this target "
                f"(ports 0..{self.settings.n_ports - 1}, not bound to interfaces)"
            )
        refused = ingress_drop_reason(frame, self.settings.mtu)
        if refused is not None:
            return _result("drop", None, refused, None, [])
        before = self._counters(pipeline)
        outputs = pipeline.process(in_port, frame)
        after = self._counters(pipeline)
        trace = [
            _trace_row(self.map.by_name[name], before[name], after[name])
            for name in self.map.order
            if after[name][:2] != before[name][:2]
        ]
        if not outputs:
            return _result("drop", None, _drop_reason(in_port, frame, trace), None, trace)
        port, sent = outputs[0]
        if port in self._host_ports():
            return _result("host", port, "handed to the host", sent, trace)
        routed = any(r["table"].startswith("routes_") and r["hit"] for r in trace)
        reason = "routed to local workload" if routed else f"sent to port {port}"
        if port == in_port and not any(r["table"].startswith("routes_") for r in trace):
            reason = "answered on the port it came from (ARP / neighbour discovery)"
        return _result("forward", port, reason, sent, trace)

    def close(self) -> None:
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None

    # ----------------------------------------------------------------------- internals

    def _program_store(self, pipeline: SwxPipeline, tables: TableStore) -> dict[int, _TableMirror]:
        """Mirrors of `tables` (their entries and defaults) programmed into `pipeline`."""
        mirrors: dict[int, _TableMirror] = {}
        for table in self.map.tables.values():
            mirror = _TableMirror({}, _read_default(tables, table))
            mirrors[table.p4_id] = mirror
            if table.learner:
                continue
            found = tables.read(p4r.Entity(table_entry=p4r.TableEntry(table_id=table.p4_id)))
            for entity in found:
                te = entity.table_entry
                group = mirror.groups.setdefault(self.map.match(table, te.match), {})
                group[te.priority] = te
            if len(mirror.groups) > table.size:
                raise _Refused(rpc_code.RESOURCE_EXHAUSTED, f"table {table.name} is full")
            for group in mirror.groups.values():
                pipeline.table_add(table.spec_name, self._winner(table, group) or "")
            default = self.map.action(table, mirror.default.action.action)
            if default != f"action {table.action_named_p4(table.default_action).spec_name}":
                pipeline.default_entry(table.spec_name, default)
            pipeline.commit()
        return mirrors

    def _collect(
        self, tables: TableStore, accepted: Sequence[tuple[int, p4r.Update]]
    ) -> dict[int, _Change]:
        """Per table, what the accepted updates touched; the mirrors take the store's state."""
        changes: dict[int, _Change] = {}
        for index, update in accepted:
            te = update.entity.table_entry
            table = self.map.tables[te.table_id]
            mirror = self._mirrors[te.table_id]
            change = changes.setdefault(te.table_id, _Change())
            change.indices.append(index)
            if te.is_default_action:
                if change.default_before is None:
                    change.default_before = mirror.default
                continue
            key = (self.map.match(table, te.match), te.priority)
            change.key_indices.setdefault(key[0], []).append(index)
            if key not in change.entries:
                before = mirror.groups.get(key[0], {}).get(te.priority)
                change.entries[key] = (te.match, before)
        for table_id, change in changes.items():
            table = self.map.tables[table_id]
            mirror = self._mirrors[table_id]
            if change.default_before is not None:
                mirror.default = _read_default(tables, table)
            for (match, priority), (p4_match, _) in change.entries.items():
                now = _read_entry(tables, table, p4_match, priority)
                group = mirror.groups.setdefault(match, {})
                if now is None:
                    group.pop(priority, None)
                else:
                    group[priority] = now
                if not group:
                    del mirror.groups[match]
        return changes

    def _groups_before(self, table: TableMap, change: _Change) -> dict[str, dict[int, Any]]:
        """The groups `change` touched as they were before it (the mirror holds them after)."""
        mirror = self._mirrors[table.p4_id]
        before = {m: dict(mirror.groups.get(m, {})) for m, _ in change.entries}
        for (match, priority), (_, entry) in change.entries.items():
            before[match].pop(priority, None)
            if entry is not None:
                before[match][priority] = entry
        return before

    def _over_capacity(self, table: TableMap, change: _Change) -> set[str] | None:
        """The SWX keys `change` adds beyond the table's size (the last ones added), if any.
        SWX's hash tables refuse them at commit (ENOSPC), but its wildcard and LPM tables take
        any number; counting here makes both refuse exactly the entries that do not fit."""
        mirror = self._mirrors[table.p4_id]
        excess = len(mirror.groups) - table.size
        if excess <= 0:
            return None
        added = [m for m, group in self._groups_before(table, change).items() if not group]
        return set([m for m in added if m in mirror.groups][-excess:])

    def _commit(self, table: TableMap, change: _Change, *, forward: bool) -> None:
        """Program one table's change into SWX (forward: the mirror holds the new state;
        otherwise SWX and the mirror go back to the old state). _Refused if SWX refuses."""
        mirror = self._mirrors[table.p4_id]
        old_groups = self._groups_before(table, change)
        new_groups = {m: dict(mirror.groups.get(m, {})) for m in old_groups}
        old_default = change.default_before or mirror.default
        new_default = mirror.default
        if not forward:
            old_groups, new_groups = new_groups, old_groups
            old_default, new_default = new_default, old_default
            for match, group in new_groups.items():
                if group:
                    mirror.groups[match] = dict(group)
                else:
                    mirror.groups.pop(match, None)
            mirror.default = new_default
        deletes: list[str] = []
        adds: list[str] = []
        restores: list[str] = []
        added_keys = 0
        for match in new_groups:
            old_text = self._winner(table, old_groups[match])
            new_text = self._winner(table, new_groups[match])
            if old_text == new_text:
                continue
            if new_text is None:
                deletes.append(match)
                restores.append(old_text or "")
            else:
                adds.append(new_text)
                added_keys += old_text is None
        default_text = None
        if new_default != old_default:
            default_text = self.map.action(table, new_default.action.action)
        programmed = len(mirror.groups) - added_keys + len(deletes)  # in SWX before this change
        # A commit applies a hash table's additions before its deletions, so a full table
        # takes the deletions in a commit of their own first.
        split = table.hashed and bool(deletes) and programmed + added_keys > table.size
        try:
            if split:
                self._stage_commit(table, deletes, [], None)
            try:
                self._stage_commit(table, [] if split else deletes, adds, default_text)
            except SwxError:
                if split:
                    self._stage_commit(table, [], restores, None)
                raise
        except SwxError as exc:
            log.warning("DPDK pipeline refused table %s: %s", table.name, exc)
            # Every update of the table carries the message: keep it short (the log has it all).
            errno = re.search(r"discarded: ([^(]*\(E[A-Z]+\))", str(exc))
            reason = errno.group(1) if errno else str(exc)[:80]
            code = rpc_code.RESOURCE_EXHAUSTED if "(ENOSPC)" in reason else rpc_code.INTERNAL
            raise _Refused(code, f"DPDK refused the commit: {reason}") from exc

    def _stage_commit(
        self, table: TableMap, deletes: Sequence[str], adds: Sequence[str], default: str | None
    ) -> None:
        pipeline = self.pipeline
        assert pipeline is not None
        try:
            for match in deletes:
                pipeline.table_delete(table.spec_name, match)
            for text in adds:
                pipeline.table_add(table.spec_name, text)
            if default is not None:
                pipeline.default_entry(table.spec_name, default)
        except SwxError:
            pipeline.abort()
            raise
        pipeline.commit()

    def _undo(self, tables: TableStore, table: TableMap, change: _Change) -> None:
        """Take back a change SWX did not get: from the mirror and from the store."""
        self._undo_mirror(table, change)
        self._revert_store(tables, table, change)

    def _undo_mirror(self, table: TableMap, change: _Change) -> None:
        """The table's mirror back to its state before `change` (which SWX did not take)."""
        mirror = self._mirrors[table.p4_id]
        if change.default_before is not None:
            mirror.default = change.default_before
        for (match, priority), (_, before) in change.entries.items():
            group = mirror.groups.setdefault(match, {})
            group.pop(priority, None)
            if before is not None:
                group[priority] = before
            if not group:
                del mirror.groups[match]

    def _revert_store(self, tables: TableStore, table: TableMap, change: _Change) -> None:
        """Undo one table's part of a Write in the store (what SWX refused)."""
        undo: list[p4r.Update] = []
        for (_, priority), (p4_match, before) in change.entries.items():
            now = _read_entry(tables, table, p4_match, priority)
            if now == before:
                continue
            if before is None:
                kind, entry = p4r.Update.DELETE, now
            else:
                kind = p4r.Update.INSERT if now is None else p4r.Update.MODIFY
                entry = before
            undo.append(p4r.Update(type=kind, entity=p4r.Entity(table_entry=entry)))
        if change.default_before is not None:
            undo.append(
                p4r.Update(
                    type=p4r.Update.MODIFY, entity=p4r.Entity(table_entry=change.default_before)
                )
            )
        for update in undo:
            tables.write(update)

    def _winner(self, table: TableMap, group: Mapping[int, p4r.TableEntry]) -> str | None:
        """The SWX entry text of a group: its highest-priority P4Runtime entry's."""
        if not group:
            return None
        return self.map.entry(table, group[max(group)]).text

    def _host_ports(self) -> set[int]:
        table = self.map.by_name[P.PORT_CLASSIFY.name]
        host = next(a.p4_id for a in table.actions.values() if a.name == P.HOST_PORT.name)
        return {
            int.from_bytes(te.match[0].exact.value, "big")
            for group in self._mirrors[table.p4_id].groups.values()
            for te in group.values()
            if te.action.action.action_id == host
        }

    def _counters(self, pipeline: SwxPipeline) -> dict[str, tuple[int, int, int, dict[str, int]]]:
        """(hits, misses, learned, packets per spec action) of every table, by P4Info name."""
        out = {}
        for name in self.map.order:
            table = self.map.by_name[name]
            if table.learner:
                ls = pipeline.learner_stats(table.spec_name)
                out[name] = (ls.hits, ls.misses, ls.learned, ls.actions)
            else:
                ts = pipeline.table_stats(table.spec_name)
                out[name] = (ts.hits, ts.misses, 0, ts.actions)
        return out


def _result(
    verdict: str, port: int | None, reason: str, sent: bytes | None, trace: list[dict[str, Any]]
) -> dict[str, Any]:
    out = {
        "verdict": verdict,
        "egress_port": port,
        "reason": reason,
        "packet": describe(sent) if sent is not None else None,
        "trace": trace,
    }
    if sent is not None:
        out["out_hex"] = sent.hex()  # the frame exactly as SWX sent it
    return out


def _trace_row(
    table: TableMap,
    before: tuple[int, int, int, dict[str, int]],
    after: tuple[int, int, int, dict[str, int]],
) -> dict[str, Any]:
    moved = [a for a, n in after[3].items() if n != before[3].get(a, 0)]
    action = table.action_named(moved[0]).name if moved else ""
    row: dict[str, Any] = {
        "table": table.name,
        "hit": after[0] > before[0],
        "action": action,
        "params": {},
    }
    if after[2] > before[2]:
        row["learned"] = True
    return row


# (table, action) -> why the packet was dropped there.
_DROP_REASONS = {
    **{
        (table.name, P.DROP.name): "source address not allowed on this port (spoofed)"
        for table in P.SOURCE_CHECK.values()
    },
    (P.SERVICES.name, P.SERVICE_REJECT.name): "service has no endpoints",
    (P.SERVICE_BACKENDS.name, P.NO_BACKEND.name): "service has no backend for this flow",
}
_ROUTE_TABLES = {table.name for table in P.ROUTES.values()}
_STAGE_TABLES = {direction: {t.name for t in tables} for direction, tables in P.STAGES.items()}


def _drop_reason(in_port: int, frame: bytes, trace: list[dict[str, Any]]) -> str:
    for row in trace:
        table, action = row["table"], row["action"]
        if table == P.PORT_CLASSIFY.name and action == P.DROP.name:
            return f"port {in_port} is not a known port"
        if table in _ROUTE_TABLES and action == P.NO_ROUTE.name:
            return f"no route in {table}"
        if (table, action) in _DROP_REASONS:
            return _DROP_REASONS[table, action]
    if trace and trace[-1]["table"] == P.CONNTRACK.name and not trace[-1]["hit"]:
        for direction in ("ingress", "egress"):
            stages = [r for r in trace if r["table"] in _STAGE_TABLES[direction]]
            if stages and stages[-1]["action"] != P.RULE_ALLOW.name:
                return f"{direction} policy: {stages[-1]['action']}"
    final = trace[-1] if trace else None
    if final and final["table"] in _ROUTE_TABLES and final["action"] == P.TO_WORKLOAD.name:
        return "TTL / hop limit expired"
    packet = describe(frame)
    if packet.get("proto") == "arp":
        return "ARP that is not a workload's request"
    if "src" not in packet:
        return "neither ARP nor IP"
    last = f" after {trace[-1]['table']} ({trace[-1]['action']})" if trace else ""
    return f"dropped by the pipeline{last}"


def _read_entry(
    tables: TableStore, table: TableMap, match: Sequence[p4r.FieldMatch], priority: int
) -> p4r.TableEntry | None:
    """The stored entry with exactly this match and priority. A read is a filter: a match
    with no fields (an all don't-care entry, such as the 0.0.0.0/0 route) reads every entry."""
    query = p4r.TableEntry(table_id=table.p4_id, match=match, priority=priority)
    wanted = _match_key(match)
    for entity in tables.read(p4r.Entity(table_entry=query)):
        te = entity.table_entry
        if te.priority == priority and _match_key(te.match) == wanted:
            return te
    return None


def _match_key(match: Sequence[p4r.FieldMatch]) -> list[bytes]:
    return sorted(m.SerializeToString(deterministic=True) for m in match)


def _read_default(tables: TableStore, table: TableMap) -> p4r.TableEntry:
    query = p4r.TableEntry(table_id=table.p4_id, is_default_action=True)
    return tables.read(p4r.Entity(table_entry=query))[0].table_entry


def _with_sizes(spec_text: str, pipeline: PipelineMap, limits: Mapping[str, int]) -> str:
    """The spec with some tables' `size` lowered (what SWX allocates and, for hash tables,
    enforces)."""
    for name, size in limits.items():
        table = pipeline.by_name.get(name)
        if table is None or table.learner:
            raise TranslationError(f"table limit for {name!r}: not a (non-learner) table")
        if not 0 < size <= table.size:
            raise TranslationError(f"table limit for {name}: {size} not in 1..{table.size}")
        name_re = re.escape(table.spec_name)
        pattern = re.compile(rf"(^table {name_re} \{{.*?^\tsize )\S+", re.S | re.M)
        spec_text, n = pattern.subn(rf"\g<1>{size:#x}", spec_text, count=1)
        if n != 1:
            raise TranslationError(f"table limit for {name}: no size in spec table")
    return spec_text


def _first_difference(packaged: p4i.P4Info, pushed: p4i.P4Info) -> str:
    for kind in ("tables", "actions"):
        ours = {o.preamble.name: o for o in getattr(packaged, kind)}
        theirs = {o.preamble.name: o for o in getattr(pushed, kind)}
        for name in sorted(set(ours) | set(theirs)):
            if ours.get(name) != theirs.get(name):
                where = "missing" if name not in theirs else "extra" if name not in ours else ""
                return f"{kind[:-1]} {name} {where or 'differs'}".strip()
    return "ids, sizes or annotations differ"
