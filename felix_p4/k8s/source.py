"""Service/EndpointSlice change events, the source protocol, and the source reading files."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs
import yaml

log = logging.getLogger(__name__)

KINDS = ("Service", "EndpointSlice")

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
SYNCED = "SYNCED"

# (kind, namespace, name): how the API server identifies a namespaced object.
ObjectKey = tuple[str, str, str]

# PyYAML's C loader is several times faster on large object lists; it is optional in PyYAML.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@attrs.frozen(slots=True)
class KubeEvent:
    """One change to a source's objects.

    `obj` is the object as the API server returns it (JSON, camelCase keys) with `kind` and
    `apiVersion` always present; `{}` for SYNCED. Sources compare later versions
    against the objects they emitted, so consumers must not mutate them.
    """

    type: str  # ADDED | MODIFIED | DELETED | SYNCED
    kind: str  # one of KINDS; "" for SYNCED
    obj: Mapping[str, Any]


Sink = Callable[[KubeEvent], None]


class KubeSource(Protocol):
    async def run(self, sink: Sink) -> None:
        """Emit the current objects, then SYNCED, then changes; runs until cancelled."""


class KubeObjectError(ValueError):
    """A document holds a Service or EndpointSlice that cannot be identified."""


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(name, str) or not name:
        raise KubeObjectError(f"{obj.get('kind')} without metadata.name")
    namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
    if not isinstance(namespace, str) or not namespace:
        raise KubeObjectError(f"{obj.get('kind')} {name} without metadata.namespace")
    return (str(obj.get("kind")), namespace, name)


def objects_from_documents(docs: Iterable[Any]) -> list[Mapping[str, Any]]:
    """The Services and EndpointSlices in `docs`, in order.

    A document is one object, a list of documents, or a List (`kind: List` or a typed list such
    as `ServiceList`, whose items the API server sends without `kind`). Other kinds are ignored.
    An object without a namespace gets "default", as `kubectl apply` would give it.
    """
    found: list[Mapping[str, Any]] = []
    for doc in docs:
        _collect(doc, found)
    return found


def _collect(doc: Any, found: list[Mapping[str, Any]]) -> None:
    if doc is None:  # an empty YAML document, e.g. after a trailing `---`
        return
    if isinstance(doc, list):
        for item in doc:
            _collect(item, found)
        return
    if not isinstance(doc, Mapping):
        raise KubeObjectError(f"expected an object or a list, got {type(doc).__name__}")
    kind = doc.get("kind")
    items = doc.get("items")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(items, list):
        item_kind = kind.removesuffix("List")
        for item in items:
            if item_kind in KINDS and isinstance(item, Mapping) and "kind" not in item:
                item = {"apiVersion": doc.get("apiVersion"), "kind": item_kind, **item}
            _collect(item, found)
        return
    if kind in KINDS:
        found.append(_with_namespace(doc))


def _with_namespace(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        raise KubeObjectError(f"{obj.get('kind')} without metadata")
    if not metadata.get("namespace"):
        obj = {**obj, "metadata": {**metadata, "namespace": "default"}}
    object_key(obj)
    return obj


def diff_events(
    emitted: Mapping[ObjectKey, Mapping[str, Any]], current: Mapping[ObjectKey, Mapping[str, Any]]
) -> list[KubeEvent]:
    """Events that take a consumer holding `emitted` to `current`.

    Deletions come first so that what they free (a cluster IP, table space) is free before the
    additions that may reuse it.
    """
    events = [KubeEvent(DELETED, key[0], obj) for key, obj in emitted.items() if key not in current]
    for key, obj in current.items():
        before = emitted.get(key)
        if before is None:
            events.append(KubeEvent(ADDED, key[0], obj))
        elif before != obj:
            events.append(KubeEvent(MODIFIED, key[0], obj))
    return events


@attrs.frozen(slots=True)
class _LoadedFile:
    signature: tuple[int, int, int] | None  # (mtime_ns, size, inode) of the last read; None: absent
    objects: tuple[Mapping[str, Any], ...]  # from the last read that succeeded


class FileSource:
    """Objects from YAML/JSON files (a document may be a single object, a list, or a v1 List).

    Emits ADDED for every Service/EndpointSlice, then SYNCED; then polls the files and emits the
    ADDED/MODIFIED/DELETED difference when one changed (mtime, size or inode, so an atomic
    replace is seen too). Objects are keyed by kind/namespace/name; where files repeat a key,
    the later file wins. A file that cannot be read or parsed is logged once and its last good
    content kept, so a half-written edit never withdraws services.
    """

    def __init__(self, paths: Sequence[str | Path], poll_seconds: float = 2.0) -> None:
        self._paths = [Path(path) for path in paths]
        self._poll_seconds = poll_seconds
        self._files: dict[Path, _LoadedFile] = {}

    async def run(self, sink: Sink) -> None:
        emitted: dict[ObjectKey, Mapping[str, Any]] = {}
        self._reload_changed()
        synced = False
        while True:
            current = self._current()
            for event in diff_events(emitted, current):
                sink(event)
            emitted = current
            if not synced:
                sink(KubeEvent(SYNCED, "", {}))
                synced = True
            while not self._reload_changed():
                await asyncio.sleep(self._poll_seconds)

    def _reload_changed(self) -> bool:
        changed = False
        for path in self._paths:
            signature = _signature(path)
            previous = self._files.get(path)
            if previous is not None and previous.signature == signature:
                continue
            kept = previous.objects if previous is not None else ()
            try:
                objects = tuple(_read_objects(path))
            except (OSError, ValueError, yaml.YAMLError) as exc:
                reason = " ".join(str(exc).split())  # YAML errors span lines; we log one line
                log.error(
                    "kubernetes objects file %s (services.files): %s; keeping its last good "
                    "content (%d objects)",
                    path,
                    reason,
                    len(kept),
                )
                # Remember the signature so the same bad version is reported once, not per poll.
                self._files[path] = _LoadedFile(signature, kept)
                continue
            self._files[path] = _LoadedFile(signature, objects)
            changed = changed or objects != kept
        return changed

    def _current(self) -> dict[ObjectKey, Mapping[str, Any]]:
        current: dict[ObjectKey, Mapping[str, Any]] = {}
        for path in self._paths:
            loaded = self._files.get(path)
            for obj in loaded.objects if loaded is not None else ():
                key = object_key(obj)
                if key in current and current[key] != obj:
                    log.warning("kubernetes objects file %s: %s repeated; this one wins", path, key)
                current[key] = obj
        return current


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _read_objects(path: Path) -> list[Mapping[str, Any]]:
    text = path.read_text()
    if path.suffix == ".json":
        return objects_from_documents([json.loads(text)])
    return objects_from_documents(yaml.load_all(text, Loader=_YAML_LOADER))
