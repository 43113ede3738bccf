"""Pure: at a stop, whether to withdraw every route or hand them over to the DaemonSet's next pod, and why."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from announcer.policy import NodeRule, NodeView, node_withdrawal

# speaker.stop: 'auto' hands over when a next pod is sure to come (and graceful restart keeps the routes meanwhile);
# 'withdraw' always withdraws.
StopSetting = Literal["auto", "withdraw"]


class StopAction(Enum):
    """What the announcer does at SIGTERM."""

    WITHDRAW = "withdraw"  # every route withdrawn, acks awaited: the peers drop this node's paths now
    HAND_OVER = "hand over"  # nothing withdrawn: the peers keep the routes as stale until the next pod's End-of-RIB


class Presence(Enum):
    """An object as a GET found it."""

    PRESENT = "present"
    MISSING = "missing"
    DELETING = "being deleted"  # metadata.deletionTimestamp set


_SAID: dict[Presence, str] = {presence: str(presence.value) for presence in Presence}


@dataclass(frozen=True)
class Found:
    """What the shell found out at the stop: the DaemonSet that owns this pod, and this node's Node (None: missing).

    `rule` is the node-state rules in force: a Node they withdraw is not handed over."""

    daemonset: Presence
    node: NodeView | None
    rule: NodeRule


@dataclass(frozen=True)
class Unknown:
    """The shell could not find out (an error, a timeout, no POD_NAME, a pod no DaemonSet owns): `why`, one clause."""

    why: str


@dataclass(frozen=True)
class StopDecision:
    action: StopAction
    reason: str  # one clause, for the log line


def lookup_needed(graceful_restart: int | None, setting: StopSetting) -> bool:
    """Whether the stop must ask the API server anything: only a hand-over needs it, and only these allow one."""
    return graceful_restart is not None and setting == "auto"


def decide_stop(  # noqa: PLR0911  (one return per condition, in the order they are checked)
    graceful_restart: int | None, setting: StopSetting, facts: Found | Unknown | None
) -> StopDecision:
    """WITHDRAW unless everything says a next pod comes to this node and the peers keep the routes meanwhile: graceful
    restart on, the setting 'auto', the owning DaemonSet present (not being deleted), and the Node present, not being
    deleted, Ready, and not withdrawn by node state. Anything unknown withdraws (fail safe)."""
    if graceful_restart is None:
        return _withdraw("bgp.graceful_restart is off, so the peers would drop the routes anyway")
    if setting == "withdraw":
        return _withdraw("speaker.stop is withdraw")
    if facts is None:
        return _withdraw("whether a next pod comes was not looked up")
    if isinstance(facts, Unknown):
        return _withdraw(f"cannot tell whether a next pod comes ({facts.why})")
    if facts.daemonset is not Presence.PRESENT:
        return _withdraw(f"the pod's DaemonSet is {_SAID[facts.daemonset]}: no next pod comes")
    node = facts.node
    if node is None:
        return _withdraw("this node's Node is missing: no next pod comes")
    if node.deleting:
        return _withdraw(f"Node {node.name} is being deleted: no next pod comes")
    if node.ready != "True":
        return _withdraw(f"Node {node.name} is not Ready ({node.ready}): a next pod may not start")
    reasons = node_withdrawal(node, facts.rule)
    if reasons:
        return _withdraw(f"node state withdraws Node {node.name} ({', '.join(reasons)})")
    return StopDecision(
        StopAction.HAND_OVER, f"routes kept by the peers as stale for up to {graceful_restart} s (graceful restart)"
    )


def _withdraw(reason: str) -> StopDecision:
    return StopDecision(StopAction.WITHDRAW, reason)
