"""The configuration schema: pydantic models holding every validation rule, errors naming the key."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from announcer.config_annotations import Annotations
from announcer.config_bgp import Bgp, StrictModel
from announcer.exabgp_settings import exabgp_setting_problem
from announcer.fields import check_label_key, check_label_selector, is_dns_subdomain
from announcer.model import Attributes, Family, Kind, family_of, parse_community, parse_large_community
from announcer.policy import AddressRule, NodeRule, Policy

ENV_NODE_NAME = "NODE_NAME"
ENV_ROUTER_ID = "ROUTER_ID"
PRIVILEGED_PORTS = 1024  # binding a port below this needs root or CAP_NET_BIND_SERVICE (Linux default)


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the key."""


def _parse_cidr(value: Any) -> Any:
    """A CIDR string as a network, host bits refused; one sentence naming the value otherwise."""
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a CIDR")
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as error:
        raise ValueError(f"{value!r} is not a CIDR ({error})") from None


# Each item checked on its own, so that every bad one is reported (under its index), not only the first.
Cidrs = list[Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_parse_cidr)]]


class AddressSource(StrictModel):
    """An address kind taken from user-set fields; announced only inside the allowlist (CVE-2020-8554)."""

    enabled: bool = Field(default=False, description="Announce this kind at all.")
    allowlist: Cidrs = Field(default_factory=list, description="CIDRs an address must fall in; empty announces none.")

    def rule(self) -> AddressRule:
        return AddressRule(self.enabled, tuple(self.allowlist))


class AggregationLengths(StrictModel):
    """The prefix length one address kind's Cluster-policy addresses are announced at, per family."""

    aggregation_length_ipv4: int | None = Field(
        default=None, gt=0, le=32, description="IPv4: the address masked to this length; unset: the /32."
    )
    aggregation_length_ipv6: int | None = Field(
        default=None, gt=0, le=128, description="IPv6: the address masked to this length; unset: the /128."
    )

    def lengths(self) -> dict[Family, int]:
        chosen = {Family.IPV4: self.aggregation_length_ipv4, Family.IPV6: self.aggregation_length_ipv6}
        return {family: length for family, length in chosen.items() if length is not None}


class Aggregation(StrictModel):
    """Aggregation by prefix length (MetalLB's and Cilium's semantics), per address kind and family.

    A Cluster-policy address is announced as its covering prefix, held while any Service needs it; a Local-policy
    address stays a host route. The aggregate carries the kind's configured attributes (no per-Service override).
    """

    cluster_ips: AggregationLengths = Field(default_factory=AggregationLengths, description="spec.clusterIPs.")
    external_ips: AggregationLengths = Field(default_factory=AggregationLengths, description="spec.externalIPs.")
    load_balancer_ips: AggregationLengths = Field(
        default_factory=AggregationLengths, description="status.loadBalancer.ingress[].ip."
    )

    def by_kind(self) -> dict[Kind, dict[Family, int]]:
        return {
            Kind.CLUSTER_IP: self.cluster_ips.lengths(),
            Kind.EXTERNAL_IP: self.external_ips.lengths(),
            Kind.LOAD_BALANCER_IP: self.load_balancer_ips.lengths(),
        }


