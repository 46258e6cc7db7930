"""Desired versus installed entries: ordered INSERT/MODIFY/DELETE batches and their outcome."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Collection, Hashable, Iterable
from typing import TypeAlias

import attrs
from finsy.proto import p4r, rpc_code

from felix_p4 import metrics
from felix_p4.p4.client import P4RuntimeClient, UpdateResult
from felix_p4.p4.schema import PipelineSchema, SchemaError
from felix_p4.pipeline import PIPELINE, Pipeline
from felix_p4.pipeline.entries import Entity

log = logging.getLogger(__name__)

Owner = Hashable
Key = tuple  # an entity's identity: (table or profile pseudo-table, ...)

UpdateType: TypeAlias = p4r.Update.Type.ValueType
INSERT: UpdateType = p4r.Update.INSERT
MODIFY: UpdateType = p4r.Update.MODIFY
DELETE: UpdateType = p4r.Update.DELETE


@attrs.frozen(slots=True)
class Operation:
    type: UpdateType
    entry: Entity

    def __str__(self) -> str:
        return f"{p4r.Update.Type.Name(self.type)} {self.entry}"


@attrs.define
class ApplyReport:
    written: int = 0
    failed: int = 0
    # owner -> reason, for owners with at least one entry not on the device as desired
    errors: dict[Owner, str] = attrs.Factory(dict)
    # owner -> the metric reason of its error (metrics.DEVICE_SMALLER, ...)
    causes: dict[Owner, str] = attrs.Factory(dict)
    # owners with an entry the device refused for lack of room: the caller rolls them back
    exhausted: set[Owner] = attrs.Factory(set)


class Refused(Exception):
    """An object whose entries do not fit: the message names the table and its capacity,
    `reason` says why in the metrics' vocabulary (metrics.TABLE_FULL or metrics.SHARE)."""

    def __init__(self, message: str, reason: str = metrics.TABLE_FULL) -> None:
        super().__init__(message)
        self.reason = reason


