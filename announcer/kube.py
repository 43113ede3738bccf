"""List+watch of Services, EndpointSlices and this Node with the official client: typed events, paging, resume."""

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
from typing import Generic, Literal, Protocol, TypeAlias, TypeVar, cast

import kubernetes
import urllib3

from announcer.decode import field as _field
from announcer.decode import object_name, object_version, read_event, read_page
from announcer.shapes import ObjectShape

log = logging.getLogger(__name__)

HTTP_GONE = 410
HTTP_NOT_FOUND = 404
HTTP_REFUSED = (401, 403)  # Unauthorized, Forbidden: retried, but never a passing fault
_FORBIDDEN_HINT = (
    " (the announcer's account may not {verb} {resource}: see deploy/base/rbac.yaml; a restarting API server"
    " also answers 403 until its authorizer is ready)"
)
T = TypeVar("T")


class Resource(Enum):
    """A watched resource: its name in logs and how the official client lists it."""

    SERVICES = "services"
    ENDPOINTSLICES = "endpointslices"
    NODES = "nodes"  # only this node's own, by field selector (issue #11)


@dataclass(frozen=True)
class ListPage(Generic[T]):
    """One page of a (re-)list, handed on as soon as it is read so the first routes go out early."""

    resource: Resource
    objects: list[T]


@dataclass(frozen=True)
class Relisted(Generic[T]):
    """Every object of a resource, after a (re-)list, each as the watcher's converter made it."""

    resource: Resource
    objects: list[T]


ChangeKind = Literal["ADDED", "MODIFIED", "DELETED"]
_CHANGES: dict[str, ChangeKind] = {"ADDED": "ADDED", "MODIFIED": "MODIFIED", "DELETED": "DELETED"}


@dataclass(frozen=True)
class Changed(Generic[T]):
    """One watch event (ADDED, MODIFIED or DELETED) and its object, as the watcher's converter made it."""

    resource: Resource
    kind: ChangeKind
    obj: T


WatchEvent: TypeAlias = ListPage[T] | Relisted[T] | Changed[T]


@dataclass
class WatchStats:
    """Counters a watcher keeps for logs and metrics."""

    lists: int = 0
    watches: int = 0
    restarts: int = 0
    expired: int = 0
    events: int = 0
    skipped: int = 0
    failing: str = ""  # why the last list or watch request failed; "" once one succeeds
    refused: bool = False  # that failure was a 401 or 403: credentials or RBAC, not a passing fault


class Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): only a re-list helps."""


class WatchError(Exception):
    """The API server ended a watch with an ERROR event other than 410."""


class _Response(Protocol):
    """The parts of urllib3's response that a list or a watch reads (the client answers untyped)."""

    data: bytes

    def stream(self, amt: int | None = None, decode_content: bool | None = None) -> Iterator[bytes]: ...

    def release_conn(self) -> None: ...

    def shutdown(self) -> None: ...


class _RestResponse(Protocol):
    """The client's REST-layer answer: its status, and urllib3's response unread."""

    status: int
    response: _Response

    def read(self) -> bytes: ...


_Query: TypeAlias = list[tuple[str, str | int | bool]]


class _ApiClient(Protocol):
    """The parts of kubernetes.client.ApiClient a request is built and sent with (configuration, auth, transport)."""

    def param_serialize(
        self,
        method: str,
        resource_path: str,
        path_params: dict[str, str] | None = None,
        query_params: _Query | None = None,
        header_params: dict[str, str] | None = None,
        *,
        auth_settings: list[str] | None = None,
    ) -> tuple[str, str, dict[str, str], None, list[tuple[str, str]]]: ...

    def call_api(
        self,
        method: str,
        url: str,
        header_params: dict[str, str] | None = None,
        body: None = None,
        post_params: list[tuple[str, str]] | None = None,
        _request_timeout: float | tuple[float, float] | None = None,
    ) -> _RestResponse: ...


