"""The configuration schema of the admin's policy over per-Service annotations (which kinds, values, namespaces)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from announcer.config_bgp import StrictModel
from announcer.fields import DNS_LABEL
from announcer.model import UINT32_MAX, parse_community, parse_large_community
from announcer.policy import ANY, AnnotationPolicy, AnnotationRule

# A wildcard in the well-known (65535) or reserved (0) AS would admit BLACKHOLE, NO_EXPORT and the like unseen.
_UNWILDCARDED_ASNS = (0, 65535)


def _community_entry(text: str) -> tuple[int, ...]:
    """'ASN:VALUE', a well-known name, or 'ASN:*' (any value of that AS, not 0 nor 65535)."""
    if text.endswith(":*"):
        asn, _ = parse_community(text[:-1] + "0")
        if asn in _UNWILDCARDED_ASNS:
            raise ValueError(f"{text!r}: no wildcard in AS {asn}; list its communities one by one (e.g. 65535:666)")
        return (asn, ANY)
    return parse_community(text)


def _large_community_entry(text: str) -> tuple[int, ...]:
    """'A:B:C', or 'A:*:*' (any large community of global administrator A)."""
    if text.endswith(":*:*"):
        return (parse_large_community(text[:-4] + ":0:0")[0], ANY, ANY)
    return parse_large_community(text)


def _checked(parse: Callable[[str], tuple[int, ...]]) -> Callable[[str], str]:
    """A validator keeping the text as written once `parse` has read it."""

    def check(text: str) -> str:
        parse(text)
        return text

    return check


def _namespace(text: str) -> str:
    if not DNS_LABEL.fullmatch(text):
        raise ValueError(f"{text!r} is not a namespace name")
    return text


CommunityEntry = Annotated[str, AfterValidator(_checked(_community_entry))]
LargeCommunityEntry = Annotated[str, AfterValidator(_checked(_large_community_entry))]
Namespace = Annotated[str, AfterValidator(_namespace)]

_ENABLED = "Services may use this annotation (refused ones are ignored with a warning and counted)."
_NAMESPACES = "Namespaces whose Services may use it; empty: every namespace."


class KindRule(StrictModel):
    """Whether Services may use one annotation kind, and from which namespaces."""

    enabled: bool = Field(default=True, description=_ENABLED)
    namespaces: list[Namespace] = Field(default_factory=list, description=_NAMESPACES)

    def rule(self) -> AnnotationRule:
        return AnnotationRule(self.enabled, frozenset(self.namespaces))


class CommunityRule(StrictModel):
    """Communities a Service may set; each one of the annotation must be listed, or the annotation is ignored."""

    enabled: bool = Field(default=False, description=_ENABLED)
    namespaces: list[Namespace] = Field(default_factory=list, description=_NAMESPACES)
    allowlist: list[CommunityEntry] = Field(
        default_factory=list,
        description="'ASN:VALUE', a well-known name (no-export, blackhole, ...: allowed only when listed) or 'ASN:*' "
        "(any value; not for AS 0 or 65535).",
    )

    def rule(self) -> AnnotationRule:
        entries = tuple(_community_entry(text) for text in self.allowlist)
        return AnnotationRule(self.enabled, frozenset(self.namespaces), entries)


class LargeCommunityRule(StrictModel):
    """Large communities a Service may set; each one of the annotation must be listed, or it is ignored."""

    enabled: bool = Field(default=False, description=_ENABLED)
    namespaces: list[Namespace] = Field(default_factory=list, description=_NAMESPACES)
    allowlist: list[LargeCommunityEntry] = Field(
        default_factory=list, description="'A:B:C', or 'A:*:*' (any of global administrator A)."
    )

    def rule(self) -> AnnotationRule:
        entries = tuple(_large_community_entry(text) for text in self.allowlist)
        return AnnotationRule(self.enabled, frozenset(self.namespaces), entries)


class NumberRule(StrictModel):
    """The values a Service may set for LOCAL_PREF or MED; one outside the bounds is ignored."""

    enabled: bool = Field(default=False, description=_ENABLED)
    namespaces: list[Namespace] = Field(default_factory=list, description=_NAMESPACES)
    minimum: int = Field(default=0, ge=0, le=UINT32_MAX, description="Smallest value allowed.")
    maximum: int = Field(default=UINT32_MAX, ge=0, le=UINT32_MAX, description="Largest value allowed.")

    @model_validator(mode="after")
    def _ordered(self) -> NumberRule:
        if self.minimum > self.maximum:
            raise ValueError(f"maximum: {self.maximum} is below minimum {self.minimum}")
        return self

    def rule(self) -> AnnotationRule:
        return AnnotationRule(self.enabled, frozenset(self.namespaces), minimum=self.minimum, maximum=self.maximum)


class Annotations(StrictModel):
    """The admin's policy over the per-Service annotations: which a Service may use, with which values, from which
    namespaces. Defaults: opt-out and require-endpoints allowed (they only take the Service's own routes away),
    communities, large communities, LOCAL_PREF and MED refused (they reach the routers)."""

    opt_out: KindRule = Field(default_factory=KindRule, description="The opt-out annotation.")
    require_endpoints: KindRule = Field(default_factory=KindRule, description="The require-endpoints annotation.")
    communities: CommunityRule = Field(default_factory=CommunityRule, description="The communities annotation.")
    large_communities: LargeCommunityRule = Field(
        default_factory=LargeCommunityRule, description="The large-communities annotation."
    )
    local_preference: NumberRule = Field(default_factory=NumberRule, description="The local-preference annotation.")
    med: NumberRule = Field(default_factory=NumberRule, description="The med annotation.")

    def policy(self) -> AnnotationPolicy:
        return AnnotationPolicy(
            opt_out=self.opt_out.rule(),
            require_endpoints=self.require_endpoints.rule(),
            communities=self.communities.rule(),
            large_communities=self.large_communities.rule(),
            local_preference=self.local_preference.rule(),
            med=self.med.rule(),
        )

    def warnings(self) -> list[str]:
        """'KEY: why' for rules that are valid but admit nothing."""
        return [
            f"annotations.{name}.allowlist: empty while enabled is true, so every {name.replace('_', '-')} "
            "annotation naming one is ignored; list the values Services may set, or set enabled false"
            for name in ("communities", "large_communities")
            if getattr(self, name).enabled and not getattr(self, name).allowlist
        ]
