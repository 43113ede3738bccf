"""Conversion never raises on a bad object: one that defeats a rule is named by object and field, never fatal."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from announcer.convert import ObjectKind, convert_object
from announcer.model import Family, SliceView

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.one_of(
    json_scalars,
    st.lists(json_scalars, max_size=3),
    st.dictionaries(st.text(max_size=10), json_scalars, max_size=3),
)
endpoint_entries = st.lists(
    st.fixed_dictionaries(
        {"nodeName": st.one_of(st.sampled_from(["node-a", "node-b", "Node_C", "a\nshutdown", ""]), json_scalars)},
        optional={"conditions": st.dictionaries(st.sampled_from(["ready", "serving", "terminating"]), json_scalars)},
    ),
    max_size=4,
)
ADDRESS_TYPES = {"IPv4": Family.IPV4, "IPv6": Family.IPV6, "FQDN": None}


def test_an_unhashable_address_type_is_a_named_problem_not_a_type_error() -> None:
    """addressType ["IPv4"] used to raise TypeError inside the watcher, which then restarted at the same object."""
    obj = {
        "metadata": {"namespace": "default", "name": "s", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": ["IPv4"],
        "endpoints": [{"nodeName": "node-a"}],
    }
    converted = convert_object(ObjectKind.ENDPOINT_SLICE, obj, "x/")
    assert converted.key == ("default", "s")
    assert converted.view is None
    assert [str(problem) for problem in converted.problems] == [
        "EndpointSlice default/s: addressType: ['IPv4'] is not IPv4, IPv6 or FQDN"
    ]


@settings(max_examples=2_000, deadline=None)
@given(st.one_of(json_values, endpoint_entries), st.one_of(st.sampled_from(sorted(ADDRESS_TYPES)), json_values))
def test_any_json_as_endpoints_and_address_type_is_read_or_refused_never_raising(
    endpoints: Any, address_type: Any
) -> None:
    obj: dict[str, Any] = {
        "metadata": {"namespace": "default", "name": "s", "labels": {"kubernetes.io/service-name": "web"}},
        "endpoints": endpoints,
        "addressType": address_type,
    }
    converted = convert_object(ObjectKind.ENDPOINT_SLICE, obj, "x/")
    assert converted.key == ("default", "s")
    assert not converted.unreadable, converted.problems
    view = converted.view
    if view is None:
        assert not (isinstance(address_type, str) and address_type in ADDRESS_TYPES)
        assert [problem.field for problem in converted.problems] == ["addressType"]
        return
    assert isinstance(view, SliceView)
    assert view.family == ADDRESS_TYPES[address_type]
    named = (
        {entry.get("nodeName") for entry in endpoints if isinstance(entry, dict)}
        if isinstance(endpoints, list)
        else set()
    )
    assert view.serving_nodes <= named
    assert all(re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", node) for node in view.serving_nodes)


@settings(max_examples=500, deadline=None)
@given(json_values, st.sampled_from(list(ObjectKind)))
def test_any_json_value_as_a_whole_object_is_converted_or_refused_with_a_reason(value: Any, kind: ObjectKind) -> None:
    converted = convert_object(kind, value, "x/")
    assert converted.key is not None or converted.error
