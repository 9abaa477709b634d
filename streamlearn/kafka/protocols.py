"""The seams between the run loop and the outside world: a record, a source of records, a sink.

A test can plug an in-memory source/sink; production uses the Kafka ones.
Records are duck-typed: kafka-python's ``ConsumerRecord`` already has the
fields of :class:`Record`, so the hot path does not copy them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

__all__ = ["Record", "Source", "Sink"]


class Record(NamedTuple):
    """One consumed message: where it came from, its key/value bytes and its timestamp (ms)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


class Source(Protocol):
    """Where samples come from, with offsets the service commits only after a checkpoint."""

    def poll(self, max_records: int | None = None) -> Sequence[Record]:
        """Return the next batch (possibly empty), bounded in size and in waiting time."""

    def positions(self) -> dict[str, int]:
        """Next offset to consume per ``"topic:partition"``, for everything returned so far."""

    def commit(self, offsets: Mapping[str, int]) -> None:
        """Durably mark ``offsets`` (``"topic:partition"`` -> next offset) as consumed."""

    def is_assigned(self) -> bool:
        """True when the source currently owns at least one partition."""

    def lag(self) -> dict[int, int]:
        """Records behind the end of each owned partition (partition -> count), where known."""

    def unanswered_for(self) -> float:
        """Seconds the broker has not answered the source's requests (0 while it answers)."""

    @property
    def restarts(self) -> int:
        """How many times the source replaced its consumer because it had stalled (0 if it cannot)."""

    def close(self) -> None:
        """Release the connection (without committing anything)."""


class Sink(Protocol):
    """Where embeddings and dead letters go; ``flush`` makes everything sent so far durable."""

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queue one message for ``topic``."""

    def flush(self) -> None:
        """Block until every queued message is acknowledged; raise if any could not be delivered."""

    def unconfirmed_for(self) -> float:
        """Seconds the running flush has waited for acknowledgements (0 when none runs); any thread may ask."""

    def close(self) -> None:
        """Flush what is queued (best effort) and release the connection."""
