"""Node state (issue #11, item 1): this node's Node object withdraws everything it announces, each rule opt-in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from announcer.cli import main
from announcer.config import ConfigError
from announcer.convert import ObjectKind, convert_object
from announcer.desired import DesiredTable
from announcer.kube import Changed, ListPage, Relisted, Resource
from announcer.policy import NodeRule, NodeView, node_withdrawal
from lab.fakeapi import FakeApiServer
from lab.fakeapi.nodes import node_object
from lab.lab import kubeconfig_text
from tests.conftest import BASE_CONFIG, make_config
from tests.factories import service
from tests.test_state import QUERY, WEB, WEB_V4, WEB_V6, Harness, held_line, svc

V4 = "neighbor 192.0.2.1 , neighbor 192.0.2.5"
V6 = "neighbor 2001:db8::1"
WITHDRAW_V4 = f"{V4} withdraw route 198.51.100.10/32 next-hop self"
WITHDRAW_V6 = f"{V6} withdraw route 2001:db8:96::a/128 next-hop self"


def node(
    name: str = "node-a",
    *,
    labels: dict[str, Any] | None = None,
    unschedulable: Any = None,
    ready: Any = "True",
    **extra: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {"kind": "Node", "metadata": {"name": name, "labels": labels or {}}, "spec": {}}
    if unschedulable is not None:
        obj["spec"]["unschedulable"] = unschedulable
    if ready is not None:
        obj["status"] = {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": ready}]
        }
    obj.update(extra)
    return obj


def converted(obj: dict[str, Any]) -> Any:
    return convert_object(ObjectKind.NODE, obj, "bgp.announcer.io/")


ALL_RULES = {"withdraw_on_label": True, "withdraw_when_cordoned": True, "withdraw_when_not_ready": True}


# --- convert -----------------------------------------------------------------------------------------------------
def test_a_node_is_read_with_its_labels_cordon_and_ready_condition() -> None:
    item = converted(node(labels={"rack": "r1"}, unschedulable=True, ready="False"))
    assert item.key == ("", "node-a")
    assert item.view == NodeView("node-a", {"rack": "r1"}, {}, unschedulable=True, ready="False")
    assert item.problems == ()


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        (node(labels={"rack": 7}), "metadata.labels['rack']"),
        (node(unschedulable="yes"), "spec.unschedulable"),
        (node(ready="maybe"), "status.conditions[1].status"),
        (node(status={"conditions": "Ready"}), "status.conditions"),
        (node(spec=["x"]), "spec"),
    ],
)
def test_a_bad_node_field_is_named_with_the_node_and_a_safe_value_is_used(obj: dict[str, Any], field: str) -> None:
    item = converted(obj)
    assert [(problem.obj, problem.field) for problem in item.problems] == [("Node node-a", field)]
    view = item.view
    assert isinstance(view, NodeView)
    assert not view.unschedulable
    assert "rack" not in view.labels


def test_a_node_without_a_usable_name_is_ignored_with_the_reason() -> None:
    item = converted({"metadata": {"name": "Bad Name"}})
    assert item.key is None
    assert "metadata.name" in item.error


# --- the decision ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("view", "rule", "reasons"),
    [
        (None, NodeRule("bgp.announcer.io/withdraw", True, True), ("nodeUnknown",)),
        (None, NodeRule(), ()),
        (NodeView("n", {"bgp.announcer.io/withdraw": ""}, {}), NodeRule(), ()),
        (NodeView("n", {"bgp.announcer.io/withdraw": ""}, {}, ready="True"), NodeRule("bgp.announcer.io/withdraw"),
         ("nodeLabel(bgp.announcer.io/withdraw)",)),
        (NodeView("n", {"bgp.announcer.io/withdraw": "false"}, {}), NodeRule("bgp.announcer.io/withdraw"), ()),
        (NodeView("n", {}, {}, unschedulable=True, ready="True"), NodeRule(withdraw_when_cordoned=True),
         ("nodeCordoned",)),
        (NodeView("n", {}, {}, unschedulable=True, ready="Unknown"), NodeRule(withdraw_when_not_ready=True),
         ("nodeNotReady(Unknown)",)),
        (NodeView("n", {}, {}, ready="True"), NodeRule(None, True, True), ()),
    ],
)  # fmt: skip
def test_node_withdrawal_reasons(view: NodeView | None, rule: NodeRule, reasons: tuple[str, ...]) -> None:
    assert node_withdrawal(view, rule) == reasons


def test_node_state_withdraws_every_prefix_and_keeps_the_claims_for_the_return() -> None:
    config = make_config(node_state={"withdraw_when_cordoned": True})
    table = DesiredTable("node-a", config.policy())
    view, _ = svc(WEB).view, None
    assert view is not None
    table.upsert_service(view)  # type: ignore[arg-type]
    prefixes = set(table.take_dirty())
    assert all(table.desired_attributes(prefix) is None for prefix in prefixes), "the Node is not known yet"
    table.set_node(NodeView("node-a", {}, {}, ready="True"))
    assert table.take_dirty() == prefixes
    table.set_node(NodeView("node-a", {}, {}, unschedulable=True, ready="True"))
    assert table.take_dirty() == prefixes
    assert all(table.desired_attributes(prefix) is None for prefix in prefixes)
    table.set_node(NodeView("node-a", {"any": "change"}, {}, unschedulable=True, ready="True"))
    assert table.take_dirty() == set(), "still withdrawn: nothing to do"
    table.set_node(NodeView("node-a", {}, {}, ready="True"))
    assert table.take_dirty() == prefixes
    assert all(table.desired_attributes(prefix) is not None for prefix in prefixes)


# --- configuration -----------------------------------------------------------------------------------------------
def test_node_state_is_off_by_default_and_the_default_label_is_our_own() -> None:
    config = make_config()
    assert not config.policy().node.enabled
    assert config.node_state.withdraw_label == "bgp.announcer.io/withdraw"


@pytest.mark.parametrize("key", ["", "Bad Key", "a/b/c", "-x", "x" * 64])
def test_a_withdraw_label_that_is_not_a_label_key_is_refused_naming_the_key(key: str) -> None:
    with pytest.raises(ConfigError, match=r"node_state\.withdraw_label: .*label key"):
        make_config(node_state={"withdraw_label": key})


def test_the_exclude_from_external_load_balancers_label_can_be_chosen() -> None:
    key = "node.kubernetes.io/exclude-from-external-load-balancers"
    config = make_config(node_state={"withdraw_on_label": True, "withdraw_label": key})
    assert config.policy().node == NodeRule(key)


# --- the state machine -------------------------------------------------------------------------------------------
def test_before_the_node_is_listed_nothing_is_announced_and_the_first_sync_waits_for_it() -> None:
    """Issue 18, item 2: with a rule on, the Services are listed before the Node (a slow Node list): nothing goes
    out, no first sync, no End-of-RIB; the Node listed ready and schedulable announces, a cordon withdraws."""
    harness = Harness(make_config(node_state=ALL_RULES, bgp={"graceful_restart": 120}))
    harness.list_everything(WEB)
    assert harness.speaker.take()[1:] == []
    assert not harness.announcer.synced
    harness.feed(ListPage(Resource.NODES, [converted(node())]), Relisted(Resource.NODES, [converted(node())]))
    assert harness.announcer.synced
    assert sorted(harness.speaker.take()) == sorted([WEB_V4, WEB_V6])
    harness.feed(Changed(Resource.NODES, "MODIFIED", converted(node(unschedulable=True))))
    assert sorted(harness.speaker.take()) == sorted([WITHDRAW_V4, WITHDRAW_V6])
    harness.feed(Changed(Resource.NODES, "MODIFIED", converted(node())))
    assert sorted(harness.speaker.take()) == sorted([WEB_V4, WEB_V6])


def test_a_node_that_cannot_be_listed_announces_nothing_and_holds_back_the_first_sync() -> None:
    """The Node list refused (403) or failing for ever: the other lists complete, and still nothing is announced,
    ExaBGP's routes from before are not withdrawn (no first sync), and no End-of-RIB goes out."""
    stale = [held_line(peer, "198.51.100.99/32") for peer in ("192.0.2.1", "192.0.2.5")]
    harness = Harness(make_config(node_state=ALL_RULES, bgp={"graceful_restart": 120}), held=stale)
    harness.list_everything(WEB)
    harness.now += 600
    harness.loop()
    assert harness.speaker.take() == [QUERY]
    assert not harness.announcer.synced


