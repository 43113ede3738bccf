"""List pages and watch events to objects: each decoded on its own into its slim shape, raw JSON where it won't fit."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

import msgspec

from announcer.shapes import ObjectShape

# msgspec reads a page's envelope and leaves each object undecoded (msgspec.Raw), then decodes each object into its
# shape (shapes.py). An object that does not fit (containers of another shape, or JSON only Python's decoder reads:
# NaN, Infinity, a BOM, UTF-16) is decoded by json.loads instead, so convert.py names its faults exactly as before;
# a page or an event line whose envelope does not fit is read entirely by json.loads, as before.
_UNFIT = (msgspec.DecodeError, UnicodeDecodeError)  # msgspec's ValidationError is a DecodeError
_CHANGE_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED"})


def field(document: object, name: str) -> object:
    """document[name] if document is a JSON object, else None."""
    return document.get(name) if isinstance(document, dict) else None


class _ListMeta(msgspec.Struct):
    resource_version: object = msgspec.field(default=None, name="resourceVersion")
    continued: object = msgspec.field(default=None, name="continue")


class _ListDocument(msgspec.Struct):
    """A list page, its items left undecoded."""

    metadata: _ListMeta | None = None
    items: list[msgspec.Raw] | None = None


class _EventDocument(msgspec.Struct):
    """A watch event, its object left undecoded."""

    kind: object = msgspec.field(default=None, name="type")
    obj: msgspec.Raw = msgspec.field(default=msgspec.Raw(b"null"), name="object")


_LIST_DECODER = msgspec.json.Decoder(_ListDocument)
_EVENT_DECODER = msgspec.json.Decoder(_EventDocument)


@functools.cache
def shape_decoder(shape: type[ObjectShape]) -> Callable[[bytes | msgspec.Raw], object]:
    """Decodes one object's JSON into `shape`; an object that does not fit it comes back as raw JSON (json.loads)."""
    typed = msgspec.json.Decoder(shape)

    def decode(text: bytes | msgspec.Raw) -> object:
        try:
            return typed.decode(text)
        except _UNFIT:
            document: object = json.loads(bytes(text))
            return document

    return decode


def read_page(data: bytes, shape: type[ObjectShape] | None) -> tuple[list[object], object, object]:
    """(items, metadata.resourceVersion, metadata.continue) of a list page; items raw JSON, or with a shape each
    decoded on its own into it (shape_decoder)."""
    if shape is not None:
        try:
            page = _LIST_DECODER.decode(data)
        except _UNFIT:
            pass  # an envelope of another shape: read below exactly as without a shape
        else:
            decode = shape_decoder(shape)
            meta = page.metadata or _ListMeta()
            return [decode(item) for item in page.items or ()], meta.resource_version, meta.continued
    document: object = json.loads(data)
    metadata = field(document, "metadata")
    items = field(document, "items")
    return (
        list(items) if isinstance(items, list) else [],
        field(metadata, "resourceVersion"),
        field(metadata, "continue"),
    )


def read_event(line: bytes, shape: type[ObjectShape] | None) -> tuple[object, object]:
    """(type, object) of a watch event's line; with a shape, the object of an ADDED, MODIFIED or DELETED event is
    decoded on its own into it (shape_decoder); any other event's object (BOOKMARK, ERROR) is raw JSON."""
    if shape is not None:
        try:
            event = _EVENT_DECODER.decode(line)
        except _UNFIT:
            pass  # an envelope of another shape: read below exactly as without a shape
        else:
            kind = event.kind
            if isinstance(kind, str) and kind in _CHANGE_TYPES:
                return kind, shape_decoder(shape)(event.obj)
            document: object = json.loads(bytes(event.obj))
            return kind, document
    event_document: object = json.loads(line)
    return field(event_document, "type"), field(event_document, "object")


def object_name(obj: object) -> str:
    """'namespace/name' of a raw object or of its shape, for a log line, whatever it holds."""
    if isinstance(obj, ObjectShape):
        metadata: object = obj.metadata
        namespace, name = getattr(metadata, "namespace", None), getattr(metadata, "name", None)
    else:
        metadata = field(obj, "metadata")
        namespace, name = field(metadata, "namespace"), field(metadata, "name")
    return f"{namespace!r}/{name!r}"


def object_version(obj: object) -> object:
    """metadata.resourceVersion of a raw object or of its shape."""
    if isinstance(obj, ObjectShape):
        return obj.metadata.resourceVersion
    return field(field(obj, "metadata"), "resourceVersion")
