"""Per-peer status: built on the main loop, served as session metrics and /status, printed by `announcer status`."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Protocol

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from announcer.model import Family, IPAddress, Prefix, family_of
from announcer.reconcile import Holdings
from announcer.sessions import Sessions, SessionState


class PeerState(Protocol):
    """What the status reads of the daemon's Announcer (on the main loop's thread)."""

    @property
    def announced(self) -> Holdings: ...

    @property
    def sessions(self) -> Sessions: ...

    @property
    def retry(self) -> Mapping[IPAddress, set[Prefix]]: ...

    @property
    def retry_at(self) -> Mapping[IPAddress, float]: ...

    @property
    def clock(self) -> Callable[[], float]: ...


@dataclass(frozen=True)
class PeerStatus:
    """One peer as /status shows it. `since`: Unix time it last went down or up (None: not known yet); `routes`:
    prefixes ExaBGP holds in its adj-rib-out for the peer (sent while the session is up, re-sent when it comes back);
    `pending_retries`: prefixes it refused, to be sent again in `retry_in` s (None: none scheduled)."""

    peer: str
    family: str
    state: str
    since: float | None
    changes: int
    last_down_reason: str
    routes: int
    pending_retries: int
    retry_in: float | None


@dataclass(frozen=True)
class Snapshot:
    """Every configured peer, and the prefixes of each family some peer holds."""

    peers: tuple[PeerStatus, ...] = ()
    routes: tuple[tuple[str, int], ...] = ()


class PeerBoard:
    """The status of every peer, rebuilt by the main loop after each pass (`refresh`); `snapshot` is replaced as a
    whole, so the HTTP thread reads it at any time."""

    def __init__(self, state: PeerState) -> None:
        self._state = state
        self._per_peer: dict[IPAddress, int] = {}
        self._per_family: dict[Family, int] = dict.fromkeys(Family, 0)
        self.snapshot = Snapshot()
        self.refresh(recount=True)

    def refresh(self, *, recount: bool) -> None:
        """Sessions and retries as they are now; the route counts too when `recount` (one walk over every route)."""
        state = self._state
        if recount:
            self._per_peer, self._per_family = state.announced.counts()
        now = state.clock()
        peers = []
        for peer, session in state.sessions.current.items():
            at = state.retry_at.get(peer)
            peers.append(
                PeerStatus(
                    peer=str(peer),
                    family=family_of(peer).value,
                    state=session.state.value,
                    since=session.since,
                    changes=session.changes,
                    last_down_reason=session.last_down_reason,
                    routes=self._per_peer.get(peer, 0),
                    pending_retries=len(state.retry.get(peer, ())),
                    retry_in=None if at is None else round(max(at - now, 0.0), 1),
                )
            )
        routes = tuple((family.value, count) for family, count in self._per_family.items())
        self.snapshot = Snapshot(tuple(peers), routes)


class SessionCollector:
    """The session metrics, read at scrape time from the board's snapshot."""

    def __init__(self, board: PeerBoard) -> None:
        self.board = board

    def collect(self) -> Iterable[Metric]:
        labels = ["peer", "family"]
        up = GaugeMetricFamily(
            "announcer_bgp_session_up", "1 while the BGP session to the peer is established, else 0.", labels=labels
        )
        state = GaugeMetricFamily(
            "announcer_bgp_session_state",
            "1 for the session's current state (unknown: ExaBGP has not said yet; down; connected: TCP up, OPEN not "
            "yet exchanged; up: established), 0 for the others.",
            labels=[*labels, "state"],
        )
        changes = CounterMetricFamily(
            "announcer_bgp_session_changes",
            "Changes of the session between down and up since the announcer started (learning the first state and "
            "connect attempts that never establish are not counted).",
            labels=labels,
        )
        routes = GaugeMetricFamily(
            "announcer_bgp_peer_routes",
            "Prefixes ExaBGP holds in its adj-rib-out for the peer (sent while the session is up). Recounted at most "
            "once a second.",
            labels=labels,
        )
        retries = GaugeMetricFamily(
            "announcer_bgp_peer_pending_retries",
            "Prefixes the peer's commands were refused for (ExaBGP answered 'error'), waiting to be sent again.",
            labels=labels,
        )
        for peer in self.board.snapshot.peers:
            key = [peer.peer, peer.family]
            up.add_metric(key, 1 if peer.state == SessionState.UP.value else 0)
            for name in SessionState:
                state.add_metric([*key, name.value], 1 if peer.state == name.value else 0)
            changes.add_metric(key, peer.changes)
            routes.add_metric(key, peer.routes)
            retries.add_metric(key, peer.pending_retries)
        yield from (up, state, changes, routes, retries)


