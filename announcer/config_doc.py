"""The configuration reference: the README's Markdown table, generated from the schema's own descriptions."""

from __future__ import annotations

import re
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from announcer.config import Config


def _type_text(annotation: Any) -> str:
    """A short, Markdown-safe name of a field's type."""
    text = str(annotation)
    for noise in (
        "typing.",
        "ipaddress.",
        "pathlib.",
        "announcer.config.",
        "announcer.config_bgp.",
        "announcer.config_annotations.",
        "<class '",
        "'>",
    ):
        text = text.replace(noise, "")
    text = re.sub(r"Annotated\[int, FieldInfo\(.*?\)\]", "int", text)
    text = re.sub(r"Annotated\[(.*?), (?:Before|After)Validator\(.*?\)\]", r"\1", text)
    text = re.sub(r"^Optional\[(.*)\]$", r"\1 or None", text)
    text = re.sub(r"^Union\[(.*)\]$", lambda match: match[1].replace(", ", " or "), text)
    return text.replace(" | ", " or ").replace("|", " or ")


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds, directly, in a list, or as an optional."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def config_reference(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Markdown table rows documenting every configuration key, from the models' own descriptions."""
    rows: list[str] = []
    for name, info in model.model_fields.items():
        nested = _nested_model(info.annotation)
        key = f"{prefix}{name}" + ("[]" if get_origin(info.annotation) is list and nested else "")
        if info.is_required():
            default = "required"
        elif info.default_factory is not None:
            default = "see below" if nested else f"`{info.default_factory()!r}`"  # type: ignore[call-arg]
        else:
            default = f"`{info.default!r}`"
        description = (info.description or (nested.__doc__ if nested else "") or "").strip().replace("|", "or")
        rows.append(f"| `{key}` | {_type_text(info.annotation)} | {default} | {description} |")
        if nested is not None:
            rows.extend(config_reference(nested, key + "."))
    return rows


def reference_table() -> str:
    """The whole table as it stands in the README between the config-reference markers."""
    return "\n".join(["| key | type | default | meaning |", "|---|---|---|---|", *config_reference()])