class SyncEngine:
    """Keeps the device's entries equal to the union of what every owner wants.

    Owners (an endpoint key, "node", ...) each declare their full set of entries; only keys
    whose claims changed since the last apply are diffed, so work follows the change.
    Two owners may claim the same key with the same entry; different entries for one key
    are a conflict, which the lowest owner (by repr) wins deterministically.
    """

    def __init__(
        self,
        schema: PipelineSchema,
        client: P4RuntimeClient,
        batch_size: int = 1000,
        pipeline: Pipeline = PIPELINE,
        learned: dict[str, int] | None = None,
    ) -> None:
        self.schema = schema
        self.client = client
        self.batch_size = batch_size
        # Tables the data plane writes itself (learned flows): never diffed or deleted.
        self.unmanaged = pipeline.learned
        # Dependency order: action profile members, then groups, then the tables using them.
        self._rank = {name: i for i, name in enumerate(pipeline.write_order())}
        self._installed: dict[Key, Entity] = {}
        self._claims: dict[Key, dict[Owner, Entity]] = {}
        # Room per table: the declared size, lowered to what the device's P4Info says and to
        # what the device turns out to hold when it answers RESOURCE_EXHAUSTED. `learned`
        # holds the latter and outlives this engine (the session keeps it across reconnects).
        self.learned: dict[str, int] = learned if learned is not None else {}
        self.capacity: dict[str, int] = {}
        for name in pipeline.write_order():
            size = schema.size(name)
            declared = pipeline.capacity(name)
            capacity = min(declared, size) if size else declared
            self.capacity[name] = min(capacity, self.learned.get(name, capacity))
        # Keys per table that are desired or on the device (both take room).
        self.occupied: Counter[str] = Counter()
        self._on_device: Counter[str] = Counter()
        self._owned: dict[Owner, frozenset[Entity]] = {}
        self._dirty: set[Key] = set()
        # Keys the device refused: (error code name, reason) of the last attempt.
        self._failed_keys: dict[Key, tuple[str, str]] = {}
        self._conflicted: set[Key] = set()
        self._rejected: defaultdict[tuple[str, str], list[str]] = defaultdict(list)
        # (table, code) summaries logged and still failing: how many repeats were not logged.
        self._failing: dict[tuple[str, str], int] = {}

    @property
    def installed(self) -> dict[Key, Entity]:
        """What the device holds, as far as we know (read-only: use the engine to change it)."""
        return self._installed

    @installed.setter
    def installed(self, entries: dict[Key, Entity]) -> None:
        self._installed = dict(entries)
        self._recount()

    def _recount(self) -> None:
        self.occupied = Counter(key[0] for key in self._claims.keys() | self._installed.keys())
        self._on_device = Counter(key[0] for key in self._installed)

    def _put(self, key: Key, entry: Entity) -> None:
        if key not in self._installed:
            self._on_device[key[0]] += 1
            if key not in self._claims:
                self.occupied[key[0]] += 1
        self._installed[key] = entry

    def _drop(self, key: Key) -> None:
        if self._installed.pop(key, None) is not None:
            self._on_device[key[0]] -= 1
            if key not in self._claims:
                self.occupied[key[0]] -= 1

    async def load_installed(self) -> None:
        """Read the device back; afterwards every installed key is compared at next apply."""
        installed: dict[Key, Entity] = {}
        for pb in await self.client.read_entities():
            entry = self.schema.decode_entity(pb)
            if entry.table not in self.unmanaged:
                installed[entry.key] = entry
        # Default entries the driver sets (the node table's) are compared like the rest, so
        # a restart rewrites none that is already right. Unclaimed defaults are left alone.
        defaults = [
            self.schema.table_id(t.name)
            for t in PIPELINE.tables
            if t.default.params and not t.const_default and t.name not in self.unmanaged
        ]
        for te in await self.client.read_default_entries(defaults):
            entry = self.schema.decode_entity(p4r.Entity(table_entry=te))
            installed[entry.key] = entry
        self.installed = installed
        self._dirty.update(self._installed)
        self._dirty.update(self._claims)

    def admit(
        self, owner: Owner, entries: Iterable[Entity], share: float = 0.0, floor: int = 16
    ) -> None:
        """Raise Refused unless `owner` may claim `entries` (in place of what it claims now):
        every table has room for the keys it adds, and with `share` no table would hold more
        of its entries than that fraction of the table (or `floor`, whichever is more)."""
        adding: Counter[str] = Counter()
        mine: Counter[str] = Counter()
        claims, installed = self._claims, self._installed
        for entry in entries:
            key = entry.key
            mine[key[0]] += 1
            if key not in claims and key not in installed:
                adding[key[0]] += 1
        if share:
            for table, count in mine.items():
                limit = max(floor, int(share * self.capacity.get(table, 0)))
                if count > limit:
                    raise Refused(
                        f"{table}: {count:,} entries, more than one endpoint may take ({limit:,})",
                        metrics.SHARE,
                    )
        for table, count in adding.items():
            capacity = self.capacity.get(table, 0)
            if capacity and self.occupied[table] + count > capacity:
                raise Refused(f"{table} full ({capacity:,})")

    def set_owner(self, owner: Owner, entries: Iterable[Entity]) -> None:
        new = frozenset(entries)
        old = self._owned.get(owner, frozenset())
        if new == old:
            return
        touched: set[Key] = set()
        for entry in old - new:
            claims = self._claims.get(entry.key)
            if claims is not None and claims.get(owner) == entry:
                del claims[owner]
                if not claims:
                    del self._claims[entry.key]
                    if entry.key not in self._installed:
                        self.occupied[entry.key[0]] -= 1
                touched.add(entry.key)
        for entry in new - old:
            claims = self._claims.get(entry.key)
            if claims is None:
                claims = self._claims[entry.key] = {}
                if entry.key not in self._installed:
                    self.occupied[entry.key[0]] += 1
            claims[owner] = entry
            touched.add(entry.key)
        self._dirty |= touched
        for key in touched:
            claims = self._claims.get(key)
            if claims and len(set(claims.values())) > 1:
                self._conflicted.add(key)
            else:
                self._conflicted.discard(key)
        if new:
            self._owned[owner] = new
        else:
            self._owned.pop(owner, None)

    def remove_owner(self, owner: Owner) -> None:
        self.set_owner(owner, ())

    def desired(self, key: Key) -> Entity | None:
        claims = self._claims.get(key)
        if not claims:
            return None
        if len(claims) == 1:
            return next(iter(claims.values()))
        return claims[min(claims, key=repr)]

    def desired_entries(self) -> dict[Key, Entity]:
        return {key: self.desired(key) for key in self._claims}  # type: ignore[misc]

    def plan(self, tables: Collection[str] | None = None, deletes: bool = True) -> list[Operation]:
        """Operations for the dirty keys (of `tables`, if given): inserts and modifies in
        table order, then deletes in reverse table order, so nothing is removed before what
        replaces it is in place. Keys left out stay dirty for a later apply."""
        writes: list[Operation] = []
        removals: list[Operation] = []
        for key in self._dirty:
            if tables is not None and key[0] not in tables:
                continue
            want = self.desired(key)
            have = self._installed.get(key)
            if want == have:
                continue
            if want is None:
                assert have is not None
                if not getattr(have, "is_default", False):
                    removals.append(Operation(DELETE, have))
            elif have is None and not getattr(want, "is_default", False):
                writes.append(Operation(INSERT, want))
            else:
                writes.append(Operation(MODIFY, want))
        rank = self._rank
        writes.sort(key=lambda op: rank.get(op.entry.table, 0))
        if not deletes:
            return writes
        removals.sort(key=lambda op: -rank.get(op.entry.table, 0))
        return writes + removals

    async def apply(
        self, tables: Collection[str] | None = None, deletes: bool = True, *, reconcile: bool = True
    ) -> ApplyReport:
        """Write the plan in batches, record what the device accepted, report failures.

        ALREADY_EXISTS or NOT_FOUND mean our view of the device was wrong (someone else
        wrote to it, or a write we thought failed succeeded): those tables are read back and
        the plan for them is made and written once more.
        """
        ops = self.plan(tables, deletes)
        if tables is None and deletes:
            self._dirty.clear()
        else:
            self._dirty.difference_update(
                key
                for key in list(self._dirty)
                if (tables is None or key[0] in tables)
                and (deletes or self.desired(key) is not None)
            )
        report = ApplyReport()
        stale: set[str] = set()
        for start in range(0, len(ops), self.batch_size):
            batch = []
            updates = []
            for op in ops[start : start + self.batch_size]:
                try:
                    updates.append(
                        p4r.Update(type=op.type, entity=self.schema.encode_entity(op.entry))
                    )
                except SchemaError as exc:
                    # Never sent: a truncated or misnamed entry must not reach the device.
                    self._record(op, UpdateResult(rpc_code.INVALID_ARGUMENT, str(exc)), report)
                    continue
                batch.append(op)
            results = await self.client.write(updates)
            for op, result in zip(batch, results, strict=True):
                self._record(op, result, report)
                if result.code in (rpc_code.ALREADY_EXISTS, rpc_code.NOT_FOUND):
                    stale.add(op.entry.table)
        if stale and reconcile:
            log.warning("the device disagrees with our view of %s; re-reading it", sorted(stale))
            await self._reread(stale)
            again = await self.apply(tables, deletes, reconcile=False)
            report.written += again.written
            report.failed += again.failed
            report.errors = again.errors
            report.causes = again.causes
            report.exhausted |= again.exhausted
            return report
        # A failed key with nothing left to do (its claim went, or what the device holds is
        # what is wanted) no longer fails; the others stay dirty so the next apply retries.
        for key in [k for k in self._failed_keys if self.desired(k) == self._installed.get(k)]:
            del self._failed_keys[key]
        self._log_rejected()
        self._dirty.update(self._failed_keys)
        for key, (code, reason) in self._failed_keys.items():
            cause = metrics.DEVICE_SMALLER if code == "RESOURCE_EXHAUSTED" else metrics.WRITE_FAILED
            for owner in self._claims.get(key, {}):
                if owner not in report.errors:
                    report.errors[owner] = reason
                    report.causes[owner] = cause
        self._report_conflicts(report)
        return report

    async def _reread(self, tables: set[str]) -> None:
        """Replace our view of these tables with what the device holds."""
        if any("#" in t for t in tables):
            await self.load_installed()  # action profiles: read everything back
        else:
            ids = [self.schema.table_id(t) for t in tables]
            fresh = [self.schema.decode(pb) for pb in await self.client.read_table_entries(ids)]
            for key in [k for k in self._installed if k[0] in tables]:
                self._drop(key)
            for entry in fresh:
                self._put(entry.key, entry)
            self._dirty.update(entry.key for entry in fresh)
            self._dirty.update(k for k in self._claims if k[0] in tables)
        for key in [k for k in self._failed_keys if k[0] in tables]:
            del self._failed_keys[key]

    def _record(self, op: Operation, result: UpdateResult, report: ApplyReport) -> None:
        key = op.entry.key
        if result.ok:
            report.written += 1
            self._failed_keys.pop(key, None)
            if op.type == DELETE:
                self._drop(key)
            else:
                self._put(key, op.entry)
            return
        report.failed += 1
        table = op.entry.table
        code = _code_name(result.code)
        reason = f"{code}: {result.message}"
        if result.code == rpc_code.RESOURCE_EXHAUSTED:
            # The device is smaller than its P4Info says: what it holds now is its size.
            held = self._on_device[table]
            if held < self.capacity.get(table, held + 1):
                log.error(
                    "%s holds %d entries, fewer than the %d declared; admitting no more",
                    table,
                    held,
                    self.capacity[table],
                )
                self.capacity[table] = held
                self.learned[table] = held
            reason = f"{table} full ({self.capacity[table]:,})"
            report.exhausted.update(self._claims.get(key, {}))
        self._rejected[(table, code)].append(str(op))
        self._failed_keys[key] = (code, reason)

    def _log_rejected(self) -> None:
        """One line per table and error code, never one per entry, and only when that table
        starts failing with that code: a retry failing the same way is counted, not logged,
        until the last such key is written or withdrawn (then one line with the count, if
        there were repeats)."""
        for (table, code), ops in sorted(self._rejected.items()):
            if (table, code) in self._failing:
                self._failing[(table, code)] += 1
                metrics.REPEATS.labels("rejected_updates").inc()
                log.debug(
                    "P4Runtime rejected %d update(s) to %s with %s again", len(ops), table, code
                )
                continue
            self._failing[(table, code)] = 0
            log.error(
                "P4Runtime rejected %d update%s to %s with %s; first: %s",
                len(ops),
                "" if len(ops) == 1 else "s",
                table,
                code,
                ops[0],
            )
        self._rejected.clear()
        still = {(key[0], code) for key, (code, _) in self._failed_keys.items()}
        for (table, code), repeats in list(self._failing.items()):
            if (table, code) not in still:
                del self._failing[(table, code)]
                if not repeats:
                    continue  # the line already logged says all there was
                log.info(
                    "P4Runtime updates to %s rejected with %s: none outstanding now "
                    "(%d repeat%s suppressed)",
                    table,
                    code,
                    repeats,
                    "" if repeats == 1 else "s",
                )

    def _report_conflicts(self, report: ApplyReport) -> None:
        for key in self._conflicted:
            claims = self._claims[key]
            winner = min(claims, key=repr)
            for owner, entry in claims.items():
                if entry != claims[winner] and owner not in report.errors:
                    report.errors[owner] = f"conflicts with {winner} over {entry.key}"
                    report.causes[owner] = metrics.CONFLICT


def _code_name(code: int) -> str:
    try:
        return rpc_code.Code.Name(code)  # type: ignore[arg-type]
    except ValueError:
        return str(code)
