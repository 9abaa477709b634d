"""The models topic: replicas publish their encoders there and read each other's.

The topic is compacted with one message key per replica, so a replica that starts
reads every peer's newest model from the beginning and nothing older survives long.
Each replica reads all of it with a consumer outside any group (it needs every peer's
model, not a share) and publishes without waiting: a failed publish is reported at the
next one, never stops the daemon, and the next round publishes a newer model anyway.
"""

from __future__ import annotations

import logging
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from streamlearn.config import KafkaSettings
from streamlearn.errors import KafkaSetupError
from streamlearn.kafka.admin import ensure_topics
from streamlearn.kafka.connection import client_options

__all__ = ["ModelExchange", "MAX_MODEL_BYTES"]

logger = logging.getLogger(__name__)

#: Largest model message: an encoder of 20,000 features at the default widths fits (~16 MB of float32).
MAX_MODEL_BYTES = 32 * 1_048_576
_METADATA_WAIT_S = 15.0


class ModelExchange:
    """Producer and groupless consumer of ``settings.models_topic`` (created compacted if absent)."""

    def __init__(self, settings: KafkaSettings, *, max_bytes: int = MAX_MODEL_BYTES) -> None:
        self.topic = settings.models_topic
        self.max_bytes = max_bytes
        ensure_topics(settings, {self.topic: 1},
                      configs={self.topic: {"cleanup.policy": "compact", "max.message.bytes": str(max_bytes)}})
        self._pending = None
        try:
            self._producer = KafkaProducer(acks="all", enable_idempotence=True, max_request_size=max_bytes,
                                           **client_options(settings))
        except (KafkaError, OSError) as exc:
            raise KafkaSetupError(f"cannot start a producer for {self.topic}: {exc}") from exc
        try:
            self._consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                           max_partition_fetch_bytes=max_bytes, fetch_max_bytes=2 * max_bytes,
                                           **client_options(settings))
            self._consumer.assign(self._partitions())
            self._consumer.seek_to_beginning()
        except (KafkaError, OSError) as exc:
            self._producer.close(timeout=1.0)
            raise KafkaSetupError(f"cannot read the models topic {self.topic}: {exc}") from exc

    def _partitions(self) -> list[TopicPartition]:
        deadline = time.monotonic() + _METADATA_WAIT_S
        while not (partitions := self._consumer.partitions_for_topic(self.topic)):
            if time.monotonic() > deadline:
                raise KafkaSetupError(f"the models topic {self.topic} has no partitions after {_METADATA_WAIT_S:.0f} s")
            self._consumer.poll(timeout_ms=100)  # lets the client refresh its metadata
        return [TopicPartition(self.topic, p) for p in sorted(partitions)]

    def publish(self, replica: str, value: bytes) -> None:
        """Queue this replica's model; logs (once per round) if the previous one was not delivered."""
        self._report_previous()
        try:
            self._pending = self._producer.send(self.topic, key=replica.encode(), value=value)
        except KafkaError as exc:
            logger.warning("model not published", extra={"topic": self.topic, "bytes": len(value),
                                                           "error": f"{exc.__class__.__name__}: {exc}"})

    def _report_previous(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and pending.is_done and pending.exception is not None:
            exc = pending.exception
            logger.warning("model not published", extra={"topic": self.topic,
                                                           "error": f"{exc.__class__.__name__}: {exc}"})

    def poll(self, timeout_ms: int = 0) -> list:
        """The model messages that arrived since the last poll (ConsumerRecords); [] when the broker is away."""
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms)
        except KafkaError as exc:
            logger.warning("models topic not read", extra={"topic": self.topic,
                                                          "error": f"{exc.__class__.__name__}: {exc}"})
            return []
        return [record for records in batches.values() for record in records]

    def close(self) -> None:
        for close in (self._consumer.close, lambda: self._producer.close(timeout=5.0)):
            try:
                close()
            except KafkaError as exc:
                logger.warning("error while closing a models-topic client", extra={"error": str(exc)})
