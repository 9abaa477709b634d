"""``streamlearn produce``: feed the samples topic from a JSONL file or the built-in demo stream.

File lines are sent as they are (bytes, line ending removed; blank lines
too), so malformed input reaches the daemon and its dead-letter topic exactly
as written. ``--rate`` paces the stream; a progress bar shows on a terminal;
one summary line is written at the end.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from streamlearn.config import Settings
from streamlearn.jsonl import iter_lines
from streamlearn.kafka import DeliveryError, KafkaSink, ensure_topics
from streamlearn.kafka.sink import MAX_REQUEST_BYTES

__all__ = ["produce_main", "demo_messages", "file_messages"]

logger = logging.getLogger(__name__)

_FLUSH_EVERY = 5_000  # bounds the producer's pending futures on long runs
# Kafka's record and batch headers: a message larger than this cannot be sent at all.
_LARGEST_MESSAGE = MAX_REQUEST_BYTES - 1_024


def file_messages(path: Path, count: int | None = None) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) for each line of ``path`` (at most ``count``): no key, the line's bytes as the value."""
    for number, raw in iter_lines(path):
        if count is not None and number > count:
            return
        yield None, raw


def demo_messages(count: int | None = None, seed: int = 0) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) for the demo stream: keyed by sample id, compact JSON values.

    >>> key, value = next(demo_messages(1))
    >>> key, json.loads(value)["id"] == key.decode(), len(json.loads(value)["features"])
    (b'demo-000000', True, 64)
    """
    from streamlearn.streams import demo_stream
    from streamlearn.streams.demo import DEMO_SIZE

    for sample in demo_stream(count if count is not None else DEMO_SIZE, seed=seed):
        yield sample["id"].encode("utf-8"), json.dumps(sample, separators=(",", ":")).encode("utf-8")


def produce_main(settings: Settings, path: Path | None, demo: bool, rate: float | None, count: int | None) -> int:
    """Send a file's lines or the demo stream to the samples topic; return the exit code.

    0 when every line was sent, 130 if interrupted, 1 when some lines were too large for any
    Kafka message: those are named in the log and skipped, and the rest are still sent.
    """
    topic = settings.kafka.samples_topic
    ensure_topics(settings.kafka, {topic: settings.kafka.partitions})
    if demo:
        from streamlearn.streams.demo import DEMO_SIZE

        total = count if count is not None else DEMO_SIZE
        messages, what = demo_messages(total, settings.learner.seed), "demo samples"
    elif path is not None:
        messages, total, what = file_messages(path, count), count, f"lines of {path}"
    else:
        raise ValueError("produce_main needs a path or demo=True")
    sent, too_large, interrupted, started = 0, 0, False, time.monotonic()
    with KafkaSink(settings.kafka) as sink, _progress(total, what) as advance:
        try:
            for key, value in messages:
                size = len(value) + len(key or b"")
                if size > _LARGEST_MESSAGE:
                    logger.warning("not sent: larger than a Kafka message can be",
                                   extra={"where": _where(path, sent + too_large + 1), "bytes": size,
                                          "limit": _LARGEST_MESSAGE})
                    too_large += 1
                    advance()
                    continue
                if rate is not None:
                    wait = started + sent / rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                try:
                    sink.send(topic, key, value)
                except DeliveryError as exc:
                    raise DeliveryError(f"{_where(path, sent + too_large + 1)} (after {sent} sent): {exc}") from exc
                sent += 1
                advance()
                if sent % _FLUSH_EVERY == 0:
                    sink.flush()
        except KeyboardInterrupt:
            interrupted = True
        sink.flush()
    elapsed = max(time.monotonic() - started, 1e-9)
    note = " (interrupted)" if interrupted else ""
    if too_large:
        note += f"; {too_large} over the {_LARGEST_MESSAGE}-byte message limit not sent (named in the log)"
    sys.stdout.write(f"sent {sent} {what} to {topic} in {elapsed:.1f}s ({sent / elapsed:.0f}/s){note}\n")
    sys.stdout.flush()
    return 130 if interrupted else 1 if too_large else 0


def _where(path: Path | None, number: int) -> str:
    """The message ``number`` (1-based) for a user: a line of the file, or a demo sample."""
    return f"line {number} of {path}" if path is not None else f"demo sample {number}"


class _progress:
    """A rich progress bar on a terminal (stderr), nothing otherwise; yields an ``advance()`` callable."""

    def __init__(self, total: int | None, what: str) -> None:
        self.total, self.what, self._bar = total, what, None

    def __enter__(self):
        if not sys.stderr.isatty():
            return lambda: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("producing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                             console=Console(stderr=True), transient=True)
        self._bar.start()
        task = self._bar.add_task(self.what, total=self.total)
        bar = self._bar
        return lambda: bar.advance(task)

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()