def test_while_withdrawn_a_new_service_is_not_announced_until_the_node_returns() -> None:
    harness = Harness(make_config(node_state=ALL_RULES))
    labelled = converted(node(labels={"bgp.announcer.io/withdraw": "true"}))
    harness.feed(ListPage(Resource.NODES, [labelled]), Relisted(Resource.NODES, [labelled]))
    harness.list_everything(WEB)
    assert harness.speaker.take()[1:] == []
    other = service("api", ["198.51.100.20"])
    harness.feed(Changed(Resource.SERVICES, "ADDED", svc(other)))
    assert harness.speaker.take() == []
    harness.feed(Changed(Resource.NODES, "MODIFIED", converted(node())))
    assert sorted(harness.speaker.take()) == sorted(
        [f"{V4} announce attributes next-hop self nlri 198.51.100.10/32 198.51.100.20/32", WEB_V6]
    )


@pytest.mark.parametrize("how", ["deleted", "listed without it"])
def test_a_missing_or_deleted_node_withdraws_everything(how: str) -> None:
    """Fail closed: with a rule on, a Node that is gone (deleted, or listed without it) announces nothing."""
    harness = Harness(make_config(node_state=ALL_RULES))
    ready = converted(node())
    harness.feed(ListPage(Resource.NODES, [ready]), Relisted(Resource.NODES, [ready]))
    harness.list_everything(WEB)
    assert sorted(harness.speaker.take()[1:]) == sorted([WEB_V4, WEB_V6])
    if how == "deleted":
        harness.feed(Changed(Resource.NODES, "DELETED", ready))
    else:
        harness.feed(Relisted(Resource.NODES, []))
    assert sorted(harness.speaker.take()) == sorted([WITHDRAW_V4, WITHDRAW_V6])
    harness.feed(Changed(Resource.NODES, "ADDED", ready))
    assert sorted(harness.speaker.take()) == sorted([WEB_V4, WEB_V6])


