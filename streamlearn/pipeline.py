"""One pass over a polled batch: decode and validate, test-then-train, publish embeddings and dead letters.

This is steps 1-2 of DESIGN.md §1 for a whole batch at once: one
``learner.process`` per chunk of at most ``learner.batch_size`` valid samples
(replay uses the same bound, but a poll may bring fewer records, so batch
edges, and with them the exact predictions, can differ between a replay and
the daemon on the same stream), messages queued without waiting, and one
flush at the end. The learner's meta steps for a chunk (``learner.settle``,
most of its time) run after the chunk's embeddings are queued, and after the
flush for the last chunk: they delay the next poll, not these outputs. Bad
records and batches the learner fails on go to the dead-letter topic; nothing
is dropped silently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamlearn.config import Settings
from streamlearn.errors import SchemaError
from streamlearn.kafka.protocols import Record, Sink
from streamlearn.kafka.limits import (
    HEADROOM,
    MAX_REQUEST_BYTES,
    TOPIC_DEFAULT_BYTES,
    producer_max_bytes,
    raw_bytes_within,
)
from streamlearn.metrics import Metrics
from streamlearn.schema import PROCESSING_ERROR, DeadLetter, EmbeddingRecord, Sample, decode_sample

__all__ = ["BatchHandler", "BatchOutcome", "PROCESSING_ERROR"]

logger = logging.getLogger(__name__)


#: Largest embedding record (key and value) published; a sample whose record would be larger is dead-lettered.
MAX_OUTPUT_BYTES = MAX_REQUEST_BYTES - HEADROOM
# JSON text of one embedding number is at most this long ("-1.2345678e-05" and a comma).
_FLOAT_CHARS = 16
# JSON escapes grow a character to at most 6 bytes, and an output holds the id and the label
# twice (id as key and in the value; label as label and possibly as another sample's prediction):
# a record no larger than this cannot make an oversized output, so it needs no closer look.
_SMALL_FACTOR = 12
# A ts this far ahead of the daemon's clock (clock skew) still counts, as latency 0; further ahead, or
# older than _MAX_LATENCY_S, it is not epoch seconds of this stream (milliseconds, a typo).
_CLOCK_SKEW_S = 300.0
_MAX_LATENCY_S = 365 * 86_400.0


@dataclass(frozen=True)
class BatchOutcome:
    """Counts for one handled batch (``embedded`` = ``learned`` + ``unlabeled``)."""

    records: int
    embedded: int
    learned: int
    unlabeled: int
    rejected: int


def _where(record: Record) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"


class BatchHandler:
    """Turns a batch of records into published embeddings (and dead letters), updating ``learner`` and metrics."""

    def __init__(self, settings: Settings, sink: Sink, metrics: Metrics, *,
                 clock: Callable[[], float] = time.time, dead_letter_limit: int | None = None) -> None:
        self.embeddings_topic = settings.kafka.embeddings_topic
        self.dead_letter_topic = settings.kafka.dead_letter_topic
        # A dead letter fits the dead-letter topic's max.message.bytes (None: not known, so the broker's
        # default) and what the producer sends.
        fits = min(dead_letter_limit or TOPIC_DEFAULT_BYTES, producer_max_bytes(settings.kafka.max_message_bytes))
        self._max_raw_bytes = raw_bytes_within(fits)
        self.max_bytes = settings.kafka.max_message_bytes
        self.n_features = settings.learner.n_features
        self.chunk = settings.learner.batch_size
        self._embedding_bytes = settings.learner.embedding_dim * _FLOAT_CHARS
        self._small_record = max(0, MAX_OUTPUT_BYTES - self._embedding_bytes) // _SMALL_FACTOR
        self.sink = sink
        self.metrics = metrics
        self.clock = clock
        self._implausible_ts_logged = False
        self._unsettled_s: float | None = None  # time of the last process(settle=False) until its settle

    def handle(self, learner: Any, records: Sequence[Record]) -> BatchOutcome:
        """Process ``records`` in order; return what happened to them. Raises only if the sink fails."""
        valid, rejected = self._decode(learner, records)
        published: list[tuple[Record, Sample]] = []
        for start in range(0, len(valid), self.chunk):
            chunk = valid[start:start + self.chunk]
            self._settle(learner)
            sent = self._learn_and_publish(learner, chunk)
            published.extend(sent)
            rejected += len(chunk) - len(sent)
        self.sink.flush()
        self._observe_latency(published)
        self._settle(learner)
        embedded = len(published)
        learned = sum(1 for _, s in published if s.label is not None)
        m = self.metrics.samples
        m.labels(outcome="embedded").inc(embedded)
        m.labels(outcome="learned").inc(learned)
        m.labels(outcome="unlabeled").inc(embedded - learned)
        m.labels(outcome="rejected").inc(rejected)
        return BatchOutcome(len(records), embedded, learned, embedded - learned, rejected)

    def _decode(self, learner: Any, records: Sequence[Record]) -> tuple[list[tuple[Record, Sample]], int]:
        """Validate every record; dead-letter the bad ones. The first valid sample fixes an unknown dimension."""
        expected = learner.n_features or self.n_features
        valid: list[tuple[Record, Sample]] = []
        rejected = 0
        for record in records:
            default_id = f"{record.topic}-{record.partition}-{record.offset}"
            raw = record.value if record.value is not None else b""
            try:
                sample = decode_sample(raw, default_id=default_id, n_features=expected, max_bytes=self.max_bytes)
            except SchemaError as exc:
                self._dead_letter(record, exc.reason, exc.detail, learner.model_version)
                rejected += 1
                continue
            if len(raw) > self._small_record and (size := self._output_estimate(sample)) > MAX_OUTPUT_BYTES:
                detail = (f"its embedding record would be about {size} bytes (the id twice, as key and in the value, "
                          f"and the label twice, as label and possibly as a prediction), over the {MAX_OUTPUT_BYTES}-byte "
                          f"limit of an output message: shorten the id or the label")
                self._dead_letter(record, "too_large", detail, learner.model_version)
                rejected += 1
                continue
            if expected is None:
                expected = int(sample.features.shape[0])
            valid.append((record, sample))
        return valid, rejected

    def _output_estimate(self, sample: Sample) -> int:
        """Bytes of the key and value published for ``sample`` if its own label were also the prediction."""
        value = EmbeddingRecord(sample.id, (), sample.label, sample.label, 0, False, sample.ts).to_json()
        return len(sample.id.encode("utf-8")) + len(value) + self._embedding_bytes  # the key, then the value

    def _learn_and_publish(self, learner: Any, chunk: list[tuple[Record, Sample]]) -> list[tuple[Record, Sample]]:
        """Test-then-train on ``chunk`` and queue one EmbeddingRecord per sample; returns those queued.

        If the learner fails, every sample of the chunk is dead-lettered instead (none queued).
        """
        features = np.stack([s.features for _, s in chunk])
        labels = [s.label for _, s in chunk]
        started = time.perf_counter()
        try:
            result = learner.process(features, labels, settle=False)
        except Exception as exc:  # a learner bug or numeric fault must not stop the stream or lose the batch
            self.metrics.update_duration.observe(time.perf_counter() - started)
            first, last = chunk[0][0], chunk[-1][0]
            logger.error(
                "learner failed on a batch; sending it to the dead-letter topic",
                extra={"first": _where(first), "last": _where(last), "n": len(chunk),
                       "model_version": learner.model_version, "error": f"{exc.__class__.__name__}: {exc}"},
            )
            logger.debug("learner failure", exc_info=True)  # the traceback, for --log-level DEBUG
            detail = (f"learner failed on this sample's batch (it may have learned from the samples before "
                      f"the failure): {exc.__class__.__name__}: {exc}")
            for record, _ in chunk:
                self._dead_letter(record, PROCESSING_ERROR, detail, learner.model_version)
            return []
        self._unsettled_s = time.perf_counter() - started
        self.metrics.record_correct(result.correct)
        send, topic = self.sink.send, self.embeddings_topic
        embeddings, predictions, drift, versions = (
            result.embeddings, result.predictions, result.drift, result.model_versions)
        sent = []
        for i, (record, sample) in enumerate(chunk):
            ts = sample.ts if sample.ts is not None else _kafka_seconds(record)
            try:
                value = EmbeddingRecord(sample.id, embeddings[i], predictions[i], sample.label,
                                        versions[i], drift[i], ts).to_json()
                key = sample.id.encode("utf-8")
            except (TypeError, ValueError) as exc:  # validation lets no such sample through; never stop the stream
                detail = f"its embedding record cannot be encoded: {exc}"
                logger.error("cannot encode an embedding record; sending the sample to the dead-letter topic",
                             extra={"where": _where(record), "detail": detail, "model_version": learner.model_version})
                self._dead_letter(record, PROCESSING_ERROR, detail, learner.model_version)
                continue
            if len(key) + len(value) > MAX_OUTPUT_BYTES:  # a long prediction (another sample's label) on a long id
                detail = (f"learned from, but its embedding record is {len(key) + len(value)} bytes, over the "
                          f"{MAX_OUTPUT_BYTES}-byte limit of an output message (long id, label or prediction)")
                self._dead_letter(record, "too_large", detail, learner.model_version)
                continue
            send(topic, key, value)
            sent.append((record, sample))
        return sent

    def _settle(self, learner: Any) -> None:
        """Let the learner finish learning from the chunk it last processed; a failure is logged, not raised.

        That chunk's embeddings are queued already, so they stand: the learner goes on from
        where its failed step left it, as it does when ``process`` fails. The chunk's time in
        the learner (``process`` plus this) is observed here, one observation per chunk.
        """
        if self._unsettled_s is None:
            return
        started = time.perf_counter()
        try:
            learner.settle()
        except Exception as exc:
            logger.error("learner failed while learning from a published batch; its embeddings stand and the stream "
                         "goes on", extra={"model_version": learner.model_version,
                                           "error": f"{exc.__class__.__name__}: {exc}"})
            logger.debug("learner failure", exc_info=True)
        finally:
            self.metrics.update_duration.observe(self._unsettled_s + time.perf_counter() - started)
            self._unsettled_s = None

    def _dead_letter(self, record: Record, reason: str, detail: str, model_version: int) -> None:
        """Queue a DeadLetter for ``record`` (its original bytes, cut only where the dead-letter topic cannot hold them)."""
        raw = record.value if record.value is not None else b""
        if len(raw) > self._max_raw_bytes:
            detail = f"{detail} (raw truncated to its first {self._max_raw_bytes} of {len(raw)} bytes)"
            raw = raw[:self._max_raw_bytes]
        letter = DeadLetter(reason, detail, record.topic, record.partition, record.offset, raw)
        key = f"{record.topic}-{record.partition}-{record.offset}".encode()
        self.sink.send(self.dead_letter_topic, key, letter.to_json())
        self.metrics.dead_letters.labels(reason=reason).inc()
        if reason != PROCESSING_ERROR:  # those are logged once per failed batch, with the traceback
            logger.warning("rejected record", extra={"where": _where(record), "reason": reason, "detail": detail,
                                                     "model_version": model_version})

    def _observe_latency(self, published: list[tuple[Record, Sample]]) -> None:
        """Observe event time -> now (the flush just returned) for every published sample.

        A ``ts`` that cannot be epoch seconds of about now (milliseconds, a negative or far
        future value) gives way to the Kafka timestamp, so it cannot pin the histogram at 0 or
        at decades; the first such sample is logged.
        """
        now = self.clock()
        observe = self.metrics.end_to_end_latency.observe
        for record, sample in published:
            latency = None if sample.ts is None else now - sample.ts
            if latency is not None and not -_CLOCK_SKEW_S <= latency <= _MAX_LATENCY_S:
                if not self._implausible_ts_logged:
                    self._implausible_ts_logged = True
                    logger.warning("a sample's ts is not epoch seconds of about now (milliseconds?); its latency is "
                                   "measured from the Kafka timestamp (logged once)",
                                   extra={"where": _where(record), "ts": sample.ts})
                latency = None
            if latency is None and (kafka_ts := _kafka_seconds(record)) is not None:
                latency = now - kafka_ts
            if latency is not None:
                observe(max(0.0, latency))


def _kafka_seconds(record: Record) -> float | None:
    """The record's Kafka timestamp in epoch seconds, or None when the broker gave none."""
    ts = record.timestamp
    return ts / 1000.0 if ts is not None and ts >= 0 else None
