"""The stop's decision: hand the routes over to the DaemonSet's next pod only when everything says one comes."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from announcer.config import ConfigError
from announcer.convert import ObjectError, ObjectKind, being_deleted, controlling_daemonset, convert_object
from announcer.handover import (
    Found,
    Presence,
    StopAction,
    StopSetting,
    Unknown,
    decide_stop,
    lookup_needed,
)
from announcer.policy import NodeRule, NodeView
from announcer.shapes import NodeShape
from tests.conftest import make_config

READY = NodeView("node-a", {}, {}, ready="True")
CORDONED = NodeView("node-a", {}, {}, unschedulable=True, ready="True")
LABELLED = NodeView("node-a", {"bgp.announcer.io/withdraw": "true"}, {}, ready="True")
DELETING = NodeView("node-a", {}, {}, ready="True", deleting=True)
NOT_READY = NodeView("node-a", {}, {}, ready="False")
ALL_RULES = NodeRule("bgp.announcer.io/withdraw", withdraw_when_cordoned=True, withdraw_when_not_ready=True)
GONE = Presence.MISSING


def found(node: NodeView | None = READY, daemonset: Presence = Presence.PRESENT, rule: NodeRule | None = None) -> Found:
    return Found(daemonset, node, rule or NodeRule())


HAND_OVER, WITHDRAW = StopAction.HAND_OVER, StopAction.WITHDRAW


@pytest.mark.parametrize(
    ("graceful_restart", "setting", "facts", "action", "reason"),
    [
        (120, "auto", found(), HAND_OVER, "routes kept by the peers as stale for up to 120 s (graceful restart)"),
        (120, "auto", found(CORDONED), HAND_OVER, "kept by the peers as stale"),
        (120, "auto", found(rule=ALL_RULES), HAND_OVER, "kept by the peers as stale"),
        (None, "auto", found(), WITHDRAW, "bgp.graceful_restart is off"),
        (120, "withdraw", found(), WITHDRAW, "speaker.stop is withdraw"),
        (120, "auto", None, WITHDRAW, "not looked up"),
        (120, "auto", Unknown("timed out"), WITHDRAW, "cannot tell whether a next pod comes (timed out)"),
        (120, "auto", Unknown("POD_NAME is not set"), WITHDRAW, "(POD_NAME is not set)"),
        (120, "auto", found(daemonset=GONE), WITHDRAW, "DaemonSet is missing: no next pod comes"),
        (120, "auto", found(daemonset=Presence.DELETING), WITHDRAW, "DaemonSet is being deleted"),
        (120, "auto", found(None), WITHDRAW, "Node is missing"),
        (120, "auto", found(DELETING), WITHDRAW, "Node node-a is being deleted"),
        (120, "auto", found(NOT_READY), WITHDRAW, "Node node-a is not Ready (False)"),
        (120, "auto", found(CORDONED, rule=ALL_RULES), WITHDRAW, "node state withdraws Node node-a (nodeCordoned)"),
        (120, "auto", found(LABELLED, rule=ALL_RULES), WITHDRAW, "nodeLabel(bgp.announcer.io/withdraw)"),
    ],
    ids=[
        "graceful restart on, DaemonSet and Node present and Ready: hand over",
        "a cordoned Node without the cordon rule: hand over",
        "node state on and nothing to withdraw for: hand over",
        "graceful restart off: withdraw",
        "speaker.stop withdraw: withdraw",
        "nothing looked up: withdraw",
        "the lookup timed out: withdraw",
        "no POD_NAME: withdraw",
        "the DaemonSet is gone: withdraw",
        "the DaemonSet is being deleted: withdraw",
        "the Node is gone: withdraw",
        "the Node is being deleted: withdraw",
        "the Node is not Ready: withdraw",
        "node state withdraws a cordoned Node: withdraw",
        "node state withdraws a labelled Node: withdraw",
    ],
)
def test_the_stop_decision(
    graceful_restart: int | None, setting: StopSetting, facts: Found | Unknown | None, action: StopAction, reason: str
) -> None:
    decision = decide_stop(graceful_restart, setting, facts)
    assert decision.action is action
    assert reason in decision.reason
    assert "\n" not in decision.reason


def test_only_graceful_restart_with_the_auto_setting_asks_the_api_server() -> None:
    assert lookup_needed(120, "auto")
    assert not lookup_needed(None, "auto")
    assert not lookup_needed(120, "withdraw")
    assert not lookup_needed(None, "withdraw")


NODES = st.builds(
    NodeView,
    name=st.just("node-a"),
    labels=st.sampled_from([{}, {"bgp.announcer.io/withdraw": "true"}, {"bgp.announcer.io/withdraw": "false"}]),
    annotations=st.just({}),
    unschedulable=st.booleans(),
    ready=st.sampled_from(["True", "False", "Unknown"]),
    deleting=st.booleans(),
)
RULES = st.builds(
    NodeRule,
    withdraw_label=st.sampled_from([None, "bgp.announcer.io/withdraw"]),
    withdraw_when_cordoned=st.booleans(),
    withdraw_when_not_ready=st.booleans(),
)
FACTS = st.one_of(
    st.none(),
    st.builds(Unknown, st.text(max_size=20)),
    st.builds(Found, st.sampled_from(Presence), st.one_of(st.none(), NODES), RULES),
)


@given(st.sampled_from([None, 1, 120]), st.sampled_from(["auto", "withdraw"]), FACTS)
def test_a_hand_over_needs_every_condition_and_anything_else_withdraws(
    graceful_restart: int | None, setting: StopSetting, facts: Found | Unknown | None
) -> None:
    decision = decide_stop(graceful_restart, setting, facts)
    handed_over = (
        graceful_restart is not None
        and setting == "auto"
        and isinstance(facts, Found)
        and facts.daemonset is Presence.PRESENT
        and facts.node is not None
        and not facts.node.deleting
        and facts.node.ready == "True"
        and not (facts.rule.withdraw_when_cordoned and facts.node.unschedulable)
        and not (
            facts.rule.withdraw_label is not None
            and facts.node.labels.get(facts.rule.withdraw_label, "false") != "false"
        )
    )
    assert (decision.action is StopAction.HAND_OVER) == handed_over, decision


# --- reading the pod, the DaemonSet and the Node (convert.py) ----------------------------------------------------
def pod(*references: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": "service-announcer-x7k2p", "ownerReferences": list(references)}}


DAEMONSET_OWNER = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "service-announcer", "controller": True}


def test_the_controlling_daemonset_is_the_controller_reference() -> None:
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "unrelated"}
    assert controlling_daemonset(pod(other, DAEMONSET_OWNER)) == "service-announcer"


@pytest.mark.parametrize(
    ("obj", "why"),
    [
        (pod(), "the pod has no controller"),
        ({"metadata": {}}, "the pod has no controller"),
        ("not an object", "the pod has no controller"),
        (pod({**DAEMONSET_OWNER, "controller": False}), "the pod has no controller"),
        (pod({**DAEMONSET_OWNER, "kind": "ReplicaSet"}), "controller is a 'ReplicaSet' ('apps/v1')"),
        (pod({**DAEMONSET_OWNER, "apiVersion": "extensions/v1beta1"}), "not an apps/v1 DaemonSet"),
        (pod({**DAEMONSET_OWNER, "name": "../../nodes/x"}), "is not a DaemonSet name"),
        (pod({**DAEMONSET_OWNER, "name": 7}), "is not a DaemonSet name"),
    ],
    ids=[
        "no references",
        "no ownerReferences",
        "not an object",
        "no controller",
        "a ReplicaSet",
        "an old API version",
        "a name that would change the path",
        "a number",
    ],
)
def test_a_pod_no_daemonset_controls_is_refused_naming_why(obj: object, why: str) -> None:
    with pytest.raises(ObjectError, match=r".*") as raised:
        controlling_daemonset(obj)
    assert why in str(raised.value)


def test_an_object_with_a_deletion_timestamp_is_being_deleted() -> None:
    assert being_deleted({"metadata": {"deletionTimestamp": "2026-12-06T06:00:00Z"}})
    assert not being_deleted({"metadata": {"name": "x"}})
    assert not being_deleted(None)


NODE = {"metadata": {"name": "node-a", "deletionTimestamp": "2026-12-06T06:00:00Z", "finalizers": ["example/x"]}}


def test_a_node_being_deleted_reads_as_deleting_from_json_and_from_its_shape() -> None:
    raw = convert_object(ObjectKind.NODE, NODE, "")
    shaped = convert_object(ObjectKind.NODE, msgspec.convert(NODE, NodeShape), "")
    assert isinstance(raw.view, NodeView)
    assert raw.view.deleting
    assert shaped.view == raw.view
    plain = convert_object(ObjectKind.NODE, {"metadata": {"name": "node-a"}}, "")
    assert isinstance(plain.view, NodeView)
    assert not plain.view.deleting


# --- the setting ---------------------------------------------------------------------------------------------------
def test_speaker_stop_is_auto_by_default_and_takes_withdraw() -> None:
    assert make_config().speaker.stop == "auto"
    assert make_config(speaker={"stop": "withdraw"}).speaker.stop == "withdraw"


def test_an_unknown_speaker_stop_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"speaker\.stop: Input should be 'auto' or 'withdraw'"):
        make_config(speaker={"stop": "hand-over"})
