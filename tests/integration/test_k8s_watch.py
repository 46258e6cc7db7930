"""KubeWatcher against a local API server speaking the Kubernetes list/watch protocol over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest
from aiohttp import web
from kubernetes_asyncio.client import ApiClient, Configuration

from felix_p4.k8s.source import KubeEvent
from felix_p4.k8s.watch import LIST_PAGE_SIZE, KubeWatcher

API_VERSION = {"Service": "v1", "EndpointSlice": "discovery.k8s.io/v1"}
TIMEOUT = 10.0


def service(name: str, namespace: str = "default", cluster_ip: str = "10.96.0.10") -> dict:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    }


def endpoint_slice(name: str, service_name: str, addresses: list[str], namespace="default"):
    return {
        "addressType": "IPv4",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "endpoints": [
            {"addresses": [address], "conditions": {"ready": True}, "nodeName": "node-1"}
            for address in addresses
        ],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def _changed(event: asyncio.Event, predicate: Callable[[], Any]) -> Callable[[], Any]:
    async def wait() -> Any:
        while True:
            event.clear()  # before checking, so a change between check and wait is not lost
            result = predicate()
            if result:
                return result
            await event.wait()

    return lambda: asyncio.wait_for(wait(), TIMEOUT)


@attrs.frozen
class Seen:
    """A request as the fake API server received it."""

    kind: str
    watch: bool
    path: str
    query: dict[str, str]
    headers: dict[str, str]


class FakeApiServer:
    """Services and EndpointSlices with one resourceVersion counter (as etcd has), history for
    watches, compaction (410 Gone), bookmarks, dropped connections and injected failures."""

    def __init__(self) -> None:
        self.rv = 100
        self.objects: dict[str, dict[tuple[str, str], dict]] = {"Service": {}, "EndpointSlice": {}}
        self.history: dict[str, list[tuple[int, str, dict]]] = {"Service": [], "EndpointSlice": []}
        self.compacted = 0  # watches from an older resourceVersion get 410 Gone
        self.gone_as_event = False  # 410 as an ERROR event on a 200 stream instead of HTTP 410
        self.requests: list[Seen] = []
        # Next answers per (kind, watch): an HTTP status, or ("event", code) for an ERROR event.
        self.failures: dict[tuple[str, bool], list[int | tuple[str, int]]] = {}
        self.streams: dict[str, list[asyncio.Queue]] = {"Service": [], "EndpointSlice": []}
        self.factory_calls = 0
        self._snapshots: dict[str, tuple[list[dict], int, int]] = {}
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        for kind, collection in (
            ("Service", "/api/v1/{ns}services"),
            ("EndpointSlice", "/apis/discovery.k8s.io/v1/{ns}endpointslices"),
        ):
            handler = self._handler(kind)
            app.router.add_get(collection.format(ns=""), handler)
            app.router.add_get(collection.format(ns="namespaces/{namespace}/"), handler)
        # Cancelling handlers on disconnect ends a stream the client closed, as a real server does.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1)
        await self._runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        for queues in self.streams.values():
            for queue in queues:
                queue.put_nowait(("end",))
        if self._runner is not None:
            await self._runner.cleanup()

    async def client_factory(self) -> ApiClient:
        self.factory_calls += 1
        return ApiClient(configuration=Configuration(host=self.url))

    # State changes, as controllers would make them.

    def add(self, kind: str, obj: dict, *, silently: bool = False) -> dict:
        return self._change(kind, "ADDED", obj, silently)

    def modify(self, kind: str, obj: dict, *, silently: bool = False) -> dict:
        return self._change(kind, "MODIFIED", obj, silently)

    def delete(self, kind: str, name: str, namespace="default", *, silently=False) -> dict:
        return self._change(kind, "DELETED", self.objects[kind][(namespace, name)], silently)

    def compact(self) -> None:
        self.compacted = self.rv

    def push_raw(self, kind: str, event_type: str, obj: dict) -> None:
        """An event as given, as a misbehaving server might replay it."""
        for queue in self.streams[kind]:
            queue.put_nowait(("raw", event_type, obj))

    def _change(self, kind: str, event_type: str, obj: dict, silently: bool) -> dict:
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj.update(kind=kind, apiVersion=API_VERSION[kind])
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if event_type == "DELETED":
            del self.objects[kind][key]
        else:
            self.objects[kind][key] = obj
        self.history[kind].append((self.rv, event_type, obj))
        if not silently:  # still in history: only open streams miss it
            for queue in self.streams[kind]:
                queue.put_nowait(("event", self.rv, event_type, obj))
        return obj

    # Stream commands; each waits until the kind has an open watch.

    async def bookmark(self, kind: str) -> None:
        await self._command(kind, ("bookmark",))

    async def end(self, kind: str) -> None:
        """Close the watch cleanly, as the server does at timeoutSeconds."""
        await self._command(kind, ("end",))

    async def drop(self, kind: str) -> None:
        """Cut the connection in the middle of an event."""
        await self._command(kind, ("drop",))

    async def _command(self, kind: str, command: tuple) -> None:
        await self.wait_for(lambda: self.streams[kind])
        for queue in self.streams[kind]:
            queue.put_nowait(command)

    async def wait_for(self, predicate: Callable[[], Any]) -> Any:
        return await _changed(self._changed, predicate)()

    async def wait_request(self, predicate: Callable[[Seen], bool], after: int = 0) -> Seen:
        """The first request at index >= `after` that matches."""
        return await self.wait_for(
            lambda: next((seen for seen in self.requests[after:] if predicate(seen)), None)
        )

    def watches(self, kind: str) -> list[Seen]:
        return [seen for seen in self.requests if seen.kind == kind and seen.watch]

    def lists(self, kind: str) -> list[Seen]:
        return [seen for seen in self.requests if seen.kind == kind and not seen.watch]

    # HTTP.

    def _handler(self, kind: str) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            watch = request.query.get("watch", "") in ("true", "True", "1")
            self.requests.append(
                Seen(kind, watch, request.path, dict(request.query), dict(request.headers))
            )
            self._changed.set()
            namespace = request.match_info.get("namespace")
            pending = self.failures.get((kind, watch))
            if pending:
                failure = pending.pop(0)
                if isinstance(failure, int):
                    return _status_response(failure, f"injected failure {failure}")
                return await _error_event_stream(request, failure[1])
            if watch:
                return await self._watch(request, kind, namespace)
            return self._list(request, kind, namespace)

        return handle

    def _list(self, request: web.Request, kind: str, namespace: str | None) -> web.Response:
        token = request.query.get("continue")
        if token:
            snapshot, rv, offset = self._snapshots.pop(token)
        else:
            # Items of a list carry no kind or apiVersion on the wire.
            snapshot = [
                {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
                for (ns, _), obj in sorted(self.objects[kind].items())
                if namespace in (None, ns)
            ]
            rv, offset = self.rv, 0
        limit = int(request.query.get("limit") or len(snapshot) or 1)
        metadata: dict[str, str] = {"resourceVersion": str(rv)}
        if offset + limit < len(snapshot):
            metadata["continue"] = f"page-{len(self.requests)}"
            self._snapshots[metadata["continue"]] = (snapshot, rv, offset + limit)
        body = {
            "kind": f"{kind}List",
            "apiVersion": API_VERSION[kind],
            "metadata": metadata,
            "items": snapshot[offset : offset + limit],
        }
        return web.json_response(body)

    async def _watch(
        self, request: web.Request, kind: str, namespace: str | None
    ) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion") or 0)
        if since < self.compacted:
            if self.gone_as_event:
                return await _error_event_stream(request, 410)
            return _status_response(410, f"too old resource version: {since} ({self.compacted})")
        queue: asyncio.Queue = asyncio.Queue()
        self.streams[kind].append(queue)
        self._changed.set()
        try:
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            sent = since
            replay = [("event", *entry) for entry in self.history[kind]]
            for command in replay:
                sent = await _write_event(response, command, sent, namespace)
            while True:
                command = await queue.get()
                if command[0] == "event":
                    sent = await _write_event(response, command, sent, namespace)
                elif command[0] == "raw":
                    await response.write(_line({"type": command[1], "object": command[2]}))
                elif command[0] == "bookmark":
                    metadata = {"resourceVersion": str(self.rv)}
                    obj = {"kind": kind, "apiVersion": API_VERSION[kind], "metadata": metadata}
                    await response.write(_line({"type": "BOOKMARK", "object": obj}))
                elif command[0] == "end":
                    await response.write_eof()
                    return response
                else:
                    await response.write(b'{"type": "ADDED", "object": {"meta')
                    assert request.transport is not None
                    request.transport.abort()
                    return response
        finally:
            self.streams[kind].remove(queue)
            self._changed.set()


async def _write_event(
    response: web.StreamResponse, command: tuple, sent: int, namespace: str | None
) -> int:
    _, rv, event_type, obj = command
    if rv > sent and namespace in (None, obj["metadata"]["namespace"]):
        await response.write(_line({"type": event_type, "object": obj}))
    return max(rv, sent)


def _status(code: int, message: str) -> dict:
    reason = {410: "Expired", 500: "InternalError", 401: "Unauthorized"}.get(code, "Unknown")
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _status_response(code: int, message: str) -> web.Response:
    return web.json_response(_status(code, message), status=code)


async def _error_event_stream(request: web.Request, code: int) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    message = "too old resource version" if code == 410 else "internal error"
    await response.write(_line({"type": "ERROR", "object": _status(code, message)}))
    await response.write_eof()
    return response


def _line(event: dict) -> bytes:
    return json.dumps(event).encode() + b"\n"


class Events:
    """The watcher's sink: events queue up for the test to wait on."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[KubeEvent] = asyncio.Queue()

    def sink(self, event: KubeEvent) -> None:
        self.queue.put_nowait(event)

    async def next(self) -> KubeEvent:
        return await asyncio.wait_for(self.queue.get(), TIMEOUT)

    async def take(self, count: int) -> list[KubeEvent]:
        return [await self.next() for _ in range(count)]

    async def until_synced(self) -> list[KubeEvent]:
        events = []
        while (event := await self.next()).type != "SYNCED":
            events.append(event)
        return events