# Every request the announcer makes, as the generated client's methods build them (kubernetes >= 37, OpenAPI
# Generator 7): deploy/'s ClusterRole grants exactly these (tests/test_deploy.py reads this table), and
# tests/test_kube_requests.py checks them against CoreV1Api/DiscoveryV1Api on the wire.
COLLECTIONS: dict[Resource, str] = {
    Resource.SERVICES: "/api/v1/services",  # CoreV1Api.list_service_for_all_namespaces: list, watch
    Resource.ENDPOINTSLICES: "/apis/discovery.k8s.io/v1/endpointslices",  # DiscoveryV1Api.list_endpoint_slice_...
    Resource.NODES: "/api/v1/nodes",  # CoreV1Api.list_node: list, watch
}
NODE = "/api/v1/nodes/{name}"  # CoreV1Api.read_node: get
# Read once at a stop, in the pod's own namespace (a Role, not the ClusterRole): is a next pod coming (handover.py)?
POD = "/api/v1/namespaces/{namespace}/pods/{name}"  # CoreV1Api.read_namespaced_pod: get
DAEMON_SET = "/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}"  # AppsV1Api.read_namespaced_daemon_set: get
NAMESPACED_GETS = (POD, DAEMON_SET)
# The list calls' keyword arguments and their query names, in the order the generated methods send them.
_QUERY_NAMES = (
    ("allow_watch_bookmarks", "allowWatchBookmarks"),
    ("_continue", "continue"),
    ("field_selector", "fieldSelector"),
    ("label_selector", "labelSelector"),
    ("limit", "limit"),
    ("resource_version", "resourceVersion"),
    ("timeout_seconds", "timeoutSeconds"),
    ("watch", "watch"),
)
_ACCEPT = {"Accept": "application/json"}  # what the generated methods choose: the first JSON type they accept
_AUTH = ["BearerToken"]  # the only auth setting of the Kubernetes API's generated methods


class KubeApi:
    """List, watch and read requests, built and sent as the official client's generated methods would send them.

    Only the client's configuration, authentication and transport are used (ApiClient.param_serialize and
    call_api): the generated API classes cost ~0.4 CPU s and ~20 MB to import, for three URLs.
    """

    def __init__(self, api_client: object) -> None:
        self._client = cast(_ApiClient, api_client)

    def _get(
        self, path: str, path_params: dict[str, str] | None, query: _Query, timeout: float | tuple[float, float]
    ) -> _Response:
        """One GET; non-2xx raises ApiException, as the generated methods do with _preload_content=False."""
        method, url, headers, body, post_params = self._client.param_serialize(
            "GET", path, path_params, query, dict(_ACCEPT), auth_settings=list(_AUTH)
        )
        answer = self._client.call_api(method, url, headers, body, post_params, _request_timeout=timeout)
        if not 200 <= answer.status <= 299:
            answer.read()
            raise kubernetes.client.ApiException.from_response(http_resp=answer, body=None, data=None)
        return answer.response

    def request(
        self,
        resource: Resource,
        *,
        label_selector: str = "",
        field_selector: str = "",
        timeout: float | tuple[float, float],
        **arguments: str | int | bool,
    ) -> _Response:
        """One list or watch request; the body is read by the caller (never deserialised by the client)."""
        if label_selector:
            arguments["label_selector"] = label_selector
        if field_selector:
            arguments["field_selector"] = field_selector
        unknown = set(arguments) - {keyword for keyword, _ in _QUERY_NAMES}
        if unknown:
            raise TypeError(f"not a list parameter: {', '.join(sorted(unknown))}")
        query: _Query = [(name, arguments[keyword]) for keyword, name in _QUERY_NAMES if keyword in arguments]
        return self._get(COLLECTIONS[resource], None, query, timeout)

    def read_node(self, name: str, timeout: float) -> object | None:
        """One Node as raw JSON (GET), or None if the API server answers 404 (no such Node)."""
        return self._read(NODE, {"name": name}, timeout)

    def read_pod(self, namespace: str, name: str, timeout: float) -> object | None:
        """One Pod as raw JSON (GET), or None if the API server answers 404."""
        return self._read(POD, {"namespace": namespace, "name": name}, timeout)

    def read_daemonset(self, namespace: str, name: str, timeout: float) -> object | None:
        """One apps/v1 DaemonSet as raw JSON (GET), or None if the API server answers 404."""
        return self._read(DAEMON_SET, {"namespace": namespace, "name": name}, timeout)

    def _read(self, path: str, path_params: dict[str, str], timeout: float) -> object | None:
        try:
            response = self._get(path, path_params, [], timeout)
        except kubernetes.client.ApiException as error:
            if error.status == HTTP_NOT_FOUND:
                return None
            raise
        try:
            document: object = json.loads(response.data)
        finally:
            response.release_conn()
        return document


