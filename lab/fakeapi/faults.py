"""Request counters per resource and category, and the injected failures the next requests are answered with."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal

from lab.fakeapi.wire import RESOURCES, RequestCategory, Resource


@dataclass(slots=True)
class _InjectedFailures:
    remaining: int
    status: int
    only: Literal["list", "watch"] | None


class RequestCounters:
    """What the server was asked (lists, lists served, watches, failures injected) and what it must fail next."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._list_requests = dict.fromkeys((resource.plural for resource in RESOURCES), 0)
        self._lists_served = dict.fromkeys((resource.plural for resource in RESOURCES), 0)
        self._watch_requests = dict.fromkeys((resource.plural for resource in RESOURCES), 0)
        self._injected_failure_count = 0
        self._injected_failures: _InjectedFailures | None = None

    def fail_next(self, count: int, status: int = 500, *, only: str | None = None) -> None:
        """Answer the next ``count`` API requests (only lists or only watches if asked) with ``status``."""
        if only not in (None, "list", "watch"):
            raise ValueError(f"only must be 'list', 'watch' or None, not {only!r}")
        category: Literal["list", "watch"] | None = "list" if only == "list" else "watch" if only else None
        if count < 0 or not 400 <= status <= 599:
            raise ValueError("count must be >= 0 and status an HTTP error status")
        with self._lock:
            self._injected_failures = _InjectedFailures(count, status, category) if count else None

    def count_request(self, resource: Resource, category: RequestCategory) -> None:
        with self._lock:
            if category == "list":
                self._list_requests[resource.plural] += 1
            elif category == "watch":
                self._watch_requests[resource.plural] += 1

    def count_list_served(self, resource: Resource) -> None:
        with self._lock:
            self._lists_served[resource.plural] += 1

    def take_injected_failure(self, category: RequestCategory) -> int | None:
        """The status to answer this request with, if a failure is pending for it."""
        with self._lock:
            failures = self._injected_failures
            if failures is None or (failures.only is not None and failures.only != category):
                return None
            failures.remaining -= 1
            if failures.remaining <= 0:
                self._injected_failures = None
            self._injected_failure_count += 1
            return failures.status

    def snapshot(self) -> dict[str, Any]:
        """The counters as ``stats()`` reports them."""
        with self._lock:
            return {
                "list_requests": dict(self._list_requests),
                "lists_served": dict(self._lists_served),
                "watch_requests": dict(self._watch_requests),
                "injected_failures": self._injected_failure_count,
            }