class Announce(StrictModel):
    """Which addresses are announced."""

    cluster_ips: bool = Field(default=True, description="Announce every address of spec.clusterIPs.")
    cluster_ip_traffic_policy: Literal["external", "internal"] = Field(
        default="external",
        description="Which traffic policy gates cluster IPs: 'external' (externalTrafficPolicy, Calico's "
        "semantics) or 'internal' (internalTrafficPolicy, kube-router's and Cilium's).",
    )
    external_ips: AddressSource = Field(default_factory=AddressSource, description="spec.externalIPs.")
    load_balancer_ips: AddressSource = Field(
        default_factory=AddressSource, description="status.loadBalancer.ingress[].ip (ipMode Proxy skipped)."
    )
    service_cidrs: Cidrs = Field(
        default_factory=list, description="Aggregates announced from every node (Calico's serviceClusterIPs)."
    )
    service_label_selector: str = Field(
        default="", description="Kubernetes label selector; only matching Services are considered."
    )
    annotation_prefix: str = Field(
        default="bgp.announcer.io/",
        pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)$",
        description="Prefix of the per-Service annotations: opt-out, communities, large-communities, "
        "local-preference, med, require-endpoints.",
    )

    # --- no endpoint anywhere, and aggregation (issue #11, items 2 and 4) ---
    require_endpoints: bool = Field(
        default=False,
        description="Do not announce a Cluster-policy Service for a family with no ready or serving endpoint in "
        "the whole cluster (anycast fail-over); the require-endpoints annotation overrides it per Service.",
    )
    aggregation: Aggregation = Field(
        default_factory=Aggregation,
        description="Announce Cluster-policy addresses as covering prefixes of these lengths (per kind, family).",
    )

    @model_validator(mode="after")
    def _aggregates_inside_allowlists(self) -> Announce:
        """An aggregate must not cover addresses outside the allowlist its addresses were admitted by."""
        for name, source in (("external_ips", self.external_ips), ("load_balancer_ips", self.load_balancer_ips)):
            lengths: AggregationLengths = getattr(self.aggregation, name)
            for family, length in lengths.lengths().items():
                for network in source.allowlist:
                    if family_of(network) is family and network.prefixlen > length:
                        raise ValueError(
                            f"aggregation.{name}.aggregation_length_{family.value}: {length} is shorter than the "
                            f"allowlist entry {network} of {name}, so an aggregate would cover addresses outside "
                            f"the allowlist; use a length of at least {network.prefixlen}"
                        )
        return self

    @field_validator("service_label_selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        return check_label_selector(value)


def _community(text: str) -> str:
    parse_community(text)
    return text


def _large_community(text: str) -> str:
    parse_large_community(text)
    return text


Community = Annotated[str, AfterValidator(_community)]
LargeCommunity = Annotated[str, AfterValidator(_large_community)]


class AttributeSettings(StrictModel):
    """BGP path attributes for one address kind; unset fields fall back to 'default'."""

    communities: list[Community] | None = Field(default=None, description="Standard communities, 'ASN:VALUE'.")
    large_communities: list[LargeCommunity] | None = Field(default=None, description="Large communities, 'A:B:C'.")
    local_preference: int | None = Field(default=None, ge=0, le=4_294_967_295, description="LOCAL_PREF.")
    med: int | None = Field(default=None, ge=0, le=4_294_967_295, description="MULTI_EXIT_DISC.")


class AttributesByKind(StrictModel):
    """Attributes per address kind, each overridable per Service by annotations."""

    default: AttributeSettings = Field(default_factory=AttributeSettings)
    cluster_ip: AttributeSettings = Field(default_factory=AttributeSettings)
    external_ip: AttributeSettings = Field(default_factory=AttributeSettings)
    load_balancer_ip: AttributeSettings = Field(default_factory=AttributeSettings)
    aggregate: AttributeSettings = Field(default_factory=AttributeSettings)

    def for_kind(self, kind: Kind) -> Attributes:
        """The attributes of one kind, its own settings over the defaults."""
        own: AttributeSettings = {
            Kind.CLUSTER_IP: self.cluster_ip,
            Kind.EXTERNAL_IP: self.external_ip,
            Kind.LOAD_BALANCER_IP: self.load_balancer_ip,
            Kind.AGGREGATE: self.aggregate,
        }[kind]
        base = self.default

        def pick(name: str) -> Any:
            value = getattr(own, name)
            return getattr(base, name) if value is None else value

        return Attributes(
            communities=tuple(sorted({parse_community(text) for text in pick("communities") or []})),
            large_communities=tuple(sorted({parse_large_community(text) for text in pick("large_communities") or []})),
            local_preference=pick("local_preference"),
            med=pick("med"),
        )


class Watch(StrictModel):
    """How the Kubernetes API is watched."""

    kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig path; unset: KUBECONFIG or ~/.kube/config, then the in-cluster service account.",
    )
    watch_timeout: int = Field(default=300, ge=1, description="Server-side timeout of one watch request (s).")
    request_timeout: float = Field(
        default=30.0, gt=0, description="Client-side timeout for lists and idle watch reads (s)."
    )
    page_size: int = Field(default=500, ge=1, le=10_000, description="Objects per list page.")
    backoff_initial: float = Field(default=0.5, gt=0, description="First reconnect delay (s).")
    backoff_max: float = Field(default=30.0, gt=0, description="Largest reconnect delay (s).")


