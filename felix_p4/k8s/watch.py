"""Services and EndpointSlices from the Kubernetes API server: list, watch, relist as a diff."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError
from kubernetes_asyncio.client import ApiClient, Configuration, CoreV1Api, DiscoveryV1Api
from kubernetes_asyncio.config import load_incluster_config, load_kube_config

from felix_p4.k8s.source import (
    ADDED,
    DELETED,
    KINDS,
    MODIFIED,
    SYNCED,
    KubeEvent,
    KubeObjectError,
    ObjectKey,
    Sink,
    diff_events,
    object_key,
)

log = logging.getLogger(__name__)

API_VERSIONS = {"Service": "v1", "EndpointSlice": "discovery.k8s.io/v1"}

# The API server ends a watch after timeoutSeconds; a spread keeps a cluster's nodes from
# re-watching in lockstep. The client gives up reading a little later than that, which is how a
# connection that died without a FIN is noticed.
WATCH_TIMEOUT_SECONDS = (300, 360)
_WATCH_READ_GRACE = 30.0
_LIST_READ_TIMEOUT = 60.0
_CONNECT_TIMEOUT = 10.0
# Pages bound the API server's memory for one list; pages of one list are one snapshot.
LIST_PAGE_SIZE = 500
BACKOFF_INITIAL = 0.5
# A watch that ends cleanly this soon without a single event counts as a failure, so a server or
# proxy that closes watches at once is retried with backoff instead of in a tight loop.
_SHORT_WATCH_SECONDS = 1.0

_GONE = 410
_UNAUTHORIZED = 401


class KubeApiError(Exception):
    """The API server answered with an error status (HTTP, or a watch ERROR event)."""

    def __init__(self, status: int, message: str, *, via: str = "HTTP") -> None:
        super().__init__(f"{via} {status}: {message}")
        self.status = status


class KubeProtocolError(Exception):
    """The API server's answer is not what the list/watch protocol promises."""


class KubeConfigError(Exception):
    """No usable client configuration (kubeconfig or the pod's service account)."""


# What a kind's loop survives by retrying; anything else (the sink's own exceptions, our bugs)
# ends run().
_RETRYABLE = (
    KubeApiError,
    KubeProtocolError,
    KubeConfigError,
    aiohttp.ClientError,
    TimeoutError,
    OSError,
)

_ListFunction = Callable[..., Awaitable[Any]]


