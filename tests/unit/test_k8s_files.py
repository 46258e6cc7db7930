"""Services and EndpointSlices from files: document shapes, change detection, bad edits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from felix_p4.k8s.source import FileSource, KubeEvent, KubeObjectError, objects_from_documents

TIMEOUT = 10.0

WEB: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
}
DB: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "db", "namespace": "prod"},
    "spec": {"clusterIP": "10.96.0.20"},
}
WEB_SLICE: dict[str, Any] = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "addressType": "IPv4",
    "metadata": {
        "name": "web-1",
        "namespace": "default",
        "labels": {"kubernetes.io/service-name": "web"},
    },
    "endpoints": [{"addresses": ["10.65.0.3"], "conditions": {"ready": True}}],
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
}
CONFIG_MAP: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}


def names(objects) -> list[tuple[str, str, str]]:
    return [(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects]


def summary(events: list[KubeEvent]) -> list[tuple[str, str, str]]:
    return [(e.type, e.kind, e.obj["metadata"]["name"] if e.obj else "") for e in events]


def test_documents_may_be_objects_lists_and_v1_lists_and_other_kinds_are_ignored():
    documents = [
        WEB,
        [WEB_SLICE, CONFIG_MAP],
        {"apiVersion": "v1", "kind": "List", "items": [DB, CONFIG_MAP]},
        None,  # an empty YAML document
    ]
    assert names(objects_from_documents(documents)) == [
        ("Service", "default", "web"),
        ("EndpointSlice", "default", "web-1"),
        ("Service", "prod", "db"),
    ]


def test_typed_list_items_without_kind_take_it_from_the_list():
    # The API server sends a list's items without kind or apiVersion.
    item = {k: v for k, v in WEB_SLICE.items() if k not in ("kind", "apiVersion")}
    document = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "items": [item]}
    (obj,) = objects_from_documents([document])
    assert obj["kind"] == "EndpointSlice" and obj["apiVersion"] == "discovery.k8s.io/v1"
    assert obj["endpoints"][0]["conditions"]["ready"] is True


def test_an_object_without_a_namespace_is_in_default():
    without = {**WEB, "metadata": {"name": "web"}}
    (obj,) = objects_from_documents([without])
    assert obj["metadata"]["namespace"] == "default"
    assert "namespace" not in without["metadata"]  # the caller's document is left alone


@pytest.mark.parametrize(
    "document",
    [{**WEB, "metadata": {"namespace": "default"}}, {**WEB, "metadata": None}, "web"],
)
def test_unidentifiable_documents_are_errors(document):
    with pytest.raises(KubeObjectError):
        objects_from_documents([document])


def write(path: Path, text: str) -> None:
    """Replace the file atomically, as editors and ConfigMap volumes do."""
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


def write_yaml(path: Path, *documents) -> None:
    write(path, yaml.safe_dump_all(documents))


class Source:
    """A running FileSource and the events it has emitted so far."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[KubeEvent] = asyncio.Queue()

    async def next(self) -> KubeEvent:
        return await asyncio.wait_for(self.queue.get(), TIMEOUT)

    async def take(self, count: int) -> list[KubeEvent]:
        return [await self.next() for _ in range(count)]


@contextlib.asynccontextmanager
async def running(*paths: Path) -> AsyncIterator[Source]:
    source = Source()
    task = asyncio.create_task(FileSource(paths, poll_seconds=0.01).run(source.queue.put_nowait))
    try:
        yield source
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_file_source_emits_every_object_then_synced(tmp_path):
    services = tmp_path / "services.yaml"
    write_yaml(services, WEB, CONFIG_MAP, None, [DB])
    slices = tmp_path / "slices.json"
    write(slices, json.dumps({"apiVersion": "v1", "kind": "List", "items": [WEB_SLICE]}))

    async def main() -> None:
        async with running(services, slices) as source:
            assert summary(await source.take(4)) == [
                ("ADDED", "Service", "web"),
                ("ADDED", "Service", "db"),
                ("ADDED", "EndpointSlice", "web-1"),
                ("SYNCED", "", ""),
            ]

    asyncio.run(main())


def test_changed_file_emits_the_difference(tmp_path):
    path = tmp_path / "objects.yaml"
    write_yaml(path, WEB, DB, WEB_SLICE)
    moved = {**WEB, "spec": {**WEB["spec"], "clusterIP": "10.96.0.99"}}
    new = {**DB, "metadata": {"name": "cache", "namespace": "prod"}}

    async def main() -> None:
        async with running(path) as source:
            await source.take(4)
            write_yaml(path, moved, WEB_SLICE, new, CONFIG_MAP)
            changes = await source.take(3)
            assert summary(changes) == [
                ("DELETED", "Service", "db"),
                ("MODIFIED", "Service", "web"),
                ("ADDED", "Service", "cache"),
            ]
            assert changes[1].obj["spec"]["clusterIP"] == "10.96.0.99"
            # Rewriting the same objects changes nothing the consumer sees.
            write_yaml(path, moved, WEB_SLICE, new)
            write_yaml(path, moved, new)
            assert summary([await source.next()]) == [("DELETED", "EndpointSlice", "web-1")]

    asyncio.run(main())


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    def emit(self, record: logging.LogRecord) -> None:
        self.queue.put_nowait(record.getMessage())

    async def next(self) -> str:
        return await asyncio.wait_for(self.queue.get(), TIMEOUT)


@contextlib.asynccontextmanager
async def logged_errors() -> AsyncIterator[Errors]:
    errors = Errors()
    logger = logging.getLogger("felix_p4.k8s.source")
    logger.addHandler(errors)
    try:
        yield errors
    finally:
        logger.removeHandler(errors)


def test_invalid_yaml_keeps_the_last_good_content(tmp_path):
    path = tmp_path / "objects.yaml"
    write_yaml(path, WEB, DB)
    moved = {**WEB, "spec": {**WEB["spec"], "clusterIP": "10.96.0.99"}}

    async def main() -> None:
        async with logged_errors() as errors, running(path) as source:
            await source.take(3)
            write(path, "kind: Service\nmetadata: {name: web\n  spec: [")
            message = await errors.next()
            assert str(path) in message and "keeping its last good content (2 objects)" in message
            assert "\n" not in message
            write_yaml(path, moved, DB)
            # Compared with the last good content: db was never withdrawn, web changed.
            assert summary([await source.next()]) == [("MODIFIED", "Service", "web")]
            assert errors.queue.empty()

    asyncio.run(main())


def test_a_file_that_appears_later_is_read_then(tmp_path):
    present, later = tmp_path / "present.yaml", tmp_path / "later.yaml"
    write_yaml(present, WEB)

    async def main() -> None:
        async with logged_errors() as errors, running(present, later) as source:
            assert str(later) in await errors.next()
            assert summary(await source.take(2)) == [
                ("ADDED", "Service", "web"),
                ("SYNCED", "", ""),
            ]
            write_yaml(later, WEB_SLICE)
            assert summary([await source.next()]) == [("ADDED", "EndpointSlice", "web-1")]

    asyncio.run(main())


def test_a_later_file_wins_for_the_same_object(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    write_yaml(first, WEB)
    write_yaml(second, {**WEB, "spec": {"clusterIP": "10.96.0.77"}})

    async def main() -> None:
        async with running(first, second) as source:
            (added, _) = await source.take(2)
            assert added.obj["spec"]["clusterIP"] == "10.96.0.77"

    asyncio.run(main())
