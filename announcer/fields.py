"""Checks of single values of Kubernetes objects: names, addresses, numbers, annotation text, label selectors."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping

from announcer.model import UINT32_MAX, IPAddress, Problem

MAX_ANNOTATION_LENGTH = 1024
MAX_LIST_ITEMS = 64

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_NUMBER = re.compile(r"^[0-9]{1,10}$")


def shown(value: object) -> str:
    """A value made safe and short for a log line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# Ranges no Service address may be in, as (first, last) integers: cheaper than ipaddress's is_* properties.
_REFUSED_IPV4 = (
    (0x00000000, 0x00FFFFFF, "is in 0.0.0.0/8 (this network)"),
    (0x7F000000, 0x7FFFFFFF, "is a loopback address"),
    (0xA9FE0000, 0xA9FEFFFF, "is a link-local address"),
    (0xE0000000, 0xEFFFFFFF, "is a multicast address"),
    (0xF0000000, 0xFFFFFFFF, "is a reserved or broadcast address"),
)
_REFUSED_IPV6 = (
    (0, 1, "is unspecified or loopback"),
    (0xFFFF << 32, (0xFFFF << 32) | 0xFFFFFFFF, "is an IPv4-mapped IPv6 address"),
    (0xFE80 << 112, (0xFEC0 << 112) - 1, "is a link-local address"),
    (0xFF00 << 112, (1 << 128) - 1, "is a multicast address"),
)


# Parsed texts of recent addresses: a MODIFIED event or a relist parses again what was parsed moments before. Small on
# purpose: a churning cluster brings ever new addresses, and a cache the size of the cluster's address history made
# the announcer's RSS grow for as long as it ran (~170 bytes an entry; 131,072 entries were up to 23 MB).
@functools.lru_cache(maxsize=4_096)
def _parse_address_text(text: str) -> IPAddress:
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise ValueError(f"{text!r} has a zone index")
    number = int(address)
    for first, last, why in _REFUSED_IPV4 if address.version == 4 else _REFUSED_IPV6:
        if first <= number <= last:
            raise ValueError(f"{text!r} {why}")
    return address


def parse_service_address(value: object) -> IPAddress:
    """A unicast address a Service may carry; ValueError with the reason otherwise."""
    if not isinstance(value, str) or not value.isascii() or len(value) > 45:
        raise ValueError(f"{shown(value)} is not an IP address")
    try:
        return _parse_address_text(value)
    except ValueError as error:
        if "does not appear to be" in str(error) or "Octet" in str(error) or "Expected" in str(error):
            raise ValueError(f"{shown(value)} is not an IP address") from None
        raise


def parse_addresses(
    candidates: Iterable[tuple[str, object]], where: str, problems: list[Problem]
) -> list[tuple[str, IPAddress]]:
    """(field, address) for each candidate that is a valid service address, first occurrence only."""
    addresses: list[tuple[str, IPAddress]] = []
    seen: set[IPAddress] = set()
    for field, value in candidates:
        try:
            address = parse_service_address(value)
        except ValueError as error:
            problems.append(Problem(where, field, str(error)))
            continue
        if address not in seen:
            seen.add(address)
            addresses.append((field, address))
    return addresses


def list_field(values: object, field: str, where: str, problems: list[Problem]) -> list[tuple[str, object]]:
    """(field[index], item) of a list field, bounded; a problem if it is not a list."""
    if values is None:
        return []
    if not isinstance(values, list):
        problems.append(Problem(where, field, "must be a list"))
        return []
    if len(values) > MAX_LIST_ITEMS:
        problems.append(Problem(where, field, f"more than {MAX_LIST_ITEMS} entries; the rest are ignored"))
    return [(f"{field}[{index}]", value) for index, value in enumerate(values[:MAX_LIST_ITEMS])]


def annotation_text(value: object, field: str, where: str, problems: list[Problem]) -> str | None:
    if not isinstance(value, str):
        problems.append(Problem(where, field, f"{shown(value)} is not a string; ignored"))
        return None
    if len(value) > MAX_ANNOTATION_LENGTH or not value.isascii() or not value.isprintable():
        problems.append(Problem(where, field, f"{shown(value)} has characters that are not allowed; ignored"))
        return None
    return value.strip()


def parse_uint32(text: str) -> int:
    """ASCII decimal digits (at most 10) of a number from 0 to 2**32 - 1, or ValueError."""
    if not _NUMBER.fullmatch(text) or int(text) > UINT32_MAX:
        raise ValueError(f"{text!r} is not a number from 0 to {UINT32_MAX}")
    return int(text)


def is_dns_subdomain(value: str) -> bool:
    """A Kubernetes DNS subdomain name (RFC 1123): lower-case letters, digits, '-' and '.', at most 253 characters."""
    return DNS_SUBDOMAIN.fullmatch(value) is not None


