"""Producer sink: publishes embeddings and dead letters with acks=all and idempotent retries.

Messages are queued without waiting; ``flush()`` blocks until the broker has
acknowledged all of them and raises :class:`DeliveryError` if any failed, so
the service never commits offsets past an output that was lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from streamlearn.config import KafkaSettings
from streamlearn.errors import KafkaSetupError, StreamlearnError
from streamlearn.kafka.connection import client_options
from streamlearn.kafka.limits import producer_max_bytes

__all__ = ["KafkaSink", "DeliveryError"]

logger = logging.getLogger(__name__)


# kafka-python gives up on a message after its delivery timeout (120 s); a flush waits that long and a
# little more. Without a bound, a flush could wait for good: after a broker outage of a minute or two,
# kafka-python 3.0.12's idempotent producer can sit waiting for a producer id it never asks for again.
_DELIVERY_TIMEOUT_S = 120.0
FLUSH_LIMIT_S = _DELIVERY_TIMEOUT_S + 15.0
_FLUSH_SLICE_S = 0.5  # how soon a flush notices a stop request
_STOP_GRACE_S = 10.0  # after a stop request, a flush waits this much longer at most
_SLOW_FLUSH_S = 10.0  # a flush still waiting after this long is logged (the broker may be down)


class DeliveryError(StreamlearnError):
    """A message could not be delivered to Kafka even after the producer's retries."""


class KafkaSink:
    """Kafka producer for the output topics; ``send`` queues, ``flush`` waits for acknowledgement."""

    def __init__(self, settings: KafkaSettings, *, linger_ms: int = 5,
                 stop: Callable[[], bool] | None = None) -> None:
        self.settings = settings
        self._stop = stop  # true once the process was asked to stop: flushes then give up sooner
        self._pending: list = []
        self._flush_started: float | None = None  # while a flush waits: when it began
        try:
            self._producer = KafkaProducer(
                acks="all",
                enable_idempotence=True,  # retries cannot duplicate or reorder within a partition
                linger_ms=linger_ms,
                batch_size=262_144,
                # A dead letter holds its record whole (see limits.dead_letter_bytes); embeddings stay under 1 MiB.
                max_request_size=producer_max_bytes(settings.max_message_bytes),
                delivery_timeout_ms=int(_DELIVERY_TIMEOUT_S * 1000),
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

        Gives up after ``timeout_s`` (default FLUSH_LIMIT_S, past the producer's own delivery
        timeout), or 10 s after ``stop`` turned true: DeliveryError then says how many messages the
        broker had not confirmed (they may still arrive, or not).
        """
        pending, self._pending = self._pending, []
        if not pending:
            return
        started = self._flush_started = time.monotonic()
        try:
            self._wait_for(pending, started, FLUSH_LIMIT_S if timeout_s is None else timeout_s)
        finally:
            self._flush_started = None
        failed = [f for f in pending if f.exception is not None or not f.is_done]
        if failed:
            first = failed[0].exception
            raise DeliveryError(f"{len(failed)} of {len(pending)} messages were not delivered: {first!r}") from first

    def unconfirmed_for(self) -> float:
        """Seconds the running flush has waited for the broker's acknowledgements (0 when none runs).

        Read from other threads (the metrics): a loop blocked here cannot report the wait itself.
        """
        started = self._flush_started
        return 0.0 if started is None else time.monotonic() - started

    def _wait_for(self, pending: list, started: float, limit_s: float) -> None:
        """:meth:`flush`'s wait, in slices that notice a stop request; DeliveryError past the deadline."""
        deadline = started + limit_s
        stopping = warned = False
        while True:
            try:
                self._producer.flush(timeout=max(0.0, min(_FLUSH_SLICE_S, deadline - time.monotonic())))
                break
            except KafkaTimeoutError as exc:
                now = time.monotonic()
                if not warned and now - started >= _SLOW_FLUSH_S:
                    warned = True
                    logger.warning("Kafka has not confirmed the outputs yet; waiting (nothing is committed meanwhile)",
                                   extra={"messages": len(pending), "seconds": round(now - started),
                                          "gives_up_after_s": round(deadline - started)})
                if not stopping and self._stop is not None and self._stop():
                    stopping, deadline = True, min(deadline, now + _STOP_GRACE_S)
                if now >= deadline:
                    unconfirmed = sum(1 for f in pending if not f.is_done)
                    why = " after the stop request" if stopping else ""
                    raise DeliveryError(f"the broker confirmed {len(pending) - unconfirmed} of {len(pending)} "
                                        f"messages within {now - started:.0f}s{why}") from exc
            except KafkaError as exc:
                unconfirmed = sum(1 for f in pending if not f.is_done)
                raise DeliveryError(f"flush of {len(pending)} messages failed ({unconfirmed} not confirmed): "
                                    f"{exc}") from exc

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
