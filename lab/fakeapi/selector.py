"""Label selectors (equality- and set-based) and field selectors (equality on name and namespace)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from lab.fakeapi.wire import ApiError

_LABEL_KEY: Final = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"
_LABEL_VALUE: Final = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_FIELD_VALUE: Final = r"[^,()=!\s]*"
_SUPPORTED_FIELDS: Final = frozenset({"metadata.name", "metadata.namespace"})

_Operator: TypeAlias = Literal["exists", "not_exists", "in", "not_in"]


@dataclass(frozen=True, slots=True)
class Requirement:
    """One comma-separated term of a label or field selector."""

    key: str
    operator: _Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.operator == "exists":
            return value is not None
        if self.operator == "not_exists":
            return value is None
        if self.operator == "in":
            return value is not None and value in self.values
        return value is None or value not in self.values


def _split_selector_terms(text: str) -> list[str]:
    terms: list[str] = []
    depth = 0
    start = 0
    for index, character in enumerate(text):
        if character == "(":
            depth += 1
        elif character == ")":
            depth -= 1
        elif character == "," and depth == 0:
            terms.append(text[start:index])
            start = index + 1
    terms.append(text[start:])
    return [term.strip() for term in terms]


def parse_selector(text: str, *, fields: bool) -> tuple[Requirement, ...]:
    """Parse a label selector (equality- and set-based) or a field selector (equality only)."""
    if not text.strip():
        return ()
    value_pattern = _FIELD_VALUE if fields else _LABEL_VALUE
    equality = re.compile(rf"({_LABEL_KEY})\s*(==|=|!=)\s*({value_pattern})")
    set_based = re.compile(rf"({_LABEL_KEY})\s+(in|notin)\s*\(([^()]*)\)")
    existence = re.compile(rf"(!?)\s*({_LABEL_KEY})")
    selector_name = "fieldSelector" if fields else "labelSelector"
    requirements: list[Requirement] = []
    for term in _split_selector_terms(text):
        if match := equality.fullmatch(term):
            key, operator, value = match.groups()
            requirement = Requirement(key, "not_in" if operator == "!=" else "in", frozenset({value}))
        elif not fields and (match := set_based.fullmatch(term)):
            key, operator, value_list = match.groups()
            values = frozenset(value.strip() for value in value_list.split(","))
            if any(not re.fullmatch(_LABEL_VALUE, value) for value in values):
                raise ApiError(400, f"invalid {selector_name}: {text!r}")
            requirement = Requirement(key, "in" if operator == "in" else "not_in", values)
        elif not fields and (match := existence.fullmatch(term)):
            negation, key = match.groups()
            requirement = Requirement(key, "not_exists" if negation else "exists")
        else:
            raise ApiError(400, f"invalid {selector_name}: {text!r}")
        if fields and requirement.key not in _SUPPORTED_FIELDS:
            raise ApiError(400, f'field label not supported: "{requirement.key}"')
        requirements.append(requirement)
    return tuple(requirements)
