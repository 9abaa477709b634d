"""Model fusion across replicas without a broker: the model message, the learner's averaging, a fusion round.

The round's exchange is an in-memory list here, standing in for the models topic so that
each decision can be driven exactly; tests/integration/test_fusion.py runs two daemons on
the real broker.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from streamlearn.config import FusionSettings, Settings
from streamlearn.learner import Learner
from streamlearn.metrics import Metrics
from streamlearn.peers import PeerModelError, decode_model, encode_model, incompatibility
from streamlearn.replica_fusion import average_states
from streamlearn.replicas import ReplicaSync
from streamlearn.service import Service

N_FEATURES = 5


def _stream(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(0).normal(scale=3.0, size=(3, N_FEATURES))
    y = rng.integers(0, 3, n)
    return (centers[y] + rng.normal(size=(n, N_FEATURES))).astype(np.float32), [["a", "b", "c"][k] for k in y]


def _learner(samples: int, seed: int = 1) -> Learner:
    learner = Learner(seed=0, hidden_dim=16, embedding_dim=4)
    x, y = _stream(samples, seed)
    for start in range(0, samples, 32):
        learner.process(x[start:start + 32], y[start:start + 32])
    return learner


def _state(learner: Learner) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in learner.encoder.state_dict().items()}


def _message(learner: Learner, replica: str = "peer", **overrides) -> bytes:
    meta = {"model_version": learner.model_version, "labeled_seen": learner.labeled_seen, "created_at": 1000.0}
    meta.update(overrides)
    return encode_model(learner.encoder.state_dict(), replica, learner.architecture(), **meta)


# ------------------------------------------------------------------ the message
def test_a_model_message_round_trips_exactly() -> None:
    learner = _learner(200)
    peer = decode_model(_message(learner, "r7"))
    assert (peer.replica, peer.model_version, peer.labeled_seen, peer.created_at) == (
        "r7", learner.model_version, 200, 1000.0)
    assert peer.architecture == {"n_features": N_FEATURES, "hidden_dim": 16, "embedding_dim": 4, "seed": 0}
    assert set(peer.state) == set(learner.encoder.state_dict())
    for name, tensor in learner.encoder.state_dict().items():
        assert torch.equal(peer.state[name], tensor)


def _with_metadata(value: bytes, **changes) -> bytes:
    """``value`` with its safetensors metadata edited (the header rewritten, the tensors kept)."""
    import json
    size = int.from_bytes(value[:8], "little")
    header = json.loads(value[8:8 + size])
    for key, new in changes.items():
        if new is None:
            header["__metadata__"].pop(key)
        else:
            header["__metadata__"][key] = new
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + value[8 + size:]


@pytest.mark.parametrize("case, reason", [
    ("empty", "not_safetensors"), ("short", "not_safetensors"), ("huge header", "not_safetensors"),
    ("header not json", "not_safetensors"), ("no metadata", "bad_metadata"), ("other format", "bad_metadata"),
    ("no replica", "bad_metadata"), ("version not a number", "bad_metadata"), ("nan weight", "non_finite"),
    ("tensors cut off", "not_safetensors"),
])
def test_a_message_that_is_no_model_says_why(case: str, reason: str) -> None:
    learner = _learner(100)
    good = _message(learner)
    nan = {name: tensor.clone() for name, tensor in learner.encoder.state_dict().items()}
    next(iter(nan.values())).view(-1)[0] = float("nan")
    value = {
        "empty": b"",
        "short": b"abc",
        "huge header": (10**9).to_bytes(8, "little") + b"{}",
        "header not json": (4).to_bytes(8, "little") + b"nope",
        "no metadata": (2).to_bytes(8, "little") + b"{}",
        "other format": _with_metadata(good, format="other/9"),
        "no replica": _with_metadata(good, replica=None),
        "version not a number": _with_metadata(good, model_version="seven"),
        "nan weight": encode_model(nan, "peer", learner.architecture(), model_version=1, labeled_seen=1,
                                   created_at=1.0),
        "tensors cut off": good[:-100],
    }[case]
    with pytest.raises(PeerModelError) as caught:
        decode_model(value)
    assert caught.value.reason == reason


def test_incompatible_encoders_are_named() -> None:
    learner = _learner(100)
    peer = decode_model(_message(learner))
    arch, shapes = learner.architecture(), {k: v.shape for k, v in learner.encoder.state_dict().items()}
    assert incompatibility(peer, arch, shapes) is None
    assert "n_features 5, ours 6" in incompatibility(peer, {**arch, "n_features": 6}, shapes)
    assert "seed" in incompatibility(peer, {**arch, "seed": 3}, shapes)
    assert "differ from ours" in incompatibility(peer, arch, {**shapes, "extra.weight": torch.Size([1])})
    bent = {**shapes, "skip.weight": torch.Size([1, 1])}
    assert "tensor skip.weight has shape" in incompatibility(peer, arch, bent)


# ------------------------------------------------------------------ the learner's averaging
def test_fusion_averages_the_encoders_and_follows_through() -> None:
    own, peer = _learner(600, seed=1), _learner(600, seed=2)
    before, theirs = _state(own), _state(peer)
    version = own.model_version
    result = own.fuse([theirs])
    assert result.outcome == "fused" and result.window >= 40
    assert result.fused >= result.own - 0.02
    for name, tensor in own.encoder.state_dict().items():
        torch.testing.assert_close(tensor, (before[name] + theirs[name]) / 2)
    assert own.model_version == version + 1
    if own.teacher is not None:  # distillation now holds on to the fused encoder, not the one it replaced
        for name, tensor in own.teacher.encoder.state_dict().items():
            assert torch.equal(tensor, own.encoder.state_dict()[name])
    # The prototypes were refitted under the new encoder: the learner still predicts its stream.
    x, y = _stream(300, seed=9)
    assert np.mean(np.array(own.predict(x)[0]) == np.array(y)) > 0.9


def test_an_average_that_scores_lower_is_not_kept() -> None:
    own = _learner(600)
    before, version = _state(own), own.model_version
    rng = torch.Generator().manual_seed(0)
    noise = {name: torch.randn(t.shape, generator=rng) * 50 for name, t in before.items()}  # finite, but no encoder
    result = own.fuse([noise])
    assert result.outcome == "rejected" and result.fused < result.own - 0.02
    assert own.model_version == version
    for name, tensor in own.encoder.state_dict().items():
        assert torch.equal(tensor, before[name])


def test_fusion_waits_for_enough_labeled_samples() -> None:
    own, peer = _learner(20), _learner(600)
    before = _state(own)
    assert own.fuse([_state(peer)]).outcome == "deferred"
    for name, tensor in own.encoder.state_dict().items():
        assert torch.equal(tensor, before[name])
    assert Learner(seed=0).fuse([_state(peer)]).outcome == "deferred"  # no model at all yet


def test_fusion_is_deterministic() -> None:
    results = []
    for _ in range(2):
        own, peer = _learner(400, seed=1), _learner(400, seed=2)
        own.fuse([_state(peer)])
        x, _ = _stream(50, seed=5)
        results.append((own.predict(x)[0], own.embed(x)))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_average_states_is_the_mean() -> None:
    states = [{"w": torch.full((2, 2), float(v))} for v in (1, 2, 6)]
    assert torch.equal(average_states(states)["w"], torch.full((2, 2), 3.0))
    with pytest.raises(ValueError):
        average_states([])


# ------------------------------------------------------------------ a fusion round
class _Topic:
    """The models topic as a list of records (stands in for Kafka; see the module docstring)."""

    max_bytes = 32 * 1_048_576
    topic = "models"

    def __init__(self) -> None:
        self.records: list = []
        self.read = 0

    def publish(self, replica: str, value: bytes) -> None:
        self.add(replica.encode(), value)

    def add(self, key: bytes, value: bytes) -> None:
        self.records.append(SimpleNamespace(topic=self.topic, partition=0, offset=len(self.records), key=key,
                                            value=value))

    def poll(self, timeout_ms: int = 0) -> list:
        new, self.read = self.records[self.read:], len(self.records)
        return new


def _sync(topic: _Topic, metrics: Metrics, replica: str = "me", **settings) -> ReplicaSync:
    return ReplicaSync(topic, FusionSettings(every_seconds=1.0, **settings), metrics, replica=replica,
                       clock=lambda: 1000.0)


def _count(metrics: Metrics, outcome: str) -> float:
    return metrics.registry.get_sample_value("streamlearn_peer_models_total", {"outcome": outcome})


def test_a_round_fuses_new_peer_models_once_and_publishes_only_after_learning(
        caplog: pytest.LogCaptureFixture) -> None:
    topic, metrics = _Topic(), Metrics()
    own, peer = _learner(600, seed=1), _learner(600, seed=2)
    sync = _sync(topic, metrics)
    topic.add(b"other", _message(peer, "other"))
    topic.add(b"junk", b"not a model")
    with caplog.at_level(logging.WARNING, logger="streamlearn.replicas"):
        result = sync.run(own)
    assert result.outcome == "fused"
    assert _count(metrics, "fused") == 1 and _count(metrics, "not_safetensors") == 1
    assert any(getattr(r, "where", None) == "models[0]@1" and r.reason == "not_safetensors" for r in caplog.records)
    published = [r for r in topic.records if r.key == b"me"]
    assert len(published) == 1 and decode_model(published[0].value).model_version == own.model_version
    assert metrics.registry.get_sample_value("streamlearn_peer_replicas") == 1
    # Nothing new from the peer and nothing learned here: no second fusion, no second publication
    # (idle replicas would otherwise answer each other's averages forever), and our own message read back is skipped.
    version = own.model_version
    assert sync.run(own) is None
    assert own.model_version == version and len([r for r in topic.records if r.key == b"me"]) == 1
    x, y = _stream(32, seed=3)
    own.process(x, y)
    sync.run(own)
    assert len([r for r in topic.records if r.key == b"me"]) == 2
    assert metrics.registry.get_sample_value("streamlearn_models_published_total") == 2


def test_a_round_counts_an_incompatible_peer_once_and_keeps_a_deferred_one() -> None:
    topic, metrics = _Topic(), Metrics()
    stranger = Learner(seed=5, hidden_dim=16, embedding_dim=4)  # other initial weights
    x, y = _stream(64, seed=4)
    stranger.process(x, y)
    young, peer = _learner(20), _learner(600, seed=2)
    sync = _sync(topic, metrics)
    topic.add(b"stranger", _message(stranger, "stranger"))
    topic.add(b"other", _message(peer, "other"))
    assert sync.run(young).outcome == "deferred"  # 20 labels: too few to judge the average
    assert _count(metrics, "incompatible") == 1 and _count(metrics, "fused") == 0
    sync.run(young)
    assert _count(metrics, "incompatible") == 1  # the same model is not counted again
    x, y = _stream(200, seed=6)
    young.process(x, y)
    assert sync.run(young).outcome == "fused"  # the deferred model was kept for this round
    assert _count(metrics, "fused") == 1


def test_stale_peer_models_are_not_used() -> None:
    topic, metrics = _Topic(), Metrics()
    own, peer = _learner(600, seed=1), _learner(600, seed=2)
    topic.add(b"other", _message(peer, "other", created_at=1000.0 - 700))
    assert _sync(topic, metrics, max_age_seconds=600).run(own) is None
    assert metrics.registry.get_sample_value("streamlearn_peer_replicas") == 0


def test_fusion_off_has_no_round() -> None:
    with pytest.raises(ValueError, match="off"):
        ReplicaSync(_Topic(), FusionSettings(), Metrics())


def test_a_failing_fusion_round_is_logged_and_the_daemon_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def run(self, learner: Learner) -> None:
            raise RuntimeError("models topic exploded")

    service = Service(Settings())
    service.learner, service.replicas = _learner(64), Broken()
    with caplog.at_level(logging.ERROR, logger="streamlearn.service"):
        service._fusion_round()  # no exception reaches the loop
    assert any("fusion round failed" in r.getMessage() and "exploded" in r.error for r in caplog.records)