def is_watch_of(kind: str, seen: Seen) -> bool:
    return seen.kind == kind and seen.watch


def summary(events: list[KubeEvent]) -> list[tuple[str, str, str]]:
    return [(e.type, e.kind, e.obj["metadata"]["name"]) for e in events]


class LogRecords(logging.Handler):
    """Records of felix_p4.k8s.watch, for waiting on a logged failure."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.changed.set()

    def warnings(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.WARNING]

    async def wait_for(self, predicate: Callable[[], Any]) -> Any:
        return await _changed(self.changed, predicate)()


@contextlib.asynccontextmanager
async def capture_logs() -> AsyncIterator[LogRecords]:
    logger = logging.getLogger("felix_p4.k8s.watch")
    handler, level = LogRecords(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextlib.asynccontextmanager
async def watching(server: FakeApiServer, **kwargs: Any) -> AsyncIterator[Events]:
    events = Events()
    kwargs.setdefault("api_client_factory", server.client_factory)
    watcher = KubeWatcher(backoff_max=0.05, **kwargs)
    task = asyncio.create_task(watcher.run(events.sink))
    try:
        yield events
    finally:
        if task.done():
            task.result()  # the watcher must not have ended on its own
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def run_with_server(scenario: Callable[[FakeApiServer], Any]) -> None:
    async def main() -> None:
        server = FakeApiServer()
        await server.start()
        try:
            await asyncio.wait_for(scenario(server), 3 * TIMEOUT)
        finally:
            await server.stop()

    asyncio.run(main())


def test_initial_list_emits_api_json_as_added_then_one_synced():
    async def scenario(server: FakeApiServer) -> None:
        server.add("Service", service("web", cluster_ip="10.96.0.10"))
        server.add("Service", service("db", "prod", cluster_ip="10.96.0.20"))
        server.add("EndpointSlice", endpoint_slice("web-abc", "web", ["10.65.0.3", "10.65.0.4"]))
        async with watching(server) as events:
            added = await events.until_synced()
            assert sorted(summary(added)) == [
                ("ADDED", "EndpointSlice", "web-abc"),
                ("ADDED", "Service", "db"),
                ("ADDED", "Service", "web"),
            ]
            by_name = {event.obj["metadata"]["name"]: event.obj for event in added}
            web_service = by_name["web"]
            assert web_service["kind"] == "Service" and web_service["apiVersion"] == "v1"
            assert web_service["spec"]["clusterIP"] == "10.96.0.10"
            assert web_service["spec"]["ports"][0]["targetPort"] == 8080
            web_slice = by_name["web-abc"]
            assert web_slice["apiVersion"] == "discovery.k8s.io/v1"
            assert web_slice["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
            assert web_slice["endpoints"][1]["conditions"]["ready"] is True
            assert web_slice["endpoints"][1]["addresses"] == ["10.65.0.4"]

            for kind in ("Service", "EndpointSlice"):
                seen = await server.wait_request(functools.partial(is_watch_of, kind))
                assert seen.query["resourceVersion"] == "103"  # the list's version
                assert seen.query["allowWatchBookmarks"].lower() == "true"
                assert 0 < int(seen.query["timeoutSeconds"]) <= 600
                assert "/namespaces/" not in seen.path

    run_with_server(scenario)


def test_watch_events_arrive_as_added_modified_deleted():
    async def scenario(server: FakeApiServer) -> None:
        async with watching(server) as events:
            assert await events.until_synced() == []
            await server.wait_request(functools.partial(is_watch_of, "Service"))
            server.add("Service", service("web"))
            server.modify("Service", service("web", cluster_ip="10.96.0.99"))
            server.add("EndpointSlice", endpoint_slice("web-1", "web", ["10.65.0.3"]))
            server.delete("Service", "web")
            got = await events.take(4)
            by_kind = {
                kind: [e for e in got if e.kind == kind] for kind in ("Service", "EndpointSlice")
            }
            assert summary(by_kind["Service"]) == [
                ("ADDED", "Service", "web"),
                ("MODIFIED", "Service", "web"),
                ("DELETED", "Service", "web"),
            ]
            assert by_kind["Service"][1].obj["spec"]["clusterIP"] == "10.96.0.99"
            assert summary(by_kind["EndpointSlice"]) == [("ADDED", "EndpointSlice", "web-1")]

    run_with_server(scenario)


def test_event_types_follow_what_the_consumer_has_seen():
    async def scenario(server: FakeApiServer) -> None:
        web_service = server.add("Service", service("web"))
        async with watching(server) as events:
            await events.until_synced()
            await server.wait_request(functools.partial(is_watch_of, "Service"))
            changed = copy.deepcopy(web_service)
            changed["spec"]["clusterIP"] = "10.96.0.77"
            server.push_raw("Service", "MODIFIED", web_service)  # what was listed: nothing new
            server.push_raw("Service", "ADDED", changed)  # known object: a modification
            server.push_raw("Service", "DELETED", service("never-seen"))
            server.add("Service", service("marker"))
            got = await events.take(2)
            assert summary(got) == [("MODIFIED", "Service", "web"), ("ADDED", "Service", "marker")]

    run_with_server(scenario)


def test_bookmark_moves_the_resume_point_of_the_next_watch():
    async def scenario(server: FakeApiServer) -> None:
        async with watching(server) as events:
            await events.until_synced()
            first = await server.wait_request(functools.partial(is_watch_of, "Service"))
            # Changes to the other kind advance the shared resourceVersion only.
            server.add("EndpointSlice", endpoint_slice("web-1", "web", ["10.65.0.3"]))
            await events.next()
            await server.bookmark("Service")
            await server.end("Service")
            index = server.requests.index(first) + 1
            again = await server.wait_request(functools.partial(is_watch_of, "Service"), index)
            assert first.query["resourceVersion"] == "100"
            assert again.query["resourceVersion"] == str(server.rv) == "101"

    run_with_server(scenario)


@pytest.mark.parametrize("gone_as", ["http-410", "error-event"])
def test_gone_relists_and_emits_only_the_difference(gone_as):
    async def scenario(server: FakeApiServer) -> None:
        server.gone_as_event = gone_as == "error-event"
        for name in ("a", "b", "c"):
            server.add("Service", service(name))
        server.add("EndpointSlice", endpoint_slice("a-1", "a", ["10.65.0.3"]))
        async with watching(server) as events:
            assert len(await events.until_synced()) == 4
            server.add("Service", service("before-gap"))
            assert summary([await events.next()]) == [("ADDED", "Service", "before-gap")]
            lists_before = len(server.lists("Service"))
            # The EndpointSlice watch is open before compaction, so only Service meets the gap.
            await server.wait_for(lambda: server.streams["EndpointSlice"])
            # Changes the watcher never sees as events, then history is compacted.
            server.delete("Service", "b", silently=True)
            server.modify("Service", service("a", cluster_ip="10.96.0.42"), silently=True)
            server.add("Service", service("d"), silently=True)
            server.compact()
            await server.end("Service")

            got = await events.take(3)
            assert summary(got) == [
                ("DELETED", "Service", "b"),
                ("MODIFIED", "Service", "a"),
                ("ADDED", "Service", "d"),
            ]
            assert got[1].obj["spec"]["clusterIP"] == "10.96.0.42"
            assert len(server.lists("Service")) == lists_before + 1
            resumed = await server.wait_request(
                lambda s: (
                    s.kind == "Service"
                    and s.watch
                    and s.query["resourceVersion"] == str(server.compacted)
                )
            )
            assert resumed.query["resourceVersion"] == str(server.rv)
            # The relist was a diff: no RESET, no second SYNCED, nothing repeated.
            server.add("Service", service("after-gap"))
            assert summary([await events.next()]) == [("ADDED", "Service", "after-gap")]
            assert len(server.lists("EndpointSlice")) == 1

    run_with_server(scenario)


def test_dropped_connection_resumes_from_the_last_version_without_repeats():
    async def scenario(server: FakeApiServer) -> None:
        async with capture_logs() as logs, watching(server) as events:
            await events.until_synced()
            server.add("Service", service("x"))
            x = await events.next()
            await server.drop("Service")
            resumed = await server.wait_request(
                lambda s: (
                    s.kind == "Service"
                    and s.watch
                    and s.query["resourceVersion"] == x.obj["metadata"]["resourceVersion"]
                )
            )
            assert resumed.query["resourceVersion"] == "101"
            server.add("Service", service("y"))
            assert summary([await events.next()]) == [("ADDED", "Service", "y")]
            assert len(server.lists("Service")) == 1  # resumed, not relisted
            assert len(logs.warnings()) == 1
            assert "Service" in logs.warnings()[0]

    run_with_server(scenario)


def test_server_errors_back_off_and_recover_with_one_log_line_each():
    async def scenario(server: FakeApiServer) -> None:
        server.add("Service", service("web"))
        server.failures[("Service", False)] = [500, 503, 429]
        server.failures[("Service", True)] = [500, ("event", 500)]
        server.failures[("EndpointSlice", False)] = [500]
        async with capture_logs() as logs, watching(server) as events:
            assert summary(await events.until_synced()) == [("ADDED", "Service", "web")]
            await server.wait_for(lambda: len(server.watches("Service")) == 3)
            # Retried watches resume from the listed version; the list is not repeated.
            assert [s.query["resourceVersion"] for s in server.watches("Service")] == ["101"] * 3
            assert len(server.lists("Service")) == 4
            server.add("Service", service("later"))
            assert summary([await events.next()]) == [("ADDED", "Service", "later")]
            warnings = logs.warnings()
            assert len([w for w in warnings if "Service" in w]) == 5
            assert len([w for w in warnings if "EndpointSlice" in w]) == 1
            assert "HTTP 429" in "\n".join(warnings)

    run_with_server(scenario)


def test_unauthorized_builds_a_new_client_from_configuration():
    async def scenario(server: FakeApiServer) -> None:
        server.failures[("Service", False)] = [401]
        async with watching(server) as events:
            await events.until_synced()
            # One client per kind, and one more for the kind whose credentials were refused.
            assert server.factory_calls == 3

    run_with_server(scenario)


def test_api_server_not_yet_listening_is_retried_until_it_is():
    async def main() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = FakeApiServer()
        server.url = f"http://127.0.0.1:{port}"
        server.add("Service", service("web"))
        try:
            async with capture_logs() as logs, watching(server) as events:
                await logs.wait_for(lambda: len(logs.warnings()) >= 2)
                assert "Cannot connect" in logs.warnings()[0]
                await server.start(port)
                assert summary(await events.until_synced()) == [("ADDED", "Service", "web")]
        finally:
            await server.stop()

    asyncio.run(main())


def test_large_lists_are_read_in_pages_and_emitted_whole():
    async def scenario(server: FakeApiServer) -> None:
        count = LIST_PAGE_SIZE + 1
        for index in range(count):
            server.add("EndpointSlice", endpoint_slice(f"s-{index:04}", "web", ["10.65.0.3"]))
        async with watching(server) as events:
            added = await events.until_synced()
            assert len({e.obj["metadata"]["name"] for e in added}) == count
            pages = server.lists("EndpointSlice")
            assert [p.query.get("limit") for p in pages] == [str(LIST_PAGE_SIZE)] * 2
            assert "continue" not in pages[0].query and pages[1].query["continue"]

    run_with_server(scenario)


def test_periodic_resync_repairs_a_change_the_watch_missed():
    async def scenario(server: FakeApiServer) -> None:
        server.add("Service", service("web"))
        async with watching(server, resync_seconds=0.2) as events:
            await events.until_synced()
            await server.wait_request(functools.partial(is_watch_of, "Service"))
            server.modify("Service", service("web", cluster_ip="10.96.0.5"), silently=True)
            event = await events.next()
            assert summary([event]) == [("MODIFIED", "Service", "web")]
            assert event.obj["spec"]["clusterIP"] == "10.96.0.5"

    run_with_server(scenario)


def test_namespace_restricts_the_watch_to_that_namespace():
    async def scenario(server: FakeApiServer) -> None:
        server.add("Service", service("web", "default"))
        server.add("Service", service("web", "prod"))
        server.add("EndpointSlice", endpoint_slice("web-1", "web", ["10.65.0.3"], "prod"))
        async with watching(server, namespace="prod") as events:
            added = await events.until_synced()
            assert {(e.kind, e.obj["metadata"]["namespace"]) for e in added} == {
                ("Service", "prod"),
                ("EndpointSlice", "prod"),
            }
            server.add("Service", service("other", "default"))
            server.add("Service", service("api", "prod"))
            event = await events.next()
            assert (event.obj["metadata"]["namespace"], event.obj["metadata"]["name"]) == (
                "prod",
                "api",
            )
            assert {s.path for s in server.requests} == {
                "/api/v1/namespaces/prod/services",
                "/apis/discovery.k8s.io/v1/namespaces/prod/endpointslices",
            }

    run_with_server(scenario)


def test_kubeconfig_file_points_the_watcher_at_its_server_with_its_token(tmp_path):
    async def scenario(server: FakeApiServer) -> None:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": server.url}}],
                    "users": [{"name": "felix", "user": {"token": "s3cret"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "felix"}}],
                    "current-context": "fake",
                }
            )
        )
        async with watching(server, kubeconfig=str(kubeconfig), api_client_factory=None) as events:
            await events.until_synced()
            assert {s.headers.get("Authorization") for s in server.requests} == {"Bearer s3cret"}

    run_with_server(scenario)


def test_an_exception_in_the_sink_ends_run_with_that_exception():
    async def scenario(server: FakeApiServer) -> None:
        server.add("Service", service("web"))

        def sink(event: KubeEvent) -> None:
            raise RuntimeError("consumer bug")

        watcher = KubeWatcher(api_client_factory=server.client_factory, backoff_max=0.05)
        with pytest.raises(RuntimeError, match="consumer bug"):
            await asyncio.wait_for(watcher.run(sink), TIMEOUT)

    run_with_server(scenario)