def node_field_selector(node: str) -> str:
    """The field selector that lists and watches only this node's Node object."""
    return f"metadata.name={node}"


def make_api_client(kubeconfig: Path | None) -> object:
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
    client: object = kubernetes.client.ApiClient(configuration)
    return client


@dataclass(frozen=True)
class Page:
    """One page of a list: its objects (raw JSON values, or their shapes), and the list's resourceVersion."""

    items: list[object]
    resource_version: str


def list_pages(
    api: KubeApi,
    resource: Resource,
    *,
    label_selector: str = "",
    field_selector: str = "",
    page_size: int = 500,
    request_timeout: float = 30.0,
    shape: type[ObjectShape] | None = None,
) -> Iterator[Page]:
    """Every object of a resource, page by page (limit/continue), each request bounded by request_timeout.

    The resourceVersion is the first page's: the continue tokens keep every page in that snapshot. Items are raw
    JSON values; with a `shape`, each item is decoded on its own into it, raw JSON where it does not fit (decode.py).
    """
    token = ""
    resource_version = ""
    while True:
        arguments: dict[str, str | int | bool] = {"limit": page_size}
        if token:
            arguments["_continue"] = token
        response = api.request(
            resource,
            label_selector=label_selector,
            field_selector=field_selector,
            timeout=request_timeout,
            **arguments,
        )
        try:
            items, version, continued = read_page(response.data, shape)
        finally:
            response.release_conn()
        del response  # the page's bytes live no longer than its decoding
        resource_version = resource_version or str(version or "")
        yield Page(items, resource_version)
        if not isinstance(continued, str) or not continued:
            return
        token = continued


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


def _lines(response: _Response) -> Iterator[bytes]:
    """The newline-separated JSON lines of a chunked watch response."""
    rest = b""
    for chunk in response.stream(amt=None, decode_content=False):
        *complete, rest = (rest + chunk).split(b"\n")
        for line in complete:
            if line.strip():
                yield line


