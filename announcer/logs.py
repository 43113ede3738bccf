"""Logging to stderr: text, or one JSON object per line with the structured fields a message carries."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Literal

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The `extra=` fields log calls give, copied into the JSON object when a record has them.
STRUCTURED_FIELDS = ("object", "field", "prefix", "peer", "annotation", "rule", "resource")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time (UTC, ISO 8601, ms), level, logger, message, then each
    structured field the record carries, and the exception's traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.gmtime(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z"
        line: dict[str, str] = {
            "time": stamp,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in STRUCTURED_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=True)


def setup_logging() -> None:
    """Text on stderr until the configuration says otherwise (stdout is ExaBGP's command pipe)."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=TEXT_FORMAT)


def configure_logging(level: str, log_format: Literal["text", "json"]) -> None:
    """Apply the configuration's level and format to the handlers setup_logging() installed."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if log_format == "json":
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())