class KubeWatcher:
    """Lists and watches Services and EndpointSlices and emits them as KubeEvents.

    Each kind is listed (all namespaces unless `namespace`; in pages), emitted as ADDED, then
    watched from the list's resourceVersion with bookmarks. A watch that ends is resumed from the
    last resourceVersion seen (event or bookmark). When the API server no longer has that version
    (410 Gone, as HTTP status or watch ERROR event), the kind is listed again and only the
    difference to what was already emitted goes out (DELETED for vanished objects first, then
    ADDED/MODIFIED), so services stay programmed through a relist. With
    `resync_seconds` > 0 each kind is relisted that often the same way, which repairs anything a
    watch missed. Other failures (connection, 5xx, 429, malformed answers, configuration) are
    retried with capped exponential backoff and jitter, one log line each; a 401 also rebuilds
    the client from configuration, for credentials that expired.

    SYNCED is emitted once per run(), when both kinds have completed their first list; relists
    are diffs, so the consumer's state stays complete and no further SYNCED is needed.

    Event types follow what the consumer has seen, not the server's label: a re-delivered
    object identical to the emitted one produces nothing, an object already emitted is MODIFIED,
    and a deletion of an object never emitted produces nothing. Every object carries `kind` and
    `apiVersion` (list items lack them on the wire). The sink is called on the event loop and
    should return quickly; if it raises, run() raises that exception.
    """

    def __init__(
        self,
        *,
        kubeconfig: str | None = None,
        in_cluster: bool | None = None,
        namespace: str | None = None,
        resync_seconds: float = 0,
        backoff_max: float = 30.0,
        api_client_factory: Callable[[], Awaitable[ApiClient]] | None = None,
    ) -> None:
        self._kubeconfig = kubeconfig
        self._in_cluster = in_cluster
        self.namespace = namespace
        self.resync_seconds = resync_seconds
        self.backoff_max = backoff_max
        self._api_client_factory = api_client_factory or self._client_from_config

    async def run(self, sink: Sink) -> None:
        watches = [_KindWatch(kind, self) for kind in KINDS]
        synced = False

        def on_listed() -> None:
            nonlocal synced
            if not synced and all(watch.listed for watch in watches):
                synced = True
                sink(KubeEvent(SYNCED, "", {}))

        try:
            async with asyncio.TaskGroup() as group:
                for watch in watches:
                    group.create_task(watch.run(sink, on_listed))
        except BaseExceptionGroup as failed:
            # A kind's loop only ends when the sink (or a bug) raised; give our caller that
            # exception rather than a group of one.
            raise failed.exceptions[0] from None

    async def _new_client(self) -> ApiClient:
        try:
            return await self._api_client_factory()
        except Exception as exc:  # boundary: any failure to build a client is a config problem
            raise KubeConfigError(f"{type(exc).__name__}: {exc}") from exc

    async def _client_from_config(self) -> ApiClient:
        configuration = Configuration()
        in_cluster = self._in_cluster
        if in_cluster is None:
            # In a pod, unless a kubeconfig was named explicitly.
            in_cluster = self._kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ
        if in_cluster:
            # Sets a hook that re-reads the rotated service-account token before requests.
            load_incluster_config(client_configuration=configuration)
        else:
            await load_kube_config(
                config_file=self._kubeconfig,
                client_configuration=configuration,
                persist_config=False,  # never rewrite the user's kubeconfig
            )
        return ApiClient(configuration=configuration)


class _Backoff:
    """Capped exponential delays with jitter; reset when an operation makes progress."""

    def __init__(self, cap: float) -> None:
        self.failures = 0
        self._cap = cap

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        ceiling = min(self._cap, BACKOFF_INITIAL * 2 ** min(self.failures - 1, 30))
        # Jitter keeps a cluster's nodes from returning to a recovering API server in lockstep.
        return random.uniform(ceiling / 2, ceiling)