class ResourceWatcher(threading.Thread, Generic[T]):
    """Lists one resource, then watches it from the list's resourceVersion, forever, with bookmarks.

    Each object is converted (`convert`, owned by convert.py) as it is read: raw JSON, or with a `shape` that shape
    (raw JSON where it does not fit, decode.py), so `convert` must read both. The sink gets typed events. 410
    Expired means a re-list. A dropped connection, a read timeout, a 5xx or an ERROR event means a new watch from
    the last resourceVersion seen (an event's or a BOOKMARK's), after a backoff: never a replay of events already
    handed on. One object that cannot be converted is logged and skipped; the watch goes on.
    """

    def __init__(
        self,
        resource: Resource,
        api_client: object,
        sink: Callable[[WatchEvent[T]], None],
        stop: threading.Event,
        *,
        convert: Callable[[object], T],
        shape: type[ObjectShape] | None = None,
        label_selector: str = "",
        field_selector: str = "",
        page_size: int = 500,
        watch_timeout: int = 300,
        request_timeout: float = 30.0,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(name=f"watch-{resource.value}", daemon=True)
        self.resource = resource
        self.api = api_client if isinstance(api_client, KubeApi) else KubeApi(api_client)
        self.sink = sink
        self.convert = convert  # applied as each object is read: a page's raw JSON is dropped at once
        self.shape = shape
        self.stop_event = stop
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.request_timeout = request_timeout
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.stats = WatchStats()
        self.resource_version: str | None = None  # progress: the last resourceVersion handed on; None: re-list
        self._response: _Response | None = None

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                if self.resource_version is None:
                    self.resource_version = self._list()
                self._watch()
                self.backoff.reset()
            except Expired:
                self.stats.expired += 1
                log.info("%s: resourceVersion %s expired (410); re-listing", self.resource.value, self.resource_version)
                self.resource_version = None
            except Exception as error:
                if self.stop_event.is_set():
                    break
                self.stats.restarts += 1
                status = error.status if isinstance(error, kubernetes.client.ApiException) else None
                if status == HTTP_GONE:
                    self.stats.expired += 1
                    self.resource_version = None
                self.stats.failing = _brief(error)
                self.stats.refused = status in HTTP_REFUSED
                delay = self.backoff.next_delay()
                log.log(
                    logging.ERROR if self.stats.refused else logging.WARNING,
                    "%s: %s; watching again from resourceVersion %s in %.1f s (announced routes stay)",
                    self.resource.value,
                    describe_failure(error, self.resource),
                    self.resource_version,
                    delay,
                )
                self.stop_event.wait(delay)

    def close(self) -> None:
        """Stop soon: the caller has set the stop event; this ends a blocked watch read."""
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # best effort on a connection that may be gone
                response.shutdown()

    def _convert(self, obj: object) -> list[T]:
        """[converted], or [] after one log line naming the object if the converter raised (a bug, never fatal)."""
        try:
            return [self.convert(obj)]
        except Exception as error:
            self.stats.skipped += 1
            log.error(
                "%s %s skipped: cannot be converted (%s: %s)",
                self.resource.value,
                object_name(obj),
                type(error).__name__,
                error,
            )
            return []

    def _list(self) -> str:
        objects: list[T] = []
        resource_version = ""
        for page in list_pages(
            self.api,
            self.resource,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            page_size=self.page_size,
            request_timeout=self.request_timeout,
            shape=self.shape,
        ):
            resource_version = resource_version or page.resource_version
            converted = [value for item in page.items for value in self._convert(item)]
            del page  # the raw JSON of a page lives no longer than its conversion
            self.sink(ListPage(self.resource, converted))
            objects.extend(converted)
        self.stats.lists += 1
        self._succeeded()
        log.info("%s: listed %d objects at resourceVersion %s", self.resource.value, len(objects), resource_version)
        self.sink(Relisted(self.resource, objects))
        return resource_version

    def _watch(self) -> None:
        """Watch until the server ends the request, advancing self.resource_version with every event read."""
        self.stats.watches += 1
        response = self.api.request(
            self.resource,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            timeout=(self.request_timeout, self.watch_timeout + self.request_timeout),
            watch=True,
            resource_version=self.resource_version or "",
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout,
        )
        self._response = response
        self._succeeded()
        try:
            for line in _lines(response):
                if self.stop_event.is_set():
                    break
                self._event(*read_event(line, self.shape))
        finally:
            self._response = None
            response.release_conn()

    def _succeeded(self) -> None:
        if self.stats.failing:
            log.info("%s: the API server answers again (after: %s)", self.resource.value, self.stats.failing)
        self.stats.failing, self.stats.refused = "", False

    def _event(self, kind: object, obj: object) -> None:
        if kind == "ERROR":
            code = _field(obj, "code")
            if code == HTTP_GONE:
                raise Expired
            raise WatchError(f"ERROR event {code}: {_field(obj, 'message')}")
        version = object_version(obj)
        change = _CHANGES.get(kind) if isinstance(kind, str) else None
        if change is not None:
            self.stats.events += 1
            for value in self._convert(obj):
                self.sink(Changed(self.resource, change, value))
            self.backoff.reset()
        if version:
            self.resource_version = str(version)  # after the hand-on: a cut now resumes after this event


def describe_failure(error: BaseException, resource: Resource, verb: str = "list and watch") -> str:
    """A failed request in one sentence, with what to check when the API server refused it."""
    status = error.status if isinstance(error, kubernetes.client.ApiException) else None
    hint = _FORBIDDEN_HINT.format(resource=resource.value, verb=verb) if status == 403 else ""
    hint = " (the kubeconfig's or the ServiceAccount's token is not accepted)" if status == 401 else hint
    return _brief(error) + hint


def _brief(error: BaseException) -> str:
    if isinstance(error, kubernetes.client.ApiException):
        return f"API server answered {error.status} {error.reason}"
    if isinstance(error, urllib3.exceptions.HTTPError):
        return f"connection problem: {type(error).__name__}"
    return f"{type(error).__name__}: {error}"


def describe_read_failure(error: BaseException, what: str) -> str:
    """A failed GET of `what` (nodes, pods, apps/daemonsets) in one sentence; a 403 names the role that grants it."""
    status = error.status if isinstance(error, kubernetes.client.ApiException) else None
    role = "ClusterRole" if what == "nodes" else "Role"
    hint = f" (the announcer's account may not get {what}: see deploy/base/rbac.yaml's {role})" if status == 403 else ""
    return _brief(error) + hint
