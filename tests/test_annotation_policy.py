"""The admin's policy over per-Service annotations: which kinds, which communities, which numbers, which namespaces."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from announcer.config import ConfigError
from announcer.convert import service_view
from announcer.desired import DesiredTable, decide
from announcer.model import Attributes
from tests.conftest import make_config
from tests.factories import service
from tests.test_state import Harness, svc

PREFIX = "bgp.announcer.io/"
CONFIGURED = {"default": {"communities": ["64513:100"], "local_preference": 100, "med": 10}}
BASE_ATTRIBUTES = Attributes(((64513, 100),), (), 100, 10)


def attributes_and_refusals(
    annotations: dict[str, str], policy: dict[str, Any] | None = None, namespace: str = "default"
) -> tuple[Attributes, set[tuple[str, str]]]:
    """The cluster IP's attributes and the (annotation, rule) refusals for one annotated Service."""
    sections: dict[str, Any] = {"attributes": CONFIGURED}
    if policy is not None:
        sections["annotations"] = policy
    config = make_config(**sections)
    obj = service("web", ["198.51.100.10"], namespace=namespace, annotations=annotations)
    view, problems = service_view(obj, PREFIX)
    assert problems == []
    decision = decide(view, frozenset(), config.policy())
    (wanted,) = decision.wanted
    return wanted.attributes, {(refusal.annotation, refusal.key) for refusal in decision.refused}


ATTACK = {
    PREFIX + "communities": "blackhole,no-export",
    PREFIX + "local-preference": "4294967295",
    PREFIX + "med": "0",
    PREFIX + "large-communities": "64513:1:1",
}


def test_by_default_no_service_sets_path_attributes_and_each_refusal_names_its_rule() -> None:
    """Without an annotations section the configured attributes stand, whatever a Service editor writes."""
    attributes, refused = attributes_and_refusals(ATTACK)
    assert attributes == BASE_ATTRIBUTES
    assert refused == {
        ("communities", "annotations.communities.enabled"),
        ("large-communities", "annotations.large_communities.enabled"),
        ("local-preference", "annotations.local_preference.enabled"),
        ("med", "annotations.med.enabled"),
    }


ALLOWING = {
    "communities": {"enabled": True, "allowlist": ["64513:200", "64514:*", "no-export"]},
    "large_communities": {"enabled": True, "allowlist": ["64513:*:*"]},
    "local_preference": {"enabled": True, "minimum": 50, "maximum": 200},
    "med": {"enabled": True, "minimum": 5},
}


@pytest.mark.parametrize(
    ("annotations", "attributes", "refused"),
    [
        ({"communities": "64513:200 no-export"}, Attributes(((64513, 200), (65535, 65281)), (), 100, 10), set()),
        ({"communities": "64514:7"}, Attributes(((64514, 7),), (), 100, 10), set()),
        ({"communities": "64513:200,blackhole"}, BASE_ATTRIBUTES, {("communities", "annotations.communities.allowlist")}),
        ({"communities": "65535:666"}, BASE_ATTRIBUTES, {("communities", "annotations.communities.allowlist")}),
        ({"large-communities": "64513:9:9"}, Attributes(((64513, 100),), ((64513, 9, 9),), 100, 10), set()),
        ({"large-communities": "64512:9:9"}, BASE_ATTRIBUTES,
         {("large-communities", "annotations.large_communities.allowlist")}),
        ({"local-preference": "200"}, Attributes(((64513, 100),), (), 200, 10), set()),
        ({"local-preference": "4294967295"}, BASE_ATTRIBUTES,
         {("local-preference", "annotations.local_preference.maximum")}),
        ({"local-preference": "49"}, BASE_ATTRIBUTES, {("local-preference", "annotations.local_preference.minimum")}),
        ({"med": "0"}, BASE_ATTRIBUTES, {("med", "annotations.med.minimum")}),
        ({"med": "4294967295"}, Attributes(((64513, 100),), (), 100, 4294967295), set()),
    ],
    ids=lambda value: str(value) if isinstance(value, dict) else "",
)  # fmt: skip
def test_an_enabled_kind_takes_only_listed_communities_and_numbers_inside_the_bounds(
    annotations: dict[str, str], attributes: Attributes, refused: set[tuple[str, str]]
) -> None:
    """A refused annotation is ignored whole (the configured value stays), the others still apply."""
    prefixed = {PREFIX + key: value for key, value in annotations.items()}
    assert attributes_and_refusals(prefixed, ALLOWING) == (attributes, refused)


def test_a_well_known_community_passes_only_when_listed_by_name_or_number() -> None:
    """'blackhole' is refused under an allowlist of 65513:* and no-export, taken once 65535:666 is listed."""
    annotations = {PREFIX + "communities": "blackhole"}
    assert attributes_and_refusals(annotations, ALLOWING)[1] == {("communities", "annotations.communities.allowlist")}
    listed = {"communities": {"enabled": True, "allowlist": ["65535:666"]}}
    assert attributes_and_refusals(annotations, listed) == (Attributes(((65535, 666),), (), 100, 10), set())