# What ExaBGP's configuration parser may meet on the process's run line: plain words (no ';', '{', '}', ',', quotes,
# comment or newline, which would end or split the line, or open a block).
COMMAND_LINE_PATTERN = r"^[A-Za-z0-9_./=:+@% -]*$"


class Speaker(StrictModel):
    """How commands are streamed to ExaBGP."""

    prefixes_per_line: int = Field(
        default=500, ge=1, le=5000, description="Prefixes per bulk 'announce attributes ... nlri' line."
    )
    max_in_flight: int = Field(default=8, ge=1, le=1000, description="Commands sent before waiting for acks.")
    ack_timeout: float = Field(default=30.0, gt=0, description="How long one ack may take before it is given up.")
    shutdown_timeout: float = Field(default=5.0, gt=0, description="Bound on the withdraw-all at SIGTERM (s).")
    stop: Literal["auto", "withdraw"] = Field(
        default="auto",
        description="At SIGTERM with bgp.graceful_restart on: 'auto' hands the routes over to the DaemonSet's next "
        "pod (nothing withdrawn; the peers keep them as stale until its End-of-RIB) when the pod's DaemonSet and Node "
        "stay (asked of the API server, at most 2 s; POD_NAME and POD_NAMESPACE from the downward API), and withdraws "
        "otherwise; 'withdraw' always withdraws. Without graceful restart every stop withdraws.",
    )
    batch_delay: float = Field(
        default=0.001,
        ge=0,
        le=1,
        description="In a burst of changes, how long the loop waits for the next one before computing commands (s); "
        "a lone change is applied at once.",
    )
    announcer_command: str = Field(
        default="",
        pattern=COMMAND_LINE_PATTERN,
        description="Command ExaBGP runs as its API process; empty: this Python with '-m announcer run'. Words of "
        "letters, digits and _ . / = : + @ % - only (it is written into exabgp.conf's run line).",
    )
    environment: dict[str, str] = Field(
        default_factory=dict,
        description="ExaBGP environment settings to render (exabgp.SECTION.KEY: value), over the announcer's; only "
        "ExaBGP's own settings, with values its reader takes as written; not exabgp.api.ack, exabgp.api.encoder, "
        "exabgp.api.respawn nor exabgp.daemon.daemonize, which the announcer relies on.",
    )

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: dict[str, str]) -> dict[str, str]:
        problems = [problem for key, setting in value.items() if (problem := exabgp_setting_problem(key, setting))]
        if problems:
            raise ValueError("\n".join(problems))
        return value


