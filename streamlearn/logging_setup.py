"""Logging configuration for the command line: key=value lines on stderr, set up once.

Modules log with ``logger = logging.getLogger(__name__)`` and pass context
through ``extra``; it is appended as ``key=value`` pairs:

>>> record = logging.LogRecord("streamlearn.x", logging.INFO, __file__, 1, "checkpoint saved", None, None)
>>> record.model_version = 3
>>> record.path = "ckpt dir"
>>> KeyValueFormatter().format(record).split(" ", 1)[1]
'level=INFO logger=streamlearn.x msg="checkpoint saved" model_version=3 path="ckpt dir"'
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any

__all__ = ["KeyValueFormatter", "configure_logging"]

# Attributes every LogRecord has; anything else on a record came from `extra=`.
# uvicorn adds `color_message` (the message again, with ANSI colours) to its records.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message"}
# Chatty third-party loggers, kept at WARNING unless we are debugging.
_NOISY = ("kafka", "uvicorn.access", "urllib3", "httpx", "matplotlib")


def _quote(value: Any) -> str:
    """Render a value for key=value output, quoting it when it has spaces, quotes or '='."""
    text = str(value)
    if text == "" or any(ch in text for ch in ' "=\n\t'):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    return text


class KeyValueFormatter(logging.Formatter):
    """Formats records as ``ts=… level=… logger=… msg="…" key=value …``.

    With ``tracebacks`` off, an exception logged with a record (ours, or a library's such as
    kafka-python's when the broker goes away) stays on the record's line as ``exc="Type: message"``.
    """

    def __init__(self, *, tracebacks: bool = True) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        """Render one record; exception tracebacks, when on, follow on their own lines."""
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"ts={created}.{int(record.msecs):03d}Z",
            f"level={record.levelname}",
            f"logger={record.name}",
            f"msg={_quote(record.getMessage())}",
        ]
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                parts.append(f"{key}={_quote(value)}")
        if record.exc_info and record.exc_info[1] is not None and not self.tracebacks:
            error = record.exc_info[1]
            parts.append(f"exc={_quote(f'{error.__class__.__name__}: {error}')}")
        line = " ".join(parts)
        if record.exc_info and self.tracebacks:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class _StreamlearnHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler we installed, so configuring twice replaces it instead of doubling output."""


def configure_logging(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Send all logging to `stream` (default stderr) at `level`; safe to call again to change either."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StreamlearnHandler):
            root.removeHandler(handler)
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = _StreamlearnHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(KeyValueFormatter(tracebacks=numeric <= logging.DEBUG))  # tracebacks at DEBUG only
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _NOISY:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
