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

__all__ = ["KeyValueFormatter", "RepeatFilter", "configure_logging"]

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


class RepeatFilter(logging.Filter):
    """Lets one record of each kind through per ``window_s`` from the loggers under ``prefix``; counts the rest.

    A kind is the logger, the level and the message before its arguments are filled in.
    kafka-python logs every failed reconnect, at ERROR and WARNING, several lines a time:
    an unreachable broker printed ~21 lines before our own one-line answer, and an outage
    fills a daemon's log. The first record of a kind passes at once; the next one after the
    window passes with ``suppressed=N``, the number held back meanwhile. Other loggers pass.

    >>> f = RepeatFilter("kafka", window_s=60.0, clock=iter([0.0, 1.0, 2.0, 61.0]).__next__)
    >>> def rec(i):
    ...     return logging.LogRecord("kafka.net", logging.ERROR, "", 0, "Connection failed: %s", (i,), None)
    >>> records = [rec(i) for i in range(4)]
    >>> [f.filter(r) for r in records], records[-1].suppressed
    ([True, False, False, True], 2)
    """

    _MAX_KINDS = 1_000  # kinds remembered at once (messages formatted before logging make new kinds)

    def __init__(self, prefix: str, window_s: float = 60.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.prefix = prefix
        self.window_s = window_s
        self.clock = clock
        self._kinds: dict[tuple[str, int, str], list[float | int]] = {}  # kind -> [passed at, held back since]

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.name == self.prefix or record.name.startswith(self.prefix + ".")):
            return True
        kind = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        seen = self._kinds.get(kind)
        if seen is not None and now - seen[0] < self.window_s:
            seen[1] += 1
            return False
        if seen is not None and seen[1]:
            record.suppressed = seen[1]
        if len(self._kinds) >= self._MAX_KINDS:
            self._kinds.clear()
        self._kinds[kind] = [now, 0]
        return True


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
    if numeric > logging.DEBUG:  # when debugging, every line
        handler.addFilter(RepeatFilter("kafka"))
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _NOISY:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
