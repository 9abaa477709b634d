"""Two replicas in one consumer group share their encoders through the models topic, on a real broker.

Both daemons run in threads of this process, each with its own replica id, metrics, API
port and checkpoint directory, on a samples topic of two partitions. The samples are sent
once both are ready (each owns a partition), in rounds until both replicas have fused. A
message that is not a model is put in the models topic too: each replica counts it and
goes on.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from kafka import KafkaProducer

from streamlearn.config import Settings
from streamlearn.kafka import ensure_topics
from streamlearn.metrics import Metrics
from streamlearn.peers import decode_model
from streamlearn.service import Service
from tests.integration.support import free_port, wait_for
from tests.integration.test_daemon import read_topic

pytestmark = pytest.mark.integration

N_FEATURES = 6
ROUND = 600  # samples per round, half on each partition
WAIT_S = 120.0


def _settings(bootstrap: str, suffix: str, replica: str, directory: Path) -> Settings:
    return Settings(
        kafka={"bootstrap_servers": bootstrap, "samples_topic": f"fu-{suffix}.samples",
               "embeddings_topic": f"fu-{suffix}.embeddings", "dead_letter_topic": f"fu-{suffix}.dead-letter",
               "models_topic": f"fu-{suffix}.models", "group_id": f"fu-{suffix}", "partitions": 2,
               "poll_max_records": 100},
        api={"port": free_port()},
        checkpoint={"dir": directory / replica, "every_seconds": 5.0},
        learner={"hidden_dim": 32, "embedding_dim": 8, "batch_size": 32},
        fusion={"every_seconds": 1.0, "replica_id": replica},
    )


def _rows(start: int, n: int) -> list[bytes]:
    """Three separable classes (the same centres in every round), ids ``s<start>`` on."""
    rng = np.random.default_rng(start)
    centers = np.random.default_rng(1).normal(scale=4.0, size=(3, N_FEATURES))
    return [json.dumps({"id": f"s{i}", "features": (centers[i % 3] + rng.normal(size=N_FEATURES)).round(4).tolist(),
                        "label": ["a", "b", "c"][i % 3]}).encode() for i in range(start, start + n)]


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _value(service: Service, outcome: str) -> float:
    return service.metrics.registry.get_sample_value("streamlearn_peer_models_total", {"outcome": outcome}) or 0.0


def test_replicas_fuse_each_others_encoders(kafka_bootstrap: str, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:10]
    replicas = {name: _settings(kafka_bootstrap, suffix, name, tmp_path) for name in ("r0", "r1")}
    first = replicas["r0"]
    ensure_topics(first.kafka)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    sent = 0
    try:
        services = {name: Service(s, metrics=Metrics()) for name, s in replicas.items()}
        outcomes: dict[str, object] = {}

        def run(name: str) -> None:
            try:
                outcomes[name] = services[name].run(timeout=WAIT_S + 60)
            except BaseException as exc:  # reported by the assertion on the outcome
                outcomes[name] = exc

        threads = [threading.Thread(target=run, args=(name,), daemon=True) for name in services]
        for thread in threads:
            thread.start()
        try:
            for s in replicas.values():
                wait_for(lambda: _ready(s.api.port), "both replicas to own a partition", WAIT_S)
            producer.send(first.kafka.models_topic, key=b"intruder", value=b"not a model")
            # Each replica learns its partition, publishes its encoder and averages in the other's. An average
            # may score too low to keep (two young encoders that went apart), and a replica only publishes
            # after learning: the stream goes on, a round at a time, until both have fused.
            deadline = time.monotonic() + WAIT_S
            while not all(_value(s, "fused") >= 1 for s in services.values()):
                assert time.monotonic() < deadline, (
                    f"timed out after {WAIT_S:.0f}s waiting for both replicas to fuse: "
                    f"{ {n: (_value(s, 'fused'), _value(s, 'rejected')) for n, s in services.items()} }")
                for i, row in enumerate(_rows(sent, ROUND), start=sent):
                    producer.send(first.kafka.samples_topic, value=row, partition=i % 2, key=f"s{i}".encode())
                producer.flush(timeout=30)
                sent += ROUND
                wait_for(lambda: sum(s.consumed for s in services.values()) >= sent, "the round to be consumed", WAIT_S)
                time.sleep(2 * first.fusion.every_seconds)  # the rounds of both replicas after it
            wait_for(lambda: all(_value(s, "not_safetensors") == 1 for s in services.values()),
                     "the intruder to be counted by both", WAIT_S)
            embeddings = read_topic(kafka_bootstrap, first.kafka.embeddings_topic, sent)
        finally:
            for service in services.values():
                service.stop()
            for thread in threads:
                thread.join(timeout=60)
    finally:
        producer.close()

    assert outcomes == {"r0": 0, "r1": 0}
    assert sorted({json.loads(m.value)["id"] for m in embeddings}) == sorted(f"s{i}" for i in range(sent))
    for name, service in services.items():
        assert service.learner.samples_seen >= sent // 2  # its partition (more if a rebalance gave it more)
        registry = service.metrics.registry
        assert registry.get_sample_value("streamlearn_models_published_total") >= 1
        assert registry.get_sample_value("streamlearn_peer_replicas") == 1
    # The models topic holds both replicas' encoders, each readable, with the architecture both were set up with.
    models = read_topic(kafka_bootstrap, first.kafka.models_topic, 3, settle_s=1.0)
    by_key = {}
    for message in models:
        if message.key != b"intruder":
            by_key[message.key.decode()] = decode_model(message.value)
    assert set(by_key) == {"r0", "r1"}
    for name, peer in by_key.items():
        assert peer.replica == name
        assert peer.architecture == {"n_features": N_FEATURES, "hidden_dim": 32, "embedding_dim": 8, "seed": 0}
        assert 0 < peer.labeled_seen <= services[name].learner.labeled_seen
