"""Model-based fuzzing of the route state machine: random changes, answers, time and sessions; invariants checked."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from announcer.kube import Changed, Resource
from announcer.model import family_of
from announcer.sessions import NeighbourEvent, SessionState
from tests.conftest import make_config
from tests.factories import service
from tests.test_state import Harness, RecordingSpeaker, held_line, svc

# A few Services over few prefixes (two share one address, so two claims meet on a prefix), each absent, plain, or
# with a MED: every change is an announce, a re-announce with other attributes, or a withdraw.
ADDRESSES = [["198.51.100.10", "2001:db8:96::a"], ["198.51.100.11"], ["198.51.100.11"], ["2001:db8:96::b"]]
VARIANTS = [None, {}, {"bgp.announcer.io/med": "5"}]
PEERS = ["192.0.2.1", "192.0.2.5", "2001:db8::1"]


_LINE = re.compile(r"^((?:neighbor \S+(?: , )?)+) (announce|withdraw) (route|attributes) (.*)$")


def version(index: int, variant: dict[str, str] | None) -> dict[str, Any]:
    return service(f"s{index}", ADDRESSES[index], annotations=variant)


class ModelExaBgp(RecordingSpeaker):
    """The recording speaker with an adj-rib-out per peer that the answered lines change as ExaBGP 5.0 does: an
    accepted line everywhere; a refused one route by route, peer by peer in configuration order, up to the peer it
    stopped at. 'show adj-rib out extensive' reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.rib: dict[str, dict[str, str]] = {peer: {} for peer in PEERS}
        self.lost: list[tuple[str, Callable[[bool], None] | None]] = []  # given up on: reported refused at the resync

    def query(self, line: str, timeout: float) -> list[str]:
        """ExaBGP answers it in order: after every line written before it (here all accepted)."""
        self.lines.append(line)
        while self.awaiting:
            self.answer_oldest(True, 0)
        return [held_line(peer, prefix, extra) for peer, table in self.rib.items() for prefix, extra in table.items()]

    def lose_answers(self, applied: int, *, at_once: bool) -> None:
        """An ack timeout: ExaBGP applied the oldest `applied` lines in flight (their answers lost); the pipe's
        'reset' dropped the rest. They are reported refused at once (the pipe gave up while writing) or by the
        next sync's take_resync (it gave up there); that sync re-reads the adj-rib-out."""
        for line, _ in self.awaiting[:applied]:
            self.apply(line, None)
        self.lost += self.awaiting
        self.awaiting = []
        self.resync = True
        if at_once:
            self.give_up()

    def give_up(self) -> None:
        given_up, self.lost = self.lost, []
        for _, ack in given_up:
            if ack is not None:
                ack(False)

    def take_resync(self) -> bool:
        if self.resync:
            self.give_up()
        resync, self.resync = self.resync, False
        return resync

    def answer_oldest(self, accepted: bool, stop: int) -> None:
        """Answer the oldest line awaiting one; refused, it stopped at its `stop`-th peer (of those it names)."""
        if not self.awaiting:
            return
        line, ack = self.awaiting.pop(0)
        self.apply(line, None if accepted else stop)
        if ack is not None:
            ack(accepted)

    def apply(self, line: str, stop: int | None) -> None:
        match = _LINE.match(line)
        assert match is not None, line
        named = [part.split()[1] for part in match[1].split(" , ")]
        named = [peer for peer in PEERS if peer in named]  # ExaBGP's configuration order
        words, _, nlri = match[4].partition(" nlri ")
        prefixes = nlri.split() if match[3] == "attributes" else [words.split()[0]]
        if match[3] == "route":
            words = words.partition(" ")[2]
        extra = words.removeprefix("next-hop self")
        for prefix in prefixes:
            for position, peer in enumerate(named):
                if stop is not None and position >= stop % len(named):
                    return
                if match[2] == "announce":
                    self.rib[peer][prefix] = extra
                else:
                    self.rib[peer].pop(prefix, None)