class _KindWatch:
    """List and watch of one kind: what was emitted, where to resume, the open watch."""

    def __init__(self, kind: str, owner: KubeWatcher) -> None:
        self.kind = kind
        self.listed = False
        self._owner = owner
        self._api_version = API_VERSIONS[kind]
        self._known: dict[ObjectKey, Mapping[str, Any]] = {}
        self._resource_version: str | None = None  # None: list before watching
        self._client: ApiClient | None = None
        self._list_function: _ListFunction | None = None
        self._stream: aiohttp.ClientResponse | None = None
        self._stream_opened_at = 0.0
        self._stream_events = 0
        self._resync_at: float | None = None
        self._backoff = _Backoff(owner.backoff_max)

    async def run(self, sink: Sink, on_listed: Callable[[], None]) -> None:
        try:
            while True:
                try:
                    events = await self._step()
                except _RETRYABLE as exc:
                    await self._recover(exc)
                    continue
                # The sink is called outside the retry handling: its exceptions are not ours.
                for event in events:
                    sink(event)
                if self.listed:
                    on_listed()
        finally:
            self._close_stream()
            await self._close_client()

    async def _step(self) -> list[KubeEvent]:
        """One unit of I/O (list, open a watch, or read one watch line) and its events."""
        if self._client is None:
            self._client = await self._owner._new_client()
            self._list_function = self._list_function_of(self._client)
        if self._resource_version is None:
            return await self._relist()
        if self._stream is None:
            await self._open_watch()
            return []
        return await self._read_watch_line(self._stream)

    def _list_function_of(self, client: ApiClient) -> _ListFunction:
        namespace = self._owner.namespace
        if self.kind == "Service":
            core = CoreV1Api(client)
            if namespace:
                return functools.partial(core.list_namespaced_service, namespace)
            return core.list_service_for_all_namespaces
        discovery = DiscoveryV1Api(client)
        if namespace:
            return functools.partial(discovery.list_namespaced_endpoint_slice, namespace)
        return discovery.list_endpoint_slice_for_all_namespaces

    async def _request(
        self, timeout: aiohttp.ClientTimeout, **params: Any
    ) -> aiohttp.ClientResponse:
        assert self._list_function is not None
        # Unparsed responses: the consumer wants the API's JSON, not the client's model objects.
        response: aiohttp.ClientResponse = await self._list_function(
            **params, _preload_content=False, _request_timeout=timeout
        )
        if response.status != 200:
            try:
                body = await response.read()
            finally:
                response.release()
            raise _http_error(response.status, body)
        return response

    async def _relist(self) -> list[KubeEvent]:
        self._close_stream()
        timeout = aiohttp.ClientTimeout(sock_connect=_CONNECT_TIMEOUT, sock_read=_LIST_READ_TIMEOUT)
        items: list[Any] = []
        continue_token: str | None = None
        while True:
            response = await self._request(timeout, limit=LIST_PAGE_SIZE, _continue=continue_token)
            try:
                body = await response.read()
            finally:
                response.release()
            page = _json_object(body, "list response")
            metadata = page.get("metadata")
            page_items = page.get("items") or []
            if not isinstance(metadata, dict) or not isinstance(page_items, list):
                raise KubeProtocolError(f"{self.kind} list without metadata or items")
            items.extend(page_items)
            continue_token = metadata.get("continue") or None
            if continue_token is None:
                break
        resource_version = metadata.get("resourceVersion")
        if not isinstance(resource_version, str) or not resource_version:
            raise KubeProtocolError(f"{self.kind} list without metadata.resourceVersion")
        current: dict[ObjectKey, Mapping[str, Any]] = {}
        for item in items:
            obj = self._typed(item)
            current[object_key(obj)] = obj
        events = diff_events(self._known, current)
        log.info(
            "kubernetes %s: listed %d at resourceVersion %s (%d changes)",
            self.kind,
            len(current),
            resource_version,
            len(events),
        )
        self._known = current
        self._resource_version = resource_version
        self.listed = True
        # Not progress for the backoff: only the watch that follows proves the listed version
        # usable, so a server that answers every watch with 410 is not relisted in a tight loop.
        if self._owner.resync_seconds > 0:
            self._resync_at = asyncio.get_running_loop().time() + self._owner.resync_seconds
        return events

    async def _open_watch(self) -> None:
        low, high = WATCH_TIMEOUT_SECONDS
        server_timeout = random.randint(low, high)
        timeout = aiohttp.ClientTimeout(
            sock_connect=_CONNECT_TIMEOUT, sock_read=server_timeout + _WATCH_READ_GRACE
        )
        self._stream = await self._request(
            timeout,
            watch=True,
            resource_version=self._resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=server_timeout,
        )
        self._stream_opened_at = asyncio.get_running_loop().time()
        self._stream_events = 0

    async def _read_watch_line(self, stream: aiohttp.ClientResponse) -> list[KubeEvent]:
        resync = asyncio.timeout_at(self._resync_at)
        try:
            async with resync:
                line = await stream.content.readline()
        except TimeoutError:
            if not resync.expired():
                raise
            log.info("kubernetes %s: periodic resync", self.kind)
            self._close_stream()
            self._resource_version = None
            return []
        except (ValueError, HttpProcessingError) as exc:  # a line longer than aiohttp's buffer
            raise KubeProtocolError(f"watch event too large: {exc}") from exc
        if not line:
            return self._watch_ended()
        if not line.endswith(b"\n"):
            raise KubeProtocolError("watch stream ended inside an event")
        if not line.strip():
            return []
        return self._on_watch_event(_json_object(line, "watch event"))

    def _watch_ended(self) -> list[KubeEvent]:
        self._close_stream()
        lived = asyncio.get_running_loop().time() - self._stream_opened_at
        if self._stream_events == 0 and lived < _SHORT_WATCH_SECONDS:
            raise KubeProtocolError("the API server closed the watch at once")
        self._backoff.reset()
        return []

    def _on_watch_event(self, event: Mapping[str, Any]) -> list[KubeEvent]:
        event_type = event.get("type")
        obj = event.get("object")
        if not isinstance(event_type, str) or not isinstance(obj, Mapping):
            raise KubeProtocolError(f"watch event without type or object: {str(event)[:200]}")
        if event_type == "ERROR":
            raise _status_error(obj)
        self._stream_events += 1
        self._backoff.reset()
        if event_type == "BOOKMARK":
            # A bookmark only moves the resume point; it carries no object.
            resource_version = _resource_version(obj)
            if resource_version is None:
                raise KubeProtocolError(f"{self.kind} bookmark without a resourceVersion")
            self._resource_version = resource_version
            return []
        if event_type not in (ADDED, MODIFIED, DELETED):
            raise KubeProtocolError(f"unknown watch event type {event_type!r}")
        obj = self._typed(obj)
        key = object_key(obj)
        resource_version = _resource_version(obj)
        if resource_version is not None:
            self._resource_version = resource_version
        before = self._known.get(key)
        if event_type == DELETED:
            if before is None:
                return []
            del self._known[key]
            return [KubeEvent(DELETED, self.kind, obj)]
        if before == obj:
            return []
        self._known[key] = obj
        return [KubeEvent(ADDED if before is None else MODIFIED, self.kind, obj)]

    def _typed(self, item: Any) -> Mapping[str, Any]:
        """The object with kind and apiVersion, which list items lack on the wire."""
        if not isinstance(item, Mapping):
            raise KubeProtocolError(f"{self.kind} that is not an object: {str(item)[:200]}")
        obj = item
        if "kind" not in item or "apiVersion" not in item:
            obj = {"apiVersion": self._api_version, "kind": self.kind, **item}
        try:
            object_key(obj)
        except KubeObjectError as exc:
            raise KubeProtocolError(str(exc)) from exc
        return obj

    async def _recover(self, exc: BaseException) -> None:
        self._close_stream()
        status = exc.status if isinstance(exc, KubeApiError) else None
        if status == _UNAUTHORIZED:
            # Credentials expired (e.g. an exec plugin's token): build a client from config again.
            await self._close_client()
        first_failure = self._backoff.failures == 0
        delay = self._backoff.next_delay()
        if status == _GONE:
            self._resource_version = None
            if first_failure:
                # Our resume point aged out of the API server's history: relist at once.
                log.info("kubernetes %s: %s; relisting", self.kind, exc)
                return
        log.warning(
            "kubernetes %s: %s: %s; retrying in %.2f s",
            self.kind,
            type(exc).__name__,
            exc,
            delay,
        )
        await asyncio.sleep(delay)

    def _close_stream(self) -> None:
        if self._stream is not None:
            # close(), not release(): an unfinished watch body must not go back to the pool.
            self._stream.close()
            self._stream = None

    async def _close_client(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            self._list_function = None
            await client.close()


def _resource_version(obj: Mapping[str, Any]) -> str | None:
    metadata = obj.get("metadata")
    value = metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None
    return value if isinstance(value, str) and value else None


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise KubeProtocolError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise KubeProtocolError(f"{what} is not a JSON object")
    return value


def _http_error(status: int, body: bytes) -> KubeApiError:
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    if not isinstance(message, str):
        # Proxies answer in HTML over several lines; the log wants one.
        message = " ".join(body.decode("utf-8", "replace").split())[:200]
    return KubeApiError(status, message or "no message")


def _status_error(status: Mapping[str, Any]) -> KubeApiError:
    code = status.get("code")
    message = status.get("message") or status.get("reason") or "watch ERROR event"
    # A Status without a code is still a server-side failure; retry it like a 500.
    return KubeApiError(code if isinstance(code, int) else 500, str(message), via="watch ERROR")
