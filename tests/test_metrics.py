"""The daemon's Prometheus metrics: names, types, labels, and how learner state flows into them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamlearn.metrics import DEAD_LETTER_REASONS, DRIFT_DETECTORS, SAMPLE_OUTCOMES, Metrics
from streamlearn.schema import REJECTION_REASONS

# name (as exposed, without _total/_bucket suffixes) -> (type, label names)
EXPECTED = {
    "streamlearn_samples": ("counter", {"outcome"}),
    "streamlearn_dead_letters": ("counter", {"reason"}),
    "streamlearn_meta_updates": ("counter", set()),
    "streamlearn_meta_spacing_labels": ("gauge", set()),
    "streamlearn_model_version": ("gauge", set()),
    "streamlearn_drift_events": ("counter", {"detector"}),
    "streamlearn_prequential_accuracy": ("gauge", set()),
    "streamlearn_loss": ("gauge", set()),
    "streamlearn_update_duration_seconds": ("histogram", set()),
    "streamlearn_end_to_end_latency_seconds": ("histogram", set()),
    "streamlearn_consumer_lag": ("gauge", {"partition"}),
    "streamlearn_consumer_restarts": ("counter", set()),
    "streamlearn_peer_models": ("counter", {"outcome"}),
    "streamlearn_peer_replicas": ("gauge", set()),
    "streamlearn_models_published": ("counter", set()),
    "streamlearn_checkpoint_duration_seconds": ("histogram", set()),
    "streamlearn_last_checkpoint_timestamp_seconds": ("gauge", set()),
    "streamlearn_model_info": ("gauge", {"n_features", "embedding_dim", "version"}),  # an Info, exposed as a gauge
}


def families(registry: CollectorRegistry) -> dict:
    return {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}


@dataclass
class FakeEvent:
    detector: str
    sample_index: int
    ts: float


@dataclass
class FakeLearner:
    model_version: int = 0
    last_loss: float | None = None
    meta_updates: int = 0
    meta_spacing: int = 16
    drift_events: list = field(default_factory=list)


def test_every_contract_metric_is_exposed_with_its_type_and_labels():
    m = Metrics(CollectorRegistry())
    m.set_model_info({"n_features": 8, "embedding_dim": 4, "version": "0.1.0"})
    m.set_consumer_lag({0: 5})
    m.drift_events.labels(detector="adwin").inc()
    got = families(m.registry)
    for name, (kind, labels) in EXPECTED.items():
        assert name in got, f"{name} missing from /metrics"
        assert got[name].type == kind, f"{name} is a {got[name].type}, expected {kind}"
        label_names = {k for s in got[name].samples for k in s.labels if k != "le"}
        assert labels <= label_names, f"{name} labels {label_names} lack {labels - label_names}"


def test_counters_end_in_total_and_durations_are_in_seconds():
    text = generate_latest(Metrics().registry).decode()
    assert "streamlearn_samples_total{" in text
    assert "streamlearn_dead_letters_total{" in text
    assert "streamlearn_meta_updates_total " in text
    assert "streamlearn_update_duration_seconds_bucket{" in text


def test_labels_are_precreated_so_dashboards_see_zeroes():
    r = Metrics().registry
    for outcome in SAMPLE_OUTCOMES:
        assert r.get_sample_value("streamlearn_samples_total", {"outcome": outcome}) == 0.0
    for reason in REJECTION_REASONS:
        assert reason in DEAD_LETTER_REASONS
        assert r.get_sample_value("streamlearn_dead_letters_total", {"reason": reason}) == 0.0
    for detector in DRIFT_DETECTORS:
        assert r.get_sample_value("streamlearn_drift_events_total", {"detector": detector}) == 0.0


def test_every_detector_the_learner_names_has_a_precreated_series():
    # A stream with abrupt switches makes the learner record drift events: their names are known ones.
    import numpy as np

    from streamlearn.learner import Learner

    rng = np.random.default_rng(0)
    learner = Learner(seed=0, hidden_dim=32, embedding_dim=8)
    centers = rng.normal(scale=3.0, size=(4, 6))
    for block in range(6):
        y = rng.integers(0, 4, size=400)
        x = (centers[y] + rng.normal(size=(400, 6))).astype(np.float32)
        labels = [int((v + block) % 4) for v in y]  # the labels of the clusters rotate every block
        for i in range(0, 400, 32):
            learner.process(x[i:i + 32], labels[i:i + 32])
    named = {event.detector for event in learner.drift_events}
    assert named and named <= set(DRIFT_DETECTORS)


def test_registries_are_private_per_instance():
    a, b = Metrics(), Metrics()
    a.samples.labels(outcome="embedded").inc(7)
    assert b.registry.get_sample_value("streamlearn_samples_total", {"outcome": "embedded"}) == 0.0


def test_same_registry_twice_is_refused():
    registry = CollectorRegistry()
    Metrics(registry)
    with pytest.raises(ValueError):
        Metrics(registry)


def test_prequential_accuracy_is_a_rolling_window_over_labeled_samples():
    m = Metrics(accuracy_window=4)
    m.record_correct([False, False, None, None])
    assert m.registry.get_sample_value("streamlearn_prequential_accuracy") == 0.0
    m.record_correct([True, True, True, True])  # pushes both misses out of the 4-wide window
    assert m.registry.get_sample_value("streamlearn_prequential_accuracy") == 1.0
    m.record_correct([False])
    assert m.registry.get_sample_value("streamlearn_prequential_accuracy") == 0.75


def test_prequential_accuracy_is_nan_until_a_labeled_sample_and_after_a_reset():
    # 0 here would read as a collapse to the accuracy alert while a restarted daemon waits for labels.
    m = Metrics(accuracy_window=4)
    assert math.isnan(m.registry.get_sample_value("streamlearn_prequential_accuracy"))
    m.record_correct([None, None])
    assert math.isnan(m.registry.get_sample_value("streamlearn_prequential_accuracy"))
    m.record_correct([True, False])
    assert m.registry.get_sample_value("streamlearn_prequential_accuracy") == 0.5
    m.reset_accuracy()
    assert math.isnan(m.registry.get_sample_value("streamlearn_prequential_accuracy"))
    m.record_correct([True])
    assert m.registry.get_sample_value("streamlearn_prequential_accuracy") == 1.0


def test_rolling_accuracy_matches_a_batch_computation_at_every_step():
    import random

    rng = random.Random(0)
    m = Metrics(accuracy_window=50)
    seen: list[bool] = []
    for _ in range(300):
        ok = rng.random() < 0.7
        m.record_correct([ok])
        seen.append(ok)
        window = seen[-50:]
        assert m.registry.get_sample_value("streamlearn_prequential_accuracy") == pytest.approx(
            sum(window) / len(window))


def test_observe_learner_counts_only_new_meta_steps_and_drift_events():
    m = Metrics()
    learner = FakeLearner(model_version=3, last_loss=0.5, meta_updates=10,
                          drift_events=[FakeEvent("adwin", 5, 1.0)])
    m.observe_learner(learner, baseline=True)  # restored from a checkpoint: history is not re-counted
    r = m.registry
    assert r.get_sample_value("streamlearn_meta_updates_total") == 0.0
    assert r.get_sample_value("streamlearn_drift_events_total", {"detector": "adwin"}) == 0.0
    assert r.get_sample_value("streamlearn_model_version") == 3.0
    assert r.get_sample_value("streamlearn_meta_spacing_labels") == 16.0
    learner.meta_updates, learner.meta_spacing = 13, 64  # a calm stream: steps spaced out
    learner.drift_events.append(FakeEvent("adwin", 9, 2.0))
    learner.drift_events.append(FakeEvent("numeric_fault", 9, 2.0))
    learner.model_version = 4
    m.observe_learner(learner)
    m.observe_learner(learner)  # nothing new the second time
    assert r.get_sample_value("streamlearn_meta_updates_total") == 3.0
    assert r.get_sample_value("streamlearn_drift_events_total", {"detector": "adwin"}) == 1.0
    assert r.get_sample_value("streamlearn_drift_events_total", {"detector": "numeric_fault"}) == 1.0
    assert r.get_sample_value("streamlearn_model_version") == 4.0
    assert r.get_sample_value("streamlearn_meta_spacing_labels") == 64.0
    learner.meta_updates = 1  # a reset: the counter must not go down
    m.observe_learner(learner)
    learner.meta_updates = 2
    m.observe_learner(learner)
    assert r.get_sample_value("streamlearn_meta_updates_total") == 4.0


def test_loss_ignores_missing_and_non_finite_values():
    m = Metrics()
    m.observe_learner(FakeLearner(last_loss=0.25))
    m.observe_learner(FakeLearner(last_loss=None))
    m.observe_learner(FakeLearner(last_loss=float("nan")))
    assert m.registry.get_sample_value("streamlearn_loss") == 0.25


def test_model_info_labels_follow_the_model():
    m = Metrics()
    m.set_model_info({"n_features": None, "embedding_dim": 8, "version": "0.1.0"})
    m.set_model_info({"n_features": 64, "embedding_dim": 8, "version": "0.1.0"})
    assert m.registry.get_sample_value(
        "streamlearn_model_info", {"n_features": "64", "embedding_dim": "8", "version": "0.1.0"}) == 1.0
    assert m.registry.get_sample_value(
        "streamlearn_model_info", {"n_features": "", "embedding_dim": "8", "version": "0.1.0"}) is None


def test_accuracy_window_must_be_positive():
    with pytest.raises(ValueError, match="accuracy_window"):
        Metrics(accuracy_window=0)


def test_consumer_restarts_count_what_the_source_reports_once():
    m = Metrics(CollectorRegistry())
    for total in (0, 2, 2, 3):
        m.observe_consumer_restarts(total)
    assert m.registry.get_sample_value("streamlearn_consumer_restarts_total") == 3


def test_a_partition_moved_to_another_replica_loses_its_lag_series():
    # Left standing, its last lag would page StreamlearnStalled for a replica with nothing to consume.
    m = Metrics(CollectorRegistry())
    m.set_consumer_lag({0: 58_729, 1: 3})
    m.set_consumer_lag({1: 0})  # a rebalance gave partition 0 to another replica
    lags = {s.labels["partition"]: s.value for s in families(m.registry)["streamlearn_consumer_lag"].samples}
    assert lags == {"1": 0.0}
    m.set_consumer_lag({0: 7, 1: 1})  # and back
    lags = {s.labels["partition"]: s.value for s in families(m.registry)["streamlearn_consumer_lag"].samples}
    assert lags == {"0": 7.0, "1": 1.0}
