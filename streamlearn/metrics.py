"""Prometheus metrics of the daemon, defined once, registered in a registry the caller owns.

Names follow Prometheus conventions: prefix ``streamlearn_``, base units
(seconds), counters end in ``_total``. Every service (and every test) builds
its own :class:`Metrics` on its own ``CollectorRegistry`` so nothing leaks
through the global default registry.

>>> m = Metrics()
>>> m.samples.labels(outcome="embedded").inc(3)
>>> m.registry.get_sample_value("streamlearn_samples_total", {"outcome": "embedded"})
3.0
>>> m.record_correct([True, False, None, True])
>>> round(m.registry.get_sample_value("streamlearn_prequential_accuracy"), 3)
0.667
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

from streamlearn.peers import PEER_MODEL_REASONS
from streamlearn.schema import PROCESSING_ERROR, REJECTION_REASONS

__all__ = ["Metrics", "SAMPLE_OUTCOMES", "DEAD_LETTER_REASONS", "DRIFT_DETECTORS", "PEER_MODEL_OUTCOMES"]

logger = logging.getLogger(__name__)

#: Values of ``streamlearn_samples_total{outcome}``; embedded = learned + unlabeled.
SAMPLE_OUTCOMES = ("embedded", "learned", "unlabeled", "rejected")

#: Dead-letter reasons known up front (schema reasons plus the daemon's own), pre-created at 0.
DEAD_LETTER_REASONS = (*REJECTION_REASONS, PROCESSING_ERROR)
#: Every ``detector`` a drift event can name (streamlearn.drift and the learner's repair policy):
#: error-rate detectors, the re-check after a repair, the embedding monitor, a numeric fault.
DRIFT_DETECTORS = ("adwin", "hddm", "recheck", "embedding", "numeric_fault")
#: Values of ``streamlearn_peer_models_total{outcome}``: averaged in, judged worse, or not usable and why.
PEER_MODEL_OUTCOMES = ("fused", "rejected", *PEER_MODEL_REASONS)

# Latency from event time to publication spans sub-millisecond (a local broker) to minutes (a backlog).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_UPDATE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_CHECKPOINT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """All of streamlearn's Prometheus metrics, registered in ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, accuracy_window: int = 1000) -> None:
        if accuracy_window < 1:
            raise ValueError(f"accuracy_window must be >= 1, got {accuracy_window}")
        self.registry = registry if registry is not None else CollectorRegistry()
        self.accuracy_window = accuracy_window
        r = self.registry
        self.samples = Counter(
            "streamlearn_samples_total", "Samples consumed, by outcome (embedded = learned + unlabeled).",
            ["outcome"], registry=r,
        )
        self.dead_letters = Counter(
            "streamlearn_dead_letters_total", "Records sent to the dead-letter topic, by reason.",
            ["reason"], registry=r,
        )
        self.meta_updates = Counter(
            "streamlearn_meta_updates_total", "Meta-learning steps taken by the learner.", registry=r,
        )
        self.meta_spacing = Gauge(
            "streamlearn_meta_spacing_labels",
            "Labeled samples per meta-learning step now: learner.meta_every, up to learner.meta_max_every "
            "while the episode loss is calm, learner.meta_min_every while it is still falling.",
            registry=r,
        )
        self.model_version = Gauge(
            "streamlearn_model_version", "Version of the model that embeds new samples.", registry=r,
        )
        self.drift_events = Counter(
            "streamlearn_drift_events_total", "Drift detections, by detector.", ["detector"], registry=r,
        )
        self.prequential_accuracy = Gauge(
            "streamlearn_prequential_accuracy",
            "Accuracy of predictions made before learning, over the last labeled samples (rolling window); "
            "NaN until a labeled sample arrives (after a start or a model reset).",
            registry=r,
        )
        # Not 0 before the first labeled sample: a restarted or reset daemon would look like a collapse
        # (and fire StreamlearnAccuracyDropped) while it waits for labels. NaN is "no measure yet".
        self.prequential_accuracy.set(math.nan)
        self.loss = Gauge("streamlearn_loss", "Loss of the learner's last update.", registry=r)
        self.update_duration = Histogram(
            "streamlearn_update_duration_seconds", "Time the learner spends on one batch (test-then-train).",
            buckets=_UPDATE_BUCKETS, registry=r,
        )
        self.end_to_end_latency = Histogram(
            "streamlearn_end_to_end_latency_seconds",
            "From event time (sample ts, else Kafka timestamp) to the embedding being published.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.consumer_lag = Gauge(
            "streamlearn_consumer_lag", "Records not yet consumed, by samples-topic partition.",
            ["partition"], registry=r,
        )
        self.kafka_unanswered = Gauge(
            "streamlearn_kafka_unanswered_seconds",
            "Seconds the broker has not answered the daemon (the consumer's requests, or the acknowledgements a "
            "flush waits for), 0 while it answers: an outage as the daemon sees it (consumer_lag keeps its last "
            "value meanwhile).", registry=r,
        )
        self.consumer_restarts = Counter(
            "streamlearn_consumer_restarts", "Consumers replaced because they fetched nothing while records waited.",
            registry=r,
        )
        self.peer_models = Counter(
            "streamlearn_peer_models",
            "Encoders of other replicas read from the models topic, by outcome: fused (averaged in), rejected "
            "(the average scored lower on this replica's latest samples), or why it could not be used.",
            ["outcome"], registry=r,
        )
        self.peer_replicas = Gauge(
            "streamlearn_peer_replicas", "Other replicas whose newest model is recent enough to fuse.", registry=r,
        )
        self.models_published = Counter(
            "streamlearn_models_published", "This replica's encoder published to the models topic.", registry=r,
        )
        self.checkpoint_duration = Histogram(
            "streamlearn_checkpoint_duration_seconds", "Time to write one checkpoint durably.",
            buckets=_CHECKPOINT_BUCKETS, registry=r,
        )
        self.last_checkpoint_timestamp = Gauge(
            "streamlearn_last_checkpoint_timestamp_seconds", "Unix time of the last durable checkpoint.",
            registry=r,
        )
        # Info exposes `streamlearn_model_info{...} 1`.
        self.model_info = Info("streamlearn_model", "Static facts about the served model.", registry=r)
        # process_resident_memory_bytes, process_cpu_seconds_total, ...: the dashboard's memory and CPU panels.
        ProcessCollector(registry=r)
        for outcome in SAMPLE_OUTCOMES:
            self.samples.labels(outcome=outcome)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason=reason)
        for detector in DRIFT_DETECTORS:  # series from the start: rate() is 0 before the first drift, not empty
            self.drift_events.labels(detector=detector)
        for outcome in PEER_MODEL_OUTCOMES:
            self.peer_models.labels(outcome=outcome)
        self._window: deque[bool] = deque(maxlen=accuracy_window)
        self._hits = 0
        self._model_info: dict[str, str] = {}
        self._meta_seen = 0
        self._restarts_seen = 0
        self._lag_partitions: set[str] = set()  # partitions the lag gauge has a series for
        self._drift_mark: tuple = ()

    def record_correct(self, correct: Iterable[bool | None]) -> None:
        """Add test-then-train outcomes (None = unlabeled, skipped) to the rolling accuracy."""
        window = self._window
        for ok in correct:
            if ok is None:
                continue
            if len(window) == window.maxlen:
                self._hits -= window[0]
            window.append(bool(ok))
            self._hits += bool(ok)
        if window:
            self.prequential_accuracy.set(self._hits / len(window))

    def reset_accuracy(self) -> None:
        """Forget the rolling accuracy window (after a model reset): no measure until the next labeled sample."""
        self._window.clear()
        self._hits = 0
        self.prequential_accuracy.set(math.nan)

    def set_model_info(self, info: Mapping[str, object]) -> None:
        """Publish static model facts (n_features, embedding_dim, ...) as labels of streamlearn_model_info."""
        labels = {key: "" if value is None else str(value) for key, value in info.items()}
        if labels != self._model_info:
            self._model_info = labels
            self.model_info.info(labels)

    def observe_learner(self, learner: Any, *, baseline: bool = False) -> None:
        """Copy the learner's state into the metrics: version, loss, meta steps and their spacing, drift events.

        With ``baseline=True`` (a learner just restored from a checkpoint) the
        learner's past meta steps and drift events are taken as already counted.
        Counters only grow: a drop in ``learner.meta_updates`` (after a reset)
        moves the baseline instead of decrementing.
        """
        self.model_version.set(learner.model_version)
        loss = learner.last_loss
        if loss is not None and math.isfinite(loss):
            self.loss.set(loss)
        self.meta_spacing.set(learner.meta_spacing)
        meta = int(learner.meta_updates)
        if not baseline and meta > self._meta_seen:
            self.meta_updates.inc(meta - self._meta_seen)
        self._meta_seen = meta
        newest = self._drift_mark
        for event in learner.drift_events:
            key = (event.ts, event.sample_index, event.detector)
            if key > self._drift_mark:
                if not baseline:
                    self.drift_events.labels(detector=event.detector).inc()
                newest = max(newest, key)
        self._drift_mark = newest

    def set_consumer_lag(self, lag: Mapping[int, int]) -> None:
        """Set the lag gauge to ``lag`` (partition number -> records behind): its partitions, and only those.

        A partition the consumer no longer owns (moved to another replica by a rebalance) loses its
        series; with its last value left standing, the dashboard would count its lag twice and
        ``StreamlearnStalled`` would page for a replica that has nothing to consume.
        """
        now = {str(p) for p in lag}
        for gone in self._lag_partitions - now:
            self.consumer_lag.remove(gone)
        for partition, value in lag.items():
            self.consumer_lag.labels(partition=str(partition)).set(value)
        self._lag_partitions = now

    def watch_kafka(self, unanswered: Callable[[], float]) -> None:
        """Read ``unanswered()`` at every scrape: a loop blocked on the broker cannot set the gauge itself."""
        self.kafka_unanswered.set_function(unanswered)

    def observe_consumer_restarts(self, restarts: int) -> None:
        """Count the restarts up to ``restarts``, the source's running total."""
        if restarts > self._restarts_seen:
            self.consumer_restarts.inc(restarts - self._restarts_seen)
            self._restarts_seen = restarts

    def observe_peer_models(self, outcome: str, count: int = 1) -> None:
        """Count ``count`` peer models with ``outcome`` (one of :data:`PEER_MODEL_OUTCOMES`)."""
        self.peer_models.labels(outcome=outcome).inc(count)

    def set_peer_replicas(self, count: int) -> None:
        self.peer_replicas.set(count)

    def observe_model_published(self) -> None:
        self.models_published.inc()
