"""The main loop's batching: a lone change goes out at once, a burst is gathered into one diff."""

from __future__ import annotations

import copy
import queue
import re
import time
from collections.abc import Iterator
from pathlib import Path

from announcer.convert import Converted, ObjectKind
from announcer.daemon import _gather
from announcer.kube import Changed, Resource
from announcer.model import Family
from announcer.reconcile import Action, Command
from announcer.state import Answered, LoopEvent, Wake
from lab.fakeapi import FakeApiServer
from tests.exabgp_double import CONFIG, V6_PEER, ExaBgpDouble
from tests.factories import service


def change(number: int) -> LoopEvent:
    item = Converted(ObjectKind.SERVICE, ("default", f"svc-{number}"), None)
    return Changed(Resource.SERVICES, "ADDED", item)


ACK = Answered(Command("announce route 198.51.100.1/32 next-hop self", Action.ANNOUNCE, Family.IPV4, ()), accepted=True)


class Arrivals(queue.Queue[LoopEvent]):
    """A real queue that records every wait the loop makes, and, while `upcoming` holds events, lets the next one
    arrive during each timed wait (as a watcher thread would within the wait)."""

    def __init__(self, upcoming: Iterator[LoopEvent] | None = None) -> None:
        super().__init__()
        self.upcoming = upcoming
        self.waits: list[float | None] = []

    def get(self, block: bool = True, timeout: float | None = None) -> LoopEvent:
        if block:
            self.waits.append(timeout)
            if self.upcoming is not None and self.empty():
                arriving = next(self.upcoming, None)
                if arriving is not None:
                    self.put(arriving)
        return super().get(block, timeout)


def test_a_lone_change_is_handed_on_without_waiting_for_the_batch_delay() -> None:
    events = Arrivals(iter([change(2)]))  # would arrive during a wait, if the loop waited
    events.put(change(1))
    assert _gather(events, 0.5, batch_delay=60.0) == [change(1)]
    assert events.waits == [0.5]  # only the wait for the change itself: none for the batch delay


def test_acks_and_wake_ups_queued_with_a_change_do_not_make_it_wait() -> None:
    events = Arrivals(iter([change(2)]))
    for event in (ACK, change(1), Wake(), ACK):
        events.put(event)
    batch = _gather(events, 0.5, batch_delay=60.0)
    assert batch[:2] == [ACK, change(1)] and len(batch) == 4
    assert events.waits == [0.5]


def test_a_burst_is_gathered_while_its_changes_keep_arriving_within_the_batch_delay() -> None:
    later = [change(number) for number in range(3, 40)]
    events = Arrivals(iter(later))
    events.put(change(1))
    events.put(change(2))
    batch = _gather(events, 0.5, batch_delay=0.05, burst_limit=60.0)
    assert batch == [change(1), change(2), *later]
    assert events.waits[0] == 0.5 and all(wait is not None and 0 < wait <= 0.05 for wait in events.waits[1:])
    assert len(events.waits) == 1 + len(later) + 1  # the last wait ran out: the burst was over


def test_a_burst_that_does_not_end_is_cut_at_the_burst_limit() -> None:
    endless = (change(number) for number in range(3, 10**9))
    events = Arrivals(endless)
    events.put(change(1))
    events.put(change(2))
    batch = _gather(events, 0.5, batch_delay=0.05, burst_limit=0.05)
    assert batch[:2] == [change(1), change(2)] and len(batch) > 2
    assert batch == [change(number) for number in range(1, len(batch) + 1)]  # in order, none lost
    assert next(endless) == change(len(batch) + 1)  # the next ones wait for the next batch


def test_without_a_batch_delay_a_burst_is_what_is_already_queued() -> None:
    events = Arrivals(iter([change(3)]))
    events.put(change(1))
    events.put(change(2))
    assert _gather(events, 0.5, batch_delay=0.0) == [change(1), change(2)]
    assert events.waits == [0.5]


def test_nothing_queued_returns_nothing_after_the_first_wait() -> None:
    events = Arrivals()
    assert _gather(events, 0.01, batch_delay=60.0) == []
    assert events.waits == [0.01]


BURST = 200


def test_a_burst_of_changes_reaching_the_process_together_goes_out_in_lines_of_many_prefixes(tmp_path: Path) -> None:
    """The whole process (real client over real HTTP, the ExaBGP double): 200 Services created while the watch
    is cut reach the announcer together when it resumes, and are announced in a few bulk lines, not one each
    (applying a lone change at once must not cost a burst its coalescing; the rule itself is pinned above)."""
    with FakeApiServer(bookmark_interval=0.5).start() as api:
        exabgp = ExaBgpDouble(tmp_path, api.url, copy.deepcopy(CONFIG)).start()
        try:
            exabgp.wait_for(lambda: "show adj-rib out extensive" in exabgp.lines, what="the first sync")
            api.set_unreachable(None)
            for number in range(BURST):
                api.apply(service(f"svc-{number}", [f"2001:db8:96::{number + 1:x}"]))
            api.set_reachable()
            exabgp.wait_for(lambda: len(exabgp.prefixes(V6_PEER)) == BURST, timeout=30.0, what="every /128")
            lines = [line for line in exabgp.lines if " announce " in line]
            sizes = [len(re.findall(r"/128", line)) for line in lines]
            assert sum(sizes) == BURST
            assert len(lines) < BURST // 4, sizes  # one line per change would be 200
            assert max(sizes) >= BURST // 10, sizes
            assert exabgp.errors == []
        finally:
            exabgp.stop()


def test_changes_that_come_while_exabgp_has_lines_to_answer_go_out_together_once_it_answered(tmp_path: Path) -> None:
    """The whole process against a slow ExaBGP (each line answered 0.4 s after the previous one): 15 Services
    created 30 ms apart, each alone in the announcer's queue. The first goes out at once; the others come while
    its line awaits its answer and go out together after it, not one line each up to the ack window (8)."""
    with FakeApiServer(bookmark_interval=0.5).start() as api:
        exabgp = ExaBgpDouble(tmp_path, api.url, copy.deepcopy(CONFIG), ack_delay=0.4).start()
        try:
            exabgp.wait_for(lambda: "show adj-rib out extensive" in exabgp.lines, timeout=30.0, what="the first sync")
            exabgp.wait_quiet(1.0, timeout=30.0)
            for number in range(15):
                api.apply(service(f"svc-{number}", [f"2001:db8:97::{number + 1:x}"]))
                time.sleep(0.03)
            exabgp.wait_for(lambda: len(exabgp.prefixes(V6_PEER)) == 15, timeout=30.0, what="every /128")
            sizes = [len(re.findall(r"/128", line)) for line in exabgp.lines if " announce " in line]
            assert sum(sizes) == 15
            assert sizes[0] == 1, sizes  # a lone change with nothing in flight is not held back
            assert len(sizes) <= 5, sizes  # without holding changes back while lines await answers: 9 or more
            assert exabgp.errors == []
        finally:
            exabgp.stop()