def test_namespaces_limit_who_may_use_an_annotation() -> None:
    rule = {"med": {"enabled": True, "namespaces": ["team-a"]}}
    annotations = {PREFIX + "med": "7"}
    assert attributes_and_refusals(annotations, rule, namespace="team-a") == (
        Attributes(((64513, 100),), (), 100, 7),
        set(),
    )
    assert attributes_and_refusals(annotations, rule, namespace="team-b") == (
        BASE_ATTRIBUTES,
        {("med", "annotations.med.namespaces")},
    )


def test_opt_out_and_require_endpoints_are_allowed_by_default_and_can_be_refused() -> None:
    """They only take routes of the Service itself away; an admin can still switch each off."""
    annotations = {PREFIX + "opt-out": "true"}
    view, _ = service_view(service("web", ["198.51.100.10"], annotations=annotations), PREFIX)
    assert decide(view, frozenset(), make_config().policy()).wanted == ()
    refusing = make_config(annotations={"opt_out": {"enabled": False}}).policy()
    decision = decide(view, frozenset(), refusing)
    assert [str(wanted.prefix) for wanted in decision.wanted] == ["198.51.100.10/32"]
    assert [(r.annotation, r.key) for r in decision.refused] == [("opt-out", "annotations.opt_out.enabled")]
    required = {PREFIX + "require-endpoints": "true"}
    view, _ = service_view(service("web", ["198.51.100.10"], annotations=required), PREFIX)
    assert decide(view, frozenset(), make_config().policy(), frozenset()).wanted == ()
    refusing = make_config(annotations={"require_endpoints": {"enabled": False}}).policy()
    assert [str(w.prefix) for w in decide(view, frozenset(), refusing, frozenset()).wanted] == ["198.51.100.10/32"]


def test_a_refusal_says_which_value_broke_which_rule() -> None:
    config = make_config(annotations=ALLOWING)
    annotations = {PREFIX + "communities": "64513:200 blackhole", PREFIX + "local-preference": "300"}
    view, _ = service_view(service("web", ["198.51.100.10"], annotations=annotations), PREFIX)
    refused = {refusal.annotation: refusal for refusal in decide(view, frozenset(), config.policy()).refused}
    assert "65535:666" in refused["communities"].detail
    assert "300" in refused["local-preference"].detail and "200" in refused["local-preference"].detail


def test_the_table_counts_refusals_and_hands_each_new_one_on_once() -> None:
    table = DesiredTable("node-a", make_config().policy())
    annotated = service("web", ["198.51.100.10"], annotations={PREFIX + "med": "0"})
    table.upsert_service(service_view(annotated, PREFIX)[0])
    assert [(key, refusal.key) for key, refusal in table.take_refusals()] == [
        (("default", "web"), "annotations.med.enabled")
    ]
    assert table.refused_counts[("med", "enabled")] == 1
    moved = service("web", ["198.51.100.11"], annotations={PREFIX + "med": "0"})
    table.upsert_service(service_view(moved, PREFIX)[0])
    assert table.take_refusals() == []  # the same refusal: not handed on again
    table.delete_service(("default", "web"))
    assert table.refused_counts[("med", "enabled")] == 0


def test_the_announcer_logs_a_refusal_once_naming_the_service_annotation_and_rule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    harness = Harness()
    annotated = service("web", ["198.51.100.10"], annotations={PREFIX + "communities": "blackhole"})
    with caplog.at_level(logging.WARNING):
        harness.list_everything(annotated)
        harness.list_everything(annotated)
    lines = [record.getMessage() for record in caplog.records if "refused" in record.getMessage()]
    assert lines == [
        "Service default/web: metadata.annotations[bgp.announcer.io/communities]: refused by "
        "annotations.communities.enabled (annotations of this kind are not enabled); ignored"
    ]
    assert harness.speaker.lines[-1].endswith("198.51.100.10/32 next-hop self")
    assert svc(annotated).problems == ()


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"communities": {"allowlist": ["65536:1"]}}, "annotations.communities.allowlist.0"),
        ({"communities": {"allowlist": ["65535:*"]}}, "annotations.communities.allowlist.0"),
        ({"large_communities": {"allowlist": ["1:2"]}}, "annotations.large_communities.allowlist.0"),
        ({"med": {"minimum": 10, "maximum": 5}}, "annotations.med.maximum"),
        ({"local_preference": {"maximum": 4294967296}}, "annotations.local_preference.maximum"),
        ({"med": {"namespaces": ["Team_A"]}}, "annotations.med.namespaces.0"),
        ({"opt_out": {"allowlist": []}}, "annotations.opt_out.allowlist"),
        ({"colour": {"enabled": True}}, "annotations.colour"),
    ],
    ids=lambda value: str(value) if isinstance(value, dict) else value,
)
def test_check_config_refuses_a_bad_annotation_rule_naming_its_key(section: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(annotations=section)
    assert f"test: {key}: " in str(caught.value)


def test_check_config_warns_about_an_enabled_community_kind_with_an_empty_allowlist() -> None:
    warnings = make_config(annotations={"communities": {"enabled": True}}).warnings()
    assert any(warning.startswith("annotations.communities.allowlist: empty") for warning in warnings)
