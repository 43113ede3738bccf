"""List+watch of Services and EndpointSlices with the official client, raw JSON, reconnecting with backoff."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import kubernetes
import urllib3

log = logging.getLogger(__name__)

HTTP_GONE = 410


class Resource(Enum):
    """A watched resource: its name in logs and how the official client lists it."""

    SERVICES = "services"
    ENDPOINTSLICES = "endpointslices"


@dataclass(frozen=True)
class ListPage:
    """One page of a (re-)list, handed on as soon as it is read so the first routes go out early."""

    resource: Resource
    objects: list[Any]


@dataclass(frozen=True)
class Relisted:
    """Every object of a resource, after a (re-)list, each as the watcher's converter made it."""

    resource: Resource
    objects: list[Any]


@dataclass(frozen=True)
class Changed:
    """One watch event (ADDED, MODIFIED or DELETED) and its object, as the watcher's converter made it."""

    resource: Resource
    kind: str
    obj: Any


WatchEvent = ListPage | Relisted | Changed


@dataclass
class WatchStats:
    """Counters a watcher keeps for logs and metrics."""

    lists: int = 0
    watches: int = 0
    restarts: int = 0
    expired: int = 0
    events: int = 0


class Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): only a re-list helps."""


def make_api_client(kubeconfig: Path | None) -> Any:
    """An ApiClient: the given kubeconfig; else KUBECONFIG or ~/.kube/config; else the in-cluster account."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is not None:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), client_configuration=configuration
        )
    else:
        try:
            kubernetes.config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return kubernetes.client.ApiClient(configuration)


class Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng or random.Random()  # noqa: S311  (jitter, not cryptography)

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def _lines(response: Any) -> Iterator[bytes]:
    """The newline-separated JSON lines of a chunked watch response."""
    rest = b""
    for chunk in response.stream(amt=None, decode_content=False):
        *complete, rest = (rest + chunk).split(b"\n")
        for line in complete:
            if line.strip():
                yield line


class ResourceWatcher(threading.Thread):
    """Lists one resource, then watches it from the list's resourceVersion, forever, with bookmarks.

    410 Expired means a re-list; a dropped connection, a 5xx or a timeout means a new watch from the last
    resourceVersion seen, after a backoff. Nothing is ever forgotten while the API server is unreachable.
    """

    def __init__(
        self,
        resource: Resource,
        api_client: Any,
        sink: Callable[[WatchEvent], None],
        stop: threading.Event,
        *,
        convert: Callable[[dict[str, Any]], Any] = lambda obj: obj,
        label_selector: str = "",
        page_size: int = 500,
        watch_timeout: int = 300,
        request_timeout: float = 30.0,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(name=f"watch-{resource.value}", daemon=True)
        self.resource = resource
        self.sink = sink
        self.convert = convert  # applied as each object is read: a page's raw JSON is dropped at once
        self.stop_event = stop
        self.label_selector = label_selector
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.request_timeout = request_timeout
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.stats = WatchStats()
        self._call: Callable[..., Any]
        if resource is Resource.SERVICES:
            self._call = kubernetes.client.CoreV1Api(api_client).list_service_for_all_namespaces
        else:
            self._call = kubernetes.client.DiscoveryV1Api(api_client).list_endpoint_slice_for_all_namespaces
        self._response: Any = None

    def run(self) -> None:
        resource_version: str | None = None
        while not self.stop_event.is_set():
            try:
                if resource_version is None:
                    resource_version = self._list()
                resource_version = self._watch(resource_version)
                self.backoff.reset()
            except Expired:
                self.stats.expired += 1
                log.info("%s: resourceVersion %s expired (410); re-listing", self.resource.value, resource_version)
                resource_version = None
            except Exception as error:
                if self.stop_event.is_set():
                    break
                self.stats.restarts += 1
                if isinstance(error, kubernetes.client.ApiException) and error.status == HTTP_GONE:
                    self.stats.expired += 1
                    resource_version = None
                delay = self.backoff.next_delay()
                log.warning(
                    "%s: %s; retrying in %.1f s (announced routes stay)", self.resource.value, _brief(error), delay
                )
                self.stop_event.wait(delay)

    def close(self) -> None:
        """Stop soon: the caller has set the stop event; this ends a blocked watch read."""
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # best effort on a connection that may be gone
                response.shutdown()

    def _request(self, **arguments: Any) -> Any:
        if self.label_selector:
            arguments["label_selector"] = self.label_selector
        return self._call(_preload_content=False, **arguments)

    def _list(self) -> str:
        objects: list[Any] = []
        token: str | None = None
        resource_version = ""
        while True:
            arguments: dict[str, Any] = {"limit": self.page_size, "_request_timeout": self.request_timeout}
            if token:
                arguments["_continue"] = token
            response = self._request(**arguments)
            try:
                page = json.loads(response.data)
            finally:
                response.release_conn()
            metadata = page.get("metadata") or {}
            converted = [self.convert(item) for item in page.get("items") or []]
            del page  # the raw JSON of a page lives no longer than its conversion
            self.sink(ListPage(self.resource, converted))
            objects.extend(converted)
            resource_version = resource_version or str(metadata.get("resourceVersion", ""))
            token = metadata.get("continue")
            if not token:
                break
        self.stats.lists += 1
        log.info("%s: listed %d objects at resourceVersion %s", self.resource.value, len(objects), resource_version)
        self.sink(Relisted(self.resource, objects))
        return resource_version

    def _watch(self, resource_version: str) -> str:
        """Watch until the server ends the request; returns the last resourceVersion seen."""
        self.stats.watches += 1
        response = self._request(
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout,
            _request_timeout=(self.request_timeout, self.watch_timeout + self.request_timeout),
        )
        self._response = response
        try:
            for line in _lines(response):
                if self.stop_event.is_set():
                    break
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == HTTP_GONE:
                        raise Expired
                    raise kubernetes.client.ApiException(status=obj.get("code"), reason=obj.get("message"))
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    resource_version = str(version)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.stats.events += 1
                    self.sink(Changed(self.resource, kind, self.convert(obj)))
                    self.backoff.reset()
        finally:
            self._response = None
            response.release_conn()
        return resource_version


def _brief(error: BaseException) -> str:
    if isinstance(error, kubernetes.client.ApiException):
        return f"API server answered {error.status} {error.reason}"
    if isinstance(error, urllib3.exceptions.HTTPError):
        return f"connection problem: {type(error).__name__}"
    return f"{type(error).__name__}: {error}"
