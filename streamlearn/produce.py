"""``streamlearn produce``: feed the samples topic from a JSONL file or the built-in demo stream.

File lines are sent as they are (bytes, line ending removed; blank lines
too), so malformed input reaches the daemon and its dead-letter topic exactly
as written. ``--rate`` paces the stream; a progress bar shows on a terminal;
one summary line is written at the end.

Ctrl-C (SIGINT) or SIGTERM stops the stream between two messages: what was queued is flushed
(for at most ``_FLUSH_ON_STOP_S``), the summary line says so, and the exit code is 128 plus the
signal's number (130 for Ctrl-C). A second Ctrl-C abandons the flush at once.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streamlearn.config import Settings
from streamlearn.jsonl import iter_lines
from streamlearn.kafka import DeliveryError, KafkaSink, ensure_topics, service_topic_configs
from streamlearn.kafka.limits import MAX_REQUEST_BYTES

__all__ = ["produce_main", "demo_messages", "file_messages"]

logger = logging.getLogger(__name__)

_FLUSH_EVERY = 5_000  # bounds the producer's pending futures on long runs
_FLUSH_ON_STOP_S = 10.0  # longest wait for the broker's acknowledgements after a stop signal
# Kafka's record and batch headers: a message larger than this cannot be sent at all.
_LARGEST_MESSAGE = MAX_REQUEST_BYTES - 1_024


def file_messages(path: Path, count: int | None = None) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) for each line of ``path`` (at most ``count``): no key, the line's bytes as the value."""
    for number, raw in iter_lines(path, max_bytes=_LARGEST_MESSAGE):  # longer ones are not sent: not read whole
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

    0 when every line was sent, 130 after Ctrl-C (143 after SIGTERM), 1 when some lines were too large
    for any Kafka message: those are named in the log and skipped, and the rest are still sent.
    """
    topic = settings.kafka.samples_topic
    # Created as the daemon would create it (room for kafka.max_message_bytes over the broker's default).
    ensure_topics(settings.kafka, {topic: settings.kafka.partitions}, configs=service_topic_configs(settings.kafka))
    if demo:
        from streamlearn.streams.demo import DEMO_SIZE

        total = count if count is not None else DEMO_SIZE
        messages, what = demo_messages(total, settings.learner.seed), "demo samples"
    elif path is not None:
        messages, total, what = file_messages(path, count), count, f"lines of {path}"
    else:
        raise ValueError("produce_main needs a path or demo=True")
    sent, too_large, started = 0, 0, time.monotonic()
    unconfirmed = ""
    with _stop_signals() as stop, KafkaSink(settings.kafka, stop=lambda: bool(stop)) as sink, \
            _progress(total, what) as advance:
        for key, value in messages:
            size = getattr(value, "size", len(value)) + len(key or b"")  # a LongLine: the whole line's size
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
                    stop.sleep(wait)
            if stop:
                break
            try:
                sink.send(topic, key, value)
            except DeliveryError as exc:
                raise DeliveryError(f"{_where(path, sent + too_large + 1)} (after {sent} sent): {exc}") from exc
            sent += 1
            advance()
            if sent % _FLUSH_EVERY == 0:
                sink.flush()
            if stop:
                break
        if stop:
            logger.info("stop requested: flushing what was queued", extra={"signal": signal.Signals(stop.signum).name})
            try:  # the broker may be what is slow: do not keep a user who asked to stop waiting for long
                sink.flush(timeout_s=_FLUSH_ON_STOP_S)
            except DeliveryError as exc:
                logger.warning("stopped before the broker confirmed every message", extra={"error": str(exc)})
                unconfirmed = "; not all confirmed by the broker (see the log)"
            sink.close(timeout_s=1.0)
        else:
            sink.flush()
    elapsed = max(time.monotonic() - started, 1e-9)
    note = f" (interrupted{unconfirmed})" if stop else ""
    if too_large:
        note += f"; {too_large} over the {_LARGEST_MESSAGE}-byte message limit not sent (named in the log)"
    sys.stdout.write(f"sent {sent} {what} to {topic} in {elapsed:.1f}s ({sent / elapsed:.0f}/s){note}\n")
    sys.stdout.flush()
    if stop:
        return 128 + stop.signum
    return 1 if too_large else 0


class _StopFlag:
    """Raised by SIGINT or SIGTERM (true from then on); ``signum`` says which.

    A plain attribute, not a ``threading.Event``: setting an Event takes a lock, which the
    signal handler could find held by the very thread it interrupted.
    """

    _SLICE_S = 0.05  # how soon a paced wait notices the flag

    def __init__(self) -> None:
        self.signum = 0

    def __bool__(self) -> bool:
        return self.signum != 0

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less once the flag is raised."""
        deadline = time.monotonic() + seconds
        while not self:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, self._SLICE_S))


@contextmanager
def _stop_signals() -> Iterator[_StopFlag]:
    """A flag that SIGINT and SIGTERM raise, checked between messages.

    Python's own SIGINT handler raises KeyboardInterrupt wherever the main thread happens to be,
    inside a Kafka client call too, which leaves the producer half-way through it. The first
    signal restores the previous handlers, so a second Ctrl-C interrupts the final flush at once
    (KeyboardInterrupt, exit 130). A signal the process ignores (a background job's SIGINT) stays
    ignored. Off the main thread (tests) no handler can be installed: the flag never rises.
    """
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    # Ignored signals stay ignored; None: a handler not installed from Python, which cannot be put back.
    previous = {sig: handler for sig, handler in previous.items() if handler not in (signal.SIG_IGN, None)}

    def on_signal(signum: int, frame: object) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        flag.signum = signum  # nothing more here: the handler runs wherever the main thread was

    for sig in previous:
        signal.signal(sig, on_signal)
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
