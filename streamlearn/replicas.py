"""Fusion rounds of a replica: read the peers' models, average in the new ones, publish its own.

A round runs on the learner thread between batches, every ``fusion.every_seconds``. It
never stops the daemon: a model message that cannot be used is counted by reason and
logged with where it lies in the models topic, and a broker that is away only delays the
exchange.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

from streamlearn.config import FusionSettings
from streamlearn.peers import PeerBook, PeerModelError, decode_model, encode_model, incompatibility
from streamlearn.replica_fusion import FusionResult

__all__ = ["ReplicaSync", "default_replica_id"]

logger = logging.getLogger(__name__)


def default_replica_id() -> str:
    """This process's name among the replicas: host name (a pod's name on Kubernetes) and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Exchange(Protocol):
    max_bytes: int
    topic: str

    def publish(self, replica: str, value: bytes) -> None: ...

    def poll(self, timeout_ms: int = 0) -> list: ...


class ReplicaSync:
    """One replica's side of model fusion: ``due()`` says when, ``run(learner)`` does a round."""

    def __init__(self, exchange: Exchange, settings: FusionSettings, metrics: Any, *, replica: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if settings.every_seconds <= 0:
            raise ValueError("fusion is off (fusion.every_seconds is 0)")
        self.exchange = exchange
        self.settings = settings
        self.metrics = metrics
        self.replica = replica or settings.replica_id or default_replica_id()
        self.clock = clock
        self.book = PeerBook(self.replica, settings.max_age_seconds)
        self._next = time.monotonic() + settings.every_seconds
        self._published_at_labels: int | None = None  # learner.labeled_seen when this replica last published
        self._warned: set[tuple[str, str]] = set()  # (replica, why) of incompatible models already logged
        self._too_large_logged = False

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def run(self, learner: Any) -> FusionResult | None:
        """One round; the fusion's result when new compatible peer models were judged, else None."""
        self._next = time.monotonic() + self.settings.every_seconds
        self._read()
        now = self.clock()
        result = self._fuse(learner, now)
        self._publish(learner, now)
        self.metrics.set_peer_replicas(self.book.peers(now))
        return result

    def _read(self) -> None:
        for record in self.exchange.poll():
            where = f"{record.topic}[{record.partition}]@{record.offset}"
            key = record.key.decode("utf-8", "replace") if record.key else ""
            if key == self.replica:
                continue  # our own, read back
            try:
                self.book.offer(decode_model(record.value or b""))
            except PeerModelError as exc:
                self.metrics.observe_peer_models(exc.reason)
                logger.warning("peer model not used", extra={"reason": exc.reason, "detail": exc.detail,
                                                             "where": where, "key": key})

    def _fuse(self, learner: Any, now: float) -> FusionResult | None:
        architecture = learner.architecture()
        if architecture is None:
            return None  # no model of our own yet: the peers' models wait
        shapes = {name: tensor.shape for name, tensor in learner.encoder.state_dict().items()}
        usable = []
        for peer in self.book.take(now):
            why = incompatibility(peer, architecture, shapes)
            if why is None:
                usable.append(peer)
                continue
            self.book.mark_used([peer])
            self.metrics.observe_peer_models("incompatible")
            if (peer.replica, why) not in self._warned:  # once per replica and reason, not every round
                self._warned.add((peer.replica, why))
                logger.warning("peer model not used", extra={"reason": "incompatible", "detail": why,
                                                             "replica": peer.replica})
        if not usable:
            return None
        result = learner.fuse([peer.state for peer in usable], margin=self.settings.margin)
        if result.outcome != "deferred":  # deferred: judged again next round (with newer models if any came)
            self.book.mark_used(usable)
            self.metrics.observe_peer_models(result.outcome, len(usable))
        return result

    def _publish(self, learner: Any, now: float) -> None:
        """Publish the encoder if it learned from a label since the last time (a fusion alone is no news:
        idle replicas would otherwise answer each other's averages forever)."""
        architecture = learner.architecture()
        if architecture is None or learner.labeled_seen == self._published_at_labels:
            return
        value = encode_model(learner.encoder.state_dict(), self.replica, architecture,
                             model_version=learner.model_version, labeled_seen=learner.labeled_seen, created_at=now)
        self._published_at_labels = learner.labeled_seen
        if len(value) > self.exchange.max_bytes:
            if not self._too_large_logged:
                self._too_large_logged = True
                logger.error("model too large to share with the replicas",
                             extra={"bytes": len(value), "limit": self.exchange.max_bytes})
            return
        self.exchange.publish(self.replica, value)
        self.metrics.observe_model_published()