def string_map(value: object, field: str, where: str, problems: list[Problem]) -> dict[str, str]:
    """A labels or annotations map; entries that are not string to string are named and dropped."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(Problem(where, field, "not an object; ignored"))
        return {}
    kept: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(key, str) and isinstance(item, str):
            kept[key] = item
        else:
            problems.append(Problem(where, f"{field}[{shown(key)}]", f"{shown(item)} is not a string; ignored"))
    return kept


# --- label keys, values and selectors (Kubernetes' apimachinery rules) ---------------------------------------------
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def check_label_key(key: str) -> str:
    """A Kubernetes label key ('[prefix/]name'), or ValueError saying why not."""
    prefix, _, name = key.rpartition("/")
    if not _LABEL_NAME.fullmatch(name) or (prefix and not is_dns_subdomain(prefix)):
        raise ValueError(f"{key!r} is not a label key ([DNS-subdomain/]name, name up to 63 characters)")
    return key


def is_label_value(value: str) -> bool:
    """A Kubernetes label value: empty, or up to 63 letters, digits, '-', '_', '.' beginning and ending alphanumeric."""
    return _LABEL_VALUE.fullmatch(value) is not None


_SELECTOR_TOKEN = re.compile(r"\s*(==|!=|[=!(),<>]|[^\s=!(),<>]+)")
_OPERATORS = ("=", "==", "!=")
INT64_MAX = 2**63 - 1
_SYMBOLS = frozenset({*_OPERATORS, "!", "(", ")", ",", "<", ">"})
_SET_OPERATORS = ("in", "notin")


class _Tokens:
    """The tokens of a label selector, as apimachinery's lexer splits it (whitespace separates; = == != ! ( ) ,
    < > are symbols; any other run of characters is one word)."""

    def __init__(self, text: str) -> None:
        self.items: list[str] = []
        position = 0
        while position < len(text):
            found = _SELECTOR_TOKEN.match(text, position)
            if found is None:  # only whitespace remains
                break
            self.items.append(found[1])
            position = found.end()
        self.index = 0

    def peek(self) -> str:
        """The next token, '' at the end."""
        return self.items[self.index] if self.index < len(self.items) else ""

    def take(self) -> str:
        token = self.peek()
        self.index += 1
        return token


def _word(part: str, what: str) -> str:
    if not part or part in _SYMBOLS:
        raise ValueError(f"found {part or 'the end'!r} where {what} was expected")
    return part


def _key(tokens: _Tokens) -> None:
    check_label_key(_word(tokens.take(), "a label key"))  # 'in' and 'notin' too: apimachinery reads them as keys


def _value(token: str) -> None:
    if not is_label_value(token):
        raise ValueError(f"{token!r} is not a label value (up to 63 letters, digits, '-', '_', '.')")


def _value_set(tokens: _Tokens) -> None:
    """'(' VALUE {',' VALUE} ')', where a value may be empty ('()', '(a,)'), as apimachinery reads it."""
    if tokens.take() != "(":
        raise ValueError("'in' and 'notin' take a parenthesised list of values")
    expect_value = True
    while (part := tokens.take()) != ")":
        if part == ",":
            expect_value = True
        elif expect_value and part and part not in _SYMBOLS:
            _value(part)
            expect_value = False
        else:
            raise ValueError(f"found {part or 'the end'!r} in a list of values, where ',' or ')' was expected")


def _requirement(tokens: _Tokens) -> None:
    """[!]KEY, KEY (=|==|!=) [VALUE], KEY (in|notin) (VALUES), or KEY (<|>) NUMBER."""
    if tokens.peek() == "!":
        tokens.take()
        _key(tokens)
        return
    _key(tokens)
    operator = tokens.peek()
    if operator in _OPERATORS:
        tokens.take()
        if tokens.peek() not in ("", ","):  # an empty value is one; 'in' and 'notin' are values here
            _value(_word(tokens.take(), "a label value"))
    elif operator in _SET_OPERATORS:
        tokens.take()
        _value_set(tokens)
    elif operator in ("<", ">"):
        tokens.take()
        number = tokens.take()
        if not (number.isascii() and number.isdigit() and int(number) <= INT64_MAX):
            raise ValueError(f"{operator!r} takes a whole number (at most {INT64_MAX}), not {number or 'nothing'!r}")


def check_label_selector(text: str) -> str:
    """A label selector the API server accepts (apimachinery's labels.Parse grammar: requirements separated by
    ',', each [!]KEY, KEY =|==|!= VALUE, KEY in|notin (VALUES) or KEY <|> NUMBER), or ValueError naming it and why
    not."""
    tokens = _Tokens(text)
    try:
        while tokens.peek():
            _requirement(tokens)
            separator = tokens.take()
            if separator == "," and not tokens.peek():
                raise ValueError("a ',' ends it: a requirement was expected after it")
            if separator not in ("", ","):
                raise ValueError(f"found {separator!r} where ',' or the end was expected")
    except ValueError as error:
        raise ValueError(f"{text[:200]!r} is not a label selector: {error}") from None
    return text