def test_node_events_change_nothing_when_no_rule_is_on() -> None:
    harness = Harness(make_config())
    harness.list_everything(WEB)
    harness.speaker.take()
    harness.feed(Changed(Resource.NODES, "MODIFIED", converted(node(unschedulable=True, ready="False"))))
    assert harness.speaker.take() == []


# --- render ------------------------------------------------------------------------------------------------------
def test_render_shows_the_node_level_reason_on_every_route_and_ignores_other_nodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "announcer.yaml"
    config.write_text(yaml.safe_dump({**BASE_CONFIG, "node_state": {"withdraw_when_cordoned": True}}))
    listing = tmp_path / "objects.json"
    items = [WEB, node_object("node-a", unschedulable=True), node_object("node-b")]
    listing.write_text(json.dumps({"kind": "List", "items": items}))
    assert main(["render", "--config", str(config), "--from-file", str(listing), "--output", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["node_withdrawn"] == ["nodeCordoned"]
    assert {(row["address"], row["announced"], row["detail"]) for row in document["rows"]} == {
        ("198.51.100.10/32", False, "node: nodeCordoned"),
        ("2001:db8:96::a/128", False, "node: nodeCordoned"),
    }
    assert main(["render", "--config", str(config), "--node", "node-b", "--from-file", str(listing)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0] == "node node-b"
    assert "nodeCordoned" not in table


def test_render_from_the_cluster_reads_only_this_node(tmp_path: Path) -> None:
    with FakeApiServer().start() as api:
        api.apply(WEB)
        api.apply(node_object("node-a", labels={"bgp.announcer.io/withdraw": "true"}))
        api.apply(node_object("node-b"))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(kubeconfig_text(api.url))
        config = tmp_path / "announcer.yaml"
        config.write_text(
            yaml.safe_dump(
                {**BASE_CONFIG, "watch": {"kubeconfig": str(kubeconfig)}, "node_state": {"withdraw_on_label": True}}
            )
        )
        command = [sys.executable, "-m", "announcer", "render", "--config", str(config)]
        node_a = subprocess.run(command, capture_output=True, text=True, check=True)
        node_b = subprocess.run([*command, "--node", "node-b"], capture_output=True, text=True, check=True)
    assert node_a.stdout.splitlines()[0] == (
        "node node-a: everything withdrawn by node state (nodeLabel(bgp.announcer.io/withdraw))"
    )
    assert node_b.stdout.splitlines()[0] == "node node-b"
    assert " yes " in node_b.stdout