class AnnouncerMachine(RuleBasedStateMachine):
    """Drives an Announcer as the loop does, with a speaker whose lines are answered in order, accepted or refused."""

    def __init__(self) -> None:
        super().__init__()
        self.exabgp = ModelExaBgp()
        # MED annotations allowed: the variant that changes a route's attributes must reach the lines
        self.harness = Harness(make_config(annotations={"med": {"enabled": True}}), speaker=self.exabgp)

    @initialize()
    def list_everything(self) -> None:
        self.harness.list_everything()

    @rule(index=st.integers(0, len(ADDRESSES) - 1), variant=st.sampled_from(VARIANTS))
    def change(self, index: int, variant: dict[str, str] | None) -> None:
        obj = svc(version(index, {} if variant is None else variant))
        self.harness.announcer.handle(Changed(Resource.SERVICES, "DELETED" if variant is None else "MODIFIED", obj))

    @rule(count=st.integers(1, 4), accepted=st.booleans(), stop=st.integers(0, 2))
    def answer(self, count: int, accepted: bool, stop: int) -> None:
        """ExaBGP answers the oldest `count` lines awaiting an answer (in command order, as it does route lines)."""
        for _ in range(count):
            self.exabgp.answer_oldest(accepted, stop)

    @rule(applied=st.integers(0, 3), at_once=st.booleans())
    def lose_answers(self, applied: int, at_once: bool) -> None:
        self.exabgp.lose_answers(applied, at_once=at_once)

    @rule(seconds=st.sampled_from([0.1, 1.0, 5.0, 31.0]))
    def tick(self, seconds: float) -> None:
        self.harness.now += seconds

    @rule(peer=st.sampled_from(PEERS))
    def session_up(self, peer: str) -> None:
        self.harness.announcer.handle(NeighbourEvent(peer, SessionState.UP))

    @rule()
    def loop(self) -> None:
        self.harness.loop()

    @invariant()
    def every_held_back_prefix_has_a_retry_time_or_a_line_in_flight(self) -> None:
        """No route waits for an unrelated event: what a peer must be sent again is either scheduled, or a line
        naming that peer is still in flight (its answer decides when). Answers posted but not yet handled count
        as in flight (the loop hands them back before it syncs)."""
        announcer = self.harness.announcer
        for peer, prefixes in announcer.retry.items():
            if prefixes:
                assert peer in announcer.retry_at or announcer.in_flight[peer] > 0, (
                    f"{peer}: {sorted(map(str, prefixes))} held back with no retry time and nothing in flight"
                )

    def teardown(self) -> None:
        """ExaBGP accepts everything from now on: within a few backoffs, every peer holds what is desired."""
        harness, announcer = self.harness, self.harness.announcer
        for _ in range(12):
            while self.exabgp.awaiting:
                self.exabgp.answer_oldest(True, 0)
            harness.now += 31.0
            harness.loop()
        assert not self.exabgp.awaiting
        harness.handle_posted()
        desired = announcer.table.desired_attributes
        for prefix in {*announcer.announced, *announcer.table.all_prefixes()}:
            for peer in announcer.peers[family_of(prefix)]:
                assert announcer.announced.of(prefix, peer) == desired(prefix), (str(prefix), str(peer))


AnnouncerMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestAnnouncerMachine = AnnouncerMachine.TestCase


def test_a_route_held_back_behind_a_line_whose_answer_was_lost_gets_a_retry_time() -> None:
    """Found by the machine above: both IPv4 peers refusing, a withdraw held back for them while their lines are in
    flight; those lines' answers are lost and reported refused only after the re-read (saying nothing). The
    withdraw must still get a retry time, not wait for an unrelated event."""
    machine = AnnouncerMachine()
    machine.list_everything()
    machine.change(0, {})
    machine.loop()
    machine.lose_answers(0, at_once=True)
    machine.loop()
    machine.change(0, None)
    machine.loop()
    machine.lose_answers(0, at_once=False)
    machine.loop()
    machine.loop()
    machine.every_held_back_prefix_has_a_retry_time_or_a_line_in_flight()
    machine.teardown()
