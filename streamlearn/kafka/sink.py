"""Producer sink: publishes embeddings and dead letters with acks=all and idempotent retries.

Messages are queued without waiting; ``flush()`` blocks until the broker has
acknowledged all of them and raises :class:`DeliveryError` if any failed, so
the service never commits offsets past an output that was lost.
"""

from __future__ import annotations

import logging

from kafka import KafkaProducer
from kafka.errors import KafkaError

from streamlearn.config import KafkaSettings
from streamlearn.errors import KafkaSetupError, StreamlearnError
from streamlearn.kafka.connection import client_options
from streamlearn.kafka.limits import producer_max_bytes

__all__ = ["KafkaSink", "DeliveryError"]

logger = logging.getLogger(__name__)


class DeliveryError(StreamlearnError):
    """A message could not be delivered to Kafka even after the producer's retries."""


class KafkaSink:
    """Kafka producer for the output topics; ``send`` queues, ``flush`` waits for acknowledgement."""

    def __init__(self, settings: KafkaSettings, *, linger_ms: int = 5) -> None:
        self.settings = settings
        self._pending: list = []
        try:
            self._producer = KafkaProducer(
                acks="all",
                enable_idempotence=True,  # retries cannot duplicate or reorder within a partition
                linger_ms=linger_ms,
                batch_size=262_144,
                # A dead letter holds its record whole (see limits.dead_letter_bytes); embeddings stay under 1 MiB.
                max_request_size=producer_max_bytes(settings.max_message_bytes),
                **client_options(settings),
            )
        except (KafkaError, OSError) as exc:
            raise KafkaSetupError(f"cannot start a producer for {settings.bootstrap_servers}: {exc}") from exc

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queue ``value`` (keyed by ``key``) for ``topic`` without waiting for the broker."""
        try:
            self._pending.append(self._producer.send(topic, value=value, key=key))
        except KafkaError as exc:
            raise DeliveryError(f"cannot queue a {len(value)}-byte message for {topic}: {exc}") from exc

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every queued message is acknowledged; raise DeliveryError naming the first failure.

        With ``timeout_s``, give up after that long: DeliveryError says how many messages the broker
        had not confirmed by then (they may still arrive, or not).
        """
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            unconfirmed = sum(1 for f in pending if not f.is_done)
            raise DeliveryError(f"flush of {len(pending)} messages failed ({unconfirmed} not confirmed): {exc}") from exc
        failed = [f for f in pending if f.exception is not None or not f.is_done]
        if failed:
            first = failed[0].exception
            raise DeliveryError(f"{len(failed)} of {len(pending)} messages were not delivered: {first!r}") from first

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is queued (best effort) and close the producer."""
        try:
            self._producer.close(timeout=timeout_s)
        except KafkaError as exc:
            logger.warning("error while closing the producer: %s", exc)

    def __enter__(self) -> KafkaSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