def parse_listen(text: str) -> tuple[str, int]:
    """'HOST:PORT' to an address and a port: HOST an IP address (IPv6 in brackets), empty for 0.0.0.0."""
    host, separator, port_text = text.rpartition(":")
    if not separator:
        raise ValueError(f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise ValueError(f"{text!r}: only IPv6 addresses go in brackets")
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, as [ADDRESS]:PORT")
    if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    host = host or "0.0.0.0"  # noqa: S104  (an empty host means every address, as in Prometheus exporters)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: the host must be an IP address, not a name") from None
    return host, int(port_text)


class Metrics(StrictModel):
    """The Prometheus and health endpoint."""

    listen: str | None = Field(
        default=None, description="'HOST:PORT' for /metrics, /healthz, /readyz, /status; unset: off."
    )
    ready_requires_sessions: bool = Field(
        default=False,
        description="/readyz also needs an established BGP session for every family with a configured peer (off: "
        "readiness says the routes were handed to ExaBGP, not that a router has them).",
    )
    _address: tuple[str, int] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _listen(self) -> Metrics:
        try:
            self._address = None if self.listen is None else parse_listen(self.listen)
        except ValueError as error:
            raise ValueError(f"listen: {error}") from None
        return self

    @property
    def address(self) -> tuple[str, int] | None:
        """listen as (host, port), parsed once when the configuration was validated."""
        return self._address


# --- node state (issue #11, item 1) ------------------------------------------------------------------------------
DEFAULT_WITHDRAW_LABEL = "bgp.announcer.io/withdraw"


class NodeState(StrictModel):
    """Withdrawing everything this node announces from its own Node object (each rule opt-in; needs get, list and
    watch on nodes)."""

    withdraw_on_label: bool = Field(
        default=False, description="Withdraw everything while the Node carries withdraw_label (value not 'false')."
    )
    withdraw_label: str = Field(
        default=DEFAULT_WITHDRAW_LABEL,
        description="The label key withdraw_on_label reads (node.kubernetes.io/exclude-from-external-load-balancers "
        "is possible, but Calico-mode clusters may set it on every node).",
    )
    withdraw_when_cordoned: bool = Field(
        default=False,
        description="Withdraw everything while the Node is cordoned (spec.unschedulable), before a drain.",
    )
    withdraw_when_not_ready: bool = Field(
        default=False, description="Withdraw everything while the Node's Ready condition is not True."
    )

    @field_validator("withdraw_label")
    @classmethod
    def _withdraw_label(cls, value: str) -> str:
        return check_label_key(value)

    def rule(self) -> NodeRule:
        return NodeRule(
            withdraw_label=self.withdraw_label if self.withdraw_on_label else None,
            withdraw_when_cordoned=self.withdraw_when_cordoned,
            withdraw_when_not_ready=self.withdraw_when_not_ready,
        )


class Config(StrictModel):
    """The whole announcer configuration."""

    node_name: str | None = Field(
        default=None, description="This node's name; the NODE_NAME environment variable overrides it."
    )
    bgp: Bgp
    announce: Announce = Field(default_factory=Announce)
    attributes: AttributesByKind = Field(default_factory=AttributesByKind)
    annotations: Annotations = Field(
        default_factory=Annotations,
        description="Which per-Service annotations act, with which values, from which namespaces (the admin's "
        "policy; by default only opt-out and require-endpoints).",
    )
    watch: Watch = Field(default_factory=Watch)
    speaker: Speaker = Field(default_factory=Speaker)
    metrics: Metrics = Field(default_factory=Metrics)
    node_state: NodeState = Field(default_factory=NodeState)
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level; logs go to stderr (stdout is ExaBGP's command pipe)."
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines on stderr: 'text', or 'json' (one object a line: time, level, logger, message, and "
        "object, field, prefix, peer, annotation, rule where the message has them).",
    )

    @field_validator("node_name")
    @classmethod
    def _node_name(cls, value: str | None) -> str | None:
        if value is not None and not is_dns_subdomain(value):
            raise ValueError("must be a DNS subdomain name (lower-case letters, digits, '-', '.')")
        return value

    def warnings(self) -> list[str]:
        """'KEY: why' for settings that are valid but do nothing, or fail where the configuration cannot see it;
        check-config and exabgp-conf print them (the configuration stays usable: root or a capability makes a low
        port work)."""
        found = []
        for index, peer in enumerate(self.bgp.peers):
            if peer.passive and peer.port < PRIVILEGED_PORTS:
                found.append(
                    f"bgp.peers.{index}.port: {peer.port} with passive true: ExaBGP listens on this port, and below "
                    f"{PRIVILEGED_PORTS} that needs root or NET_BIND_SERVICE, which the shipped image (uid 10001) does "
                    "not have, so ExaBGP would exit at start; use a port of 1024 or more on both sides (as the Calico "
                    "setup's 1790), or grant the capability"
                )
            if not peer.receive.kinds():
                found.append(
                    f"bgp.peers.{index}.receive: every kind is off, so the session comes up but {peer.address} is "
                    "sent no route; turn a kind on, or remove the peer"
                )
        for name in ("external_ips", "load_balancer_ips"):
            source: AddressSource = getattr(self.announce, name)
            if source.enabled and not source.allowlist:
                found.append(
                    f"announce.{name}.allowlist: empty while enabled is true, so no address of this kind is announced "
                    "(only addresses inside the allowlist are); add the CIDRs to announce, or set enabled false"
                )
        if self.metrics.ready_requires_sessions and self.metrics.listen is None:
            found.append(
                "metrics.ready_requires_sessions: true while metrics.listen is unset, so nothing serves /readyz"
            )
        return found + self.annotations.warnings()

    def families(self) -> set[Family]:
        """The families that have at least one peer."""
        return {peer.family for peer in self.bgp.peers}

    def policy(self) -> Policy:
        """The plain value the pure decision reads."""
        announce = self.announce
        return Policy(
            families=frozenset(self.families()),
            cluster_ips=announce.cluster_ips,
            gate_cluster_ips_by_internal_policy=announce.cluster_ip_traffic_policy == "internal",
            external_ips=announce.external_ips.rule(),
            load_balancer_ips=announce.load_balancer_ips.rule(),
            attributes={kind: self.attributes.for_kind(kind) for kind in Kind},
            service_cidrs=tuple(announce.service_cidrs),
            require_endpoints=announce.require_endpoints,
            aggregation=announce.aggregation.by_kind(),
            node=self.node_state.rule(),
            annotations=self.annotations.policy(),
        )

    @property
    def node(self) -> str:
        if self.node_name is None:
            raise ConfigError(f"node_name: not set (set it or the {ENV_NODE_NAME} environment variable)")
        return self.node_name


_KEYED_MESSAGE = re.compile(r"^(?P<key>[a-z_][a-z0-9_.]*): (?P<message>.*)$", re.DOTALL)


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem, 'SOURCE: KEY: MESSAGE'. A rule's message (pydantic's 'Value error, ' taken off) may
    hold several problems, one a line; a line may name its key below the field's, or a cross-field rule's, first."""
    lines = []
    for problem in error.errors():
        parts = [str(part) for part in problem["loc"]]
        if problem["type"] == "extra_forbidden":
            lines.append(f"{source}: {'.'.join(parts)}: unknown key")
            continue
        if problem["type"] != "value_error":
            shown = "" if problem["type"] == "missing" else f" (got {repr(problem['input'])[:80]})"
            lines.append(f"{source}: {'.'.join(parts) or '(top level)'}: {problem['msg']}{shown}")
            continue
        for text in problem["msg"].removeprefix("Value error, ").splitlines():
            keyed = _KEYED_MESSAGE.match(text)
            if keyed is not None:
                lines.append(f"{source}: {'.'.join([*parts, keyed['key']])}: {keyed['message']}")
            else:
                lines.append(f"{source}: {'.'.join(parts) or '(top level)'}: {text}")
    return "\n".join(lines)


def validate_config(document: object, source: str = "config") -> Config:
    """A decoded document (environment overrides already applied) as a Config, or ConfigError naming the key."""
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: (top level): must be a mapping")
    try:
        return Config.model_validate(document)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None
