"""End to end against a real broker: produce good and bad samples, run the daemon, check every output.

The daemon runs in a thread of this process (``Service.run`` with a stop
event), with its own topics, consumer group, checkpoint directory and API port.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streamlearn import checkpoint
from tests.integration.support import free_port, wait_for
from streamlearn.config import Settings
from streamlearn.kafka.limits import MAX_REQUEST_BYTES
from streamlearn.metrics import Metrics
from streamlearn.produce import produce_main
from streamlearn.service import Service

pytestmark = pytest.mark.integration

N_FEATURES = 8
N_VALID = 240
WAIT_S = 90.0

# Malformed records and the dead-letter reason each must get.
BAD = [
    (b"this is not json", "not_json"),
    (b'{"id": "dim", "features": [1, 2, 3], "label": "a"}', "wrong_dimension"),
    (b'{"id": "nan", "features": [1, 2, 3, 4, 5, 6, 7, NaN], "label": "a"}', "non_finite"),
    (b'{"id": "nofeat", "label": "a"}', "missing_features"),
    (b'{"id": "lbl", "features": [1, 2, 3, 4, 5, 6, 7, 8], "label": 1.5}', "invalid_label"),
    (b'["an", "array"]', "not_object"),
    (b"", "not_json"),
    (b'{"id": "half", "features": [1, 2, 3, 4, 5, 6, 7, 8], "label": "\\ud800"}', "invalid_label"),  # not text
    # Under the input limit, but its output (the id as key and in the value) would be over the output's.
    (b'{"id": "' + b"i" * 600_000 + b'", "features": [1, 2, 3, 4, 5, 6, 7, 8], "label": "a"}', "too_large"),
    # Under the input limit; its dead letter (base64) is larger than the broker's default 1 MiB, yet kept whole.
    (b'{"id": "long", "features": [' + b"1, " * 300_000 + b"1", "not_json"),
]


def valid_rows(n: int) -> list[dict]:
    """Three separable classes; every 10th unlabeled; every 7th without id (the daemon names it)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=4.0, size=(3, N_FEATURES))
    rows = []
    for i in range(n):
        k = i % 3
        row = {"features": (centers[k] + rng.normal(size=N_FEATURES)).round(4).tolist(), "ts": time.time()}
        if i % 10 != 9:
            row["label"] = ["a", "b", 2][k]
        if i % 7 != 3:
            row["id"] = f"v{i}"
        rows.append(row)
    return rows


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = WAIT_S, settle_s: float = 2.0) -> list:
    """All records of ``topic`` once at least ``expected`` arrived, plus any that follow within ``settle_s``."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        deadline = time.monotonic() + timeout_s
        while not consumer.partitions_for_topic(topic):
            assert time.monotonic() < deadline, f"topic {topic} never appeared"
            time.sleep(0.2)
        consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)])
        out: list = []
        settle_until = None
        while True:
            for records in consumer.poll(timeout_ms=200).values():
                out.extend(records)
            now = time.monotonic()
            if settle_until is None and len(out) >= expected:
                settle_until = now + settle_s
            if settle_until is not None and now >= settle_until:
                return out
            if now > deadline:
                return out
    finally:
        consumer.close()



def metric_values(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    return Settings(
        kafka={"bootstrap_servers": kafka_bootstrap, "samples_topic": f"it-{suffix}.samples",
               "embeddings_topic": f"it-{suffix}.embeddings", "dead_letter_topic": f"it-{suffix}.dead-letter",
               "group_id": f"it-{suffix}", "poll_max_records": 100},
        api={"port": free_port(), "admin_token": "tok"},
        checkpoint={"dir": tmp_path / "ckpt", "every_samples": 60, "every_seconds": 5.0},
        learner={"hidden_dim": 32, "embedding_dim": 8, "batch_size": 32, "meta_every": 16},
    )


def test_daemon_end_to_end(settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = valid_rows(N_VALID)
    lines = [json.dumps(r).encode() for r in rows]
    bad_at: dict[int, tuple[bytes, str]] = {}
    for k, (raw, reason) in enumerate(BAD):
        index = 11 + 23 * k  # every one inside the stream (N_VALID rows)
        lines.insert(index, raw)
        bad_at[index] = (raw, reason)
    path = tmp_path / "input.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    assert produce_main(settings, path, False, None, None) == 0
    assert f"sent {len(lines)} lines" in capsys.readouterr().out

    k = settings.kafka
    service = Service(settings, metrics=Metrics())
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(_run(service)), daemon=True)
    thread.start()
    try:
        embeddings = read_topic(k.bootstrap_servers, k.embeddings_topic, N_VALID)
        letters = read_topic(k.bootstrap_servers, k.dead_letter_topic, len(BAD))

        # Exactly one embedding per valid sample, keyed by its id; ids default to topic-partition-offset.
        valid_offsets = [i for i in range(len(lines)) if i not in bad_at]
        expected_ids = [r.get("id") or f"{k.samples_topic}-0-{off}" for r, off in zip(rows, valid_offsets)]
        bodies = [json.loads(m.value) for m in embeddings]
        assert Counter(b["id"] for b in bodies) == Counter(expected_ids)
        assert all(m.key == json.loads(m.value)["id"].encode() for m in embeddings)
        assert all(len(b["embedding"]) == 8 and b["model_version"] >= 0 for b in bodies)
        labeled = [b for b in bodies if b["label"] is not None]
        late = labeled[len(labeled) // 2:]
        assert sum(b["prediction"] == b["label"] for b in late) / len(late) > 0.8  # it learned the blobs

        # Exactly one dead letter per bad record, with reason, origin and the original bytes.
        dead = sorted((json.loads(m.value) for m in letters), key=lambda d: d["offset"])
        assert [(d["offset"], d["reason"]) for d in dead] == [(i, r) for i, (_, r) in sorted(bad_at.items())]
        assert all(base64.b64decode(d["raw"]) == bad_at[d["offset"]][0] for d in dead)
        assert all(d["topic"] == k.samples_topic and d["partition"] == 0 and d["detail"] for d in dead)

        _check_api(settings, service)
    finally:
        service.stop()
        thread.join(60)
    assert not thread.is_alive(), "the daemon did not stop within 60s of the stop request"
    assert outcome == [0]

    # The final checkpoint holds the end offsets, and exactly those were committed.
    learner, extra = checkpoint.load(settings.checkpoint.dir)
    assert extra["offsets"] == {f"{k.samples_topic}:0": len(lines)}
    assert learner.samples_seen == 0  # the admin reset above was checkpointed, so a restart keeps it
    assert _committed(settings) == len(lines)


def _run(service: Service) -> int | BaseException:
    try:
        return service.run(timeout=240)
    except BaseException as exc:  # reported by the test's assertion on the outcome
        return exc


def _check_api(settings: Settings, service: Service) -> None:
    base = f"http://127.0.0.1:{service.api_port}"
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/healthz").status_code == 200
        wait_for(lambda: http.get("/readyz").status_code == 200, "readiness")
        model = wait_for(lambda: (m := http.get("/v1/model").json())["samples_seen"] == N_VALID and m,
                         "the served model to have seen every valid sample")
        assert model["n_features"] == N_FEATURES and model["embedding_dim"] == 8
        assert sorted(map(str, model["classes"])) == ["2", "a", "b"]
        assert model["checkpoint"] and model["checkpoint"].endswith("model.safetensors")

        x = np.random.default_rng(3).normal(size=(4, N_FEATURES)).tolist()
        embedded = http.post("/v1/embed", json={"features": x})
        assert embedded.status_code == 200
        assert np.array(embedded.json()["embeddings"]).shape == (4, 8)
        assert http.post("/v1/predict", json={"features": x}).json()["predictions"][0] in ("a", "b", 2)
        assert http.post("/v1/embed", json={"features": [[1.0]]}).status_code == 422
        assert http.get("/v1/model/weights").content[:8]  # a safetensors file: 8-byte header length first

        def caught_up() -> dict | None:
            values = metric_values(http.get("/metrics").text)
            return values if values.get(("streamlearn_consumer_lag", (("partition", "0"),))) == 0 else None

        values = wait_for(caught_up, "consumer lag 0 on /metrics")

        # Admin actions run on the learner thread and need the bearer token.
        assert http.post("/v1/model/reset").status_code == 401
        assert http.post("/v1/model/rollback", headers={"Authorization": "Bearer nope"}).status_code == 401
        auth = {"Authorization": "Bearer tok"}
        assert http.post("/v1/model/rollback", headers=auth).status_code in (200, 409)  # 409: nothing to roll back to
        before = http.get("/v1/model").json()["model_version"]
        reset = http.post("/v1/model/reset", headers=auth)
        assert reset.status_code == 200 and reset.json()["model_version"] > before
        after = http.get("/v1/model").json()
        assert after["samples_seen"] == 0 and after["model_version"] == reset.json()["model_version"]
        assert after["n_features"] == N_FEATURES  # a reset keeps the input dimension
    n_labeled = sum(1 for i in range(N_VALID) if i % 10 != 9)
    expect = {
        ("streamlearn_samples_total", (("outcome", "embedded"),)): N_VALID,
        ("streamlearn_samples_total", (("outcome", "learned"),)): n_labeled,
        ("streamlearn_samples_total", (("outcome", "unlabeled"),)): N_VALID - n_labeled,
        ("streamlearn_samples_total", (("outcome", "rejected"),)): len(BAD),
        ("streamlearn_dead_letters_total", (("reason", "not_json"),)): sum(r == "not_json" for _, r in BAD),
        ("streamlearn_dead_letters_total", (("reason", "wrong_dimension"),)): 1,
        ("streamlearn_end_to_end_latency_seconds_count", ()): N_VALID,
        ("streamlearn_model_version", ()): model["model_version"],
    }
    for key, value in expect.items():
        assert values.get(key) == value, f"{key}: {values.get(key)} != {value}"
    assert 0 < values[("streamlearn_prequential_accuracy", ())] <= 1
    assert values[("streamlearn_update_duration_seconds_count", ())] >= N_VALID / 32
    assert values[("streamlearn_checkpoint_duration_seconds_count", ())] >= 1
    assert values[("streamlearn_last_checkpoint_timestamp_seconds", ())] > time.time() - 600
    assert values[("streamlearn_meta_updates_total", ())] >= 1
    assert 4 <= values[("streamlearn_meta_spacing_labels", ())] <= 64  # learner.meta_min_every .. meta_max_every
    assert any(name == "streamlearn_model_info" and dict(labels).get("n_features") == "8"
               for name, labels in values)


def _committed(settings: Settings) -> int | None:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, group_id=settings.kafka.group_id,
                             enable_auto_commit=False)
    try:
        return consumer.committed(TopicPartition(settings.kafka.samples_topic, 0))
    finally:
        consumer.close(autocommit=False)


def test_produce_demo_is_keyed_by_id_and_paced(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    assert produce_main(settings, None, True, 100.0, 30) == 0
    elapsed = time.monotonic() - started
    assert elapsed >= 29 / 100.0  # 30 samples at 100/s cannot take less than 0.29 s
    assert "sent 30 demo samples" in capsys.readouterr().out
    k = settings.kafka
    messages = read_topic(k.bootstrap_servers, k.samples_topic, 30, settle_s=1.0)
    assert len(messages) == 30
    bodies = [json.loads(m.value) for m in messages]
    assert all(m.key == b["id"].encode() for m, b in zip(messages, bodies))
    assert all(len(b["features"]) == 64 for b in bodies)


def test_produce_names_a_line_too_large_for_kafka_and_sends_the_rest(settings: Settings, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str],
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    # It stopped at such a line and sent nothing after it; replay and the daemon reject only that record.
    path = tmp_path / "big.jsonl"
    path.write_bytes(b'{"features": [1]}\n{"features": [2]}\n' + b"x" * (MAX_REQUEST_BYTES + 1) + b'\n{"features": [4]}\n')
    with caplog.at_level("WARNING", logger="streamlearn.produce"):
        assert produce_main(settings, path, False, None, None) == 1
    assert "sent 3 lines of" in capsys.readouterr().out
    [warning] = [r for r in caplog.records if r.getMessage().startswith("not sent")]
    assert warning.where.startswith("line 3 of") and warning.bytes == MAX_REQUEST_BYTES + 1
    k = settings.kafka
    values = [m.value for m in read_topic(k.bootstrap_servers, k.samples_topic, 3, settle_s=1.0)]
    assert values == [b'{"features": [1]}', b'{"features": [2]}', b'{"features": [4]}']
