"""A daemon started with learner.initial_model on a real broker: it serves and predicts with that model at once.

The model is trained offline as a user would (``replay --save-model``); the daemon runs in a
thread of this process with its own topics, group, checkpoint directory and API port.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import httpx
import pytest

from streamlearn import checkpoint
from streamlearn.config import Settings
from streamlearn.metrics import Metrics
from streamlearn.produce import produce_main
from streamlearn.replay import replay
from streamlearn.service import Service
from tests.integration.support import free_port, wait_for
from tests.integration.test_daemon import N_FEATURES, _run, read_topic, valid_rows

pytestmark = pytest.mark.integration

SMALL = {"hidden_dim": 32, "embedding_dim": 8, "batch_size": 32, "meta_every": 16}


def test_daemon_starts_from_a_model_trained_offline(kafka_bootstrap: str, tmp_path: Path) -> None:
    rows = valid_rows(600)
    history, live = rows[:480], [r for r in rows[480:] if "id" in r]  # the same classes, later samples
    offline = tmp_path / "history.jsonl"
    offline.write_text("".join(json.dumps(r) + "\n" for r in history))
    replay(offline, Settings(learner=SMALL), save_model=tmp_path / "model", progress=False)
    supplied, _ = checkpoint.load(tmp_path / "model")

    suffix = uuid.uuid4().hex[:10]
    settings = Settings(
        kafka={"bootstrap_servers": kafka_bootstrap, "samples_topic": f"im-{suffix}.samples",
               "embeddings_topic": f"im-{suffix}.embeddings", "dead_letter_topic": f"im-{suffix}.dead-letter",
               "group_id": f"im-{suffix}", "poll_max_records": 100},
        api={"port": free_port()},
        checkpoint={"dir": tmp_path / "ckpt", "every_samples": 60, "every_seconds": 5.0},
        learner=dict(SMALL, initial_model=str(tmp_path / "model")),
    )
    service = Service(settings, metrics=Metrics())
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(_run(service)), daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{wait_for(lambda: service.api_port, 'the API to start')}"
        with httpx.Client(base_url=base, timeout=10) as http:
            # Before a single sample: the API serves the supplied model, classes and all.
            model = wait_for(lambda: _model(http), "the API to serve a model")
            assert model["model_version"] == supplied.model_version
            assert model["n_features"] == N_FEATURES and sorted(map(str, model["classes"])) == ["2", "a", "b"]
            assert model["samples_seen"] == supplied.samples_seen
            predicted = http.post("/v1/predict", json={"features": [live[0]["features"]]}).json()
            assert predicted["predictions"] == [live[0]["label"]]

            path = tmp_path / "live.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in live))
            assert produce_main(settings, path, False, None, None) == 0
            bodies = [json.loads(m.value) for m in read_topic(kafka_bootstrap, settings.kafka.embeddings_topic,
                                                                len(live))]
        labeled = [b for b in bodies if b["label"] is not None]
        assert len(bodies) == len(live) and labeled
        # Predicted before each was learned from, from the very first sample on.
        assert all(b["prediction"] == b["label"] for b in labeled[:20])
        assert min(b["model_version"] for b in bodies) >= supplied.model_version
    finally:
        service.stop()
        thread.join(60)
    assert not thread.is_alive() and outcome == [0]
    continued, extra = checkpoint.load(settings.checkpoint.dir)
    assert extra["offsets"] == {f"{settings.kafka.samples_topic}:0": len(live)}  # offsets of this stream only
    assert continued.samples_seen == supplied.samples_seen + len(live)


def _model(http: httpx.Client) -> dict | None:
    try:
        response = http.get("/v1/model")
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None