def status_document(
    snapshot: Snapshot, *, ready: tuple[bool, str], exabgp_version: str | None, last_error: tuple[float, str] | None
) -> dict[str, object]:
    """/status as a JSON-ready document."""
    return {
        "ready": ready[0],
        "readiness": ready[1].strip(),
        "exabgp_version": exabgp_version,
        "routes": dict(snapshot.routes),
        "last_error": None if last_error is None else {"at": last_error[0], "message": last_error[1]},
        "peers": [asdict(peer) for peer in snapshot.peers],
    }


# --- `announcer status`: the client ----------------------------------------------------------------------------------
class StatusUnavailable(Exception):
    """The running announcer's /status could not be read (a sentence saying why)."""


def status_url(address: tuple[str, int]) -> str:
    """The /status URL for metrics.listen's (host, port), a wildcard host read on loopback."""
    host, port = address
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104  (a wildcard mapped, not bound)
    return f"http://[{host}]:{port}/status" if ":" in host else f"http://{host}:{port}/status"


def fetch_status(url: str, timeout: float) -> dict[str, object]:
    """GET the /status document; StatusUnavailable naming the URL and the cause."""
    if not url.startswith(("http://", "https://")):
        raise StatusUnavailable(f"{url}: not an http:// or https:// URL")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310  (scheme checked above)
            document = json.loads(response.read().decode())
    except urllib.error.HTTPError as error:
        raise StatusUnavailable(f"{url}: HTTP {error.code} (an announcer older than /status?)") from None
    except (OSError, ValueError) as error:
        raise StatusUnavailable(f"{url}: {getattr(error, 'reason', None) or error}") from None
    if not isinstance(document, dict):
        raise StatusUnavailable(f"{url}: not a status document")
    return document


def _ago(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def render_status_table(document: Mapping[str, object], now: float | None = None) -> str:
    """The document as plain text: a header, a table of peers, routes per family, the last error."""
    now = time.time() if now is None else now
    lines = [f"{document.get('exabgp_version') or 'ExaBGP version unknown'}; {document.get('readiness', '')}"]
    rows = [("PEER", "FAMILY", "STATE", "FOR", "CHANGES", "ROUTES", "RETRIES", "LAST DOWN")]
    peers = document.get("peers")
    for peer in peers if isinstance(peers, list) else []:
        if not isinstance(peer, dict):
            continue
        since = peer.get("since")
        retries = str(peer.get("pending_retries", 0))
        if peer.get("retry_in") is not None:
            retries += f" (in {peer['retry_in']}s)"
        rows.append(
            (
                str(peer.get("peer")),
                str(peer.get("family")),
                str(peer.get("state")),
                _ago(now - since) if isinstance(since, int | float) else "-",
                str(peer.get("changes", 0)),
                str(peer.get("routes", 0)),
                retries,
                str(peer.get("last_down_reason") or "-"),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        lines.append("  ".join([*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]]))
    routes = document.get("routes")
    if isinstance(routes, dict):
        lines.append("routes held: " + ", ".join(f"{family} {count}" for family, count in routes.items()))
    error = document.get("last_error")
    if isinstance(error, dict):
        at = error.get("at")
        when = f"{_ago(now - at)} ago" if isinstance(at, int | float) else "?"
        lines.append(f"last error ({when}): {error.get('message')}")
    else:
        lines.append("last error: none")
    return "\n".join(lines) + "\n"
