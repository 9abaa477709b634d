"""The batch handler without a broker: decode, test-then-train, one output per record, flush once."""

from __future__ import annotations

import base64
import json
from collections import Counter

import numpy as np
import pytest

from .conftest import INVALID_LINES, N_FEATURES, blob_rows
from streamlearn.config import Settings
from streamlearn.kafka.protocols import Record
from streamlearn.kafka.limits import MAX_REQUEST_BYTES, TOPIC_DEFAULT_BYTES, dead_letter_bytes, producer_max_bytes
from streamlearn.learner import Learner
from streamlearn.metrics import Metrics
from streamlearn.pipeline import PROCESSING_ERROR, BatchHandler
from streamlearn.schema import MAX_INFERRED_FEATURES

TOPIC = "samples"


class FakeSink:
    """Records what would go to Kafka, and when flushes happened."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.flushes: list[int] = []  # number of messages sent when each flush happened

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))

    def flush(self) -> None:
        self.flushes.append(len(self.sent))

    def on(self, topic: str) -> list[tuple[bytes | None, dict]]:
        return [(k, json.loads(v)) for t, k, v in self.sent if t == topic]


def records(lines: list[bytes], start: int = 0, ts_ms: int = 1_700_000_000_000) -> list[Record]:
    return [Record(TOPIC, 0, start + i, ts_ms, None, line) for i, line in enumerate(lines)]


@pytest.fixture
def settings() -> Settings:
    return Settings(kafka={"samples_topic": TOPIC, "embeddings_topic": "emb", "dead_letter_topic": "dlq",
                           "max_message_bytes": 10_000},
                    learner={"hidden_dim": 32, "embedding_dim": 8, "batch_size": 32, "meta_every": 16})


def small_learner() -> Learner:
    return Learner(seed=0, hidden_dim=32, embedding_dim=8, meta_every=16)


def test_one_embedding_per_valid_record_and_one_dead_letter_per_bad_one(settings):
    rows = blob_rows(60)
    lines = [json.dumps(r).encode() for r in rows]
    bad_at = {}
    for k, (raw, reason) in enumerate(INVALID_LINES):
        bad_at[5 + 7 * k] = (raw.encode(), reason)
        lines.insert(5 + 7 * k, raw.encode())
    sink, metrics = FakeSink(), Metrics()
    outcome = BatchHandler(settings, sink, metrics).handle(small_learner(), records(lines, start=100))

    embeddings = sink.on("emb")
    valid_offsets = [100 + i for i in range(len(lines)) if i not in bad_at]
    expected_ids = [r.get("id") or f"{TOPIC}-0-{off}" for r, off in zip(rows, valid_offsets)]
    assert [body["id"] for _, body in embeddings] == expected_ids  # input order, exactly once each
    assert all(key == body["id"].encode() for key, body in embeddings)
    assert [body["label"] for _, body in embeddings] == [r.get("label") for r in rows]
    assert all(len(body["embedding"]) == 8 and isinstance(body["drift"], bool) for _, body in embeddings)
    assert all(body["ts"] == 1_700_000_000.0 for _, body in embeddings)  # no event time: the Kafka timestamp

    letters = sink.on("dlq")
    assert [(b["offset"], b["reason"]) for _, b in letters] == [(100 + i, r) for i, (_, r) in sorted(bad_at.items())]
    for _, body in letters:
        assert base64.b64decode(body["raw"]) == bad_at[body["offset"] - 100][0]
        assert body["topic"] == TOPIC and body["partition"] == 0 and body["detail"]

    assert sink.flushes == [len(sink.sent)]  # one flush, after everything was queued
    assert (outcome.records, outcome.embedded, outcome.rejected) == (len(lines), len(rows), len(INVALID_LINES))
    assert outcome.learned == sum(r.get("label") is not None for r in rows)
    r = metrics.registry
    assert r.get_sample_value("streamlearn_samples_total", {"outcome": "embedded"}) == len(rows)
    assert r.get_sample_value("streamlearn_samples_total", {"outcome": "rejected"}) == len(INVALID_LINES)
    assert r.get_sample_value("streamlearn_samples_total", {"outcome": "learned"}) == outcome.learned
    for reason, n in Counter(reason for _, reason in INVALID_LINES).items():
        assert r.get_sample_value("streamlearn_dead_letters_total", {"reason": reason}) == n
    assert r.get_sample_value("streamlearn_end_to_end_latency_seconds_count") == len(rows)
    assert r.get_sample_value("streamlearn_update_duration_seconds_count") == 2  # 60 valid in chunks of 32


def test_predictions_are_made_before_learning(settings):
    rows = [{"id": f"x{i}", "features": [float(i % 2) * 10] * N_FEATURES, "label": ["lo", "hi"][i % 2]}
            for i in range(6)]
    sink = FakeSink()
    BatchHandler(settings, sink, Metrics()).handle(small_learner(), records([json.dumps(r).encode() for r in rows]))
    predictions = [body["prediction"] for _, body in sink.on("emb")]
    assert predictions[0] is None  # nothing was known before the very first labeled sample
    assert predictions[2:] == ["lo", "hi", "lo", "hi"]


class SettleWatcher(Learner):
    """A real learner that notes, each time it settles, how many embeddings were queued and flushed."""

    def __init__(self, sink: FakeSink, fail: bool = False) -> None:
        super().__init__(seed=0, hidden_dim=32, embedding_dim=8, meta_every=16)
        self.sink, self.fail, self.seen = sink, fail, []

    def settle(self) -> None:
        pending = self._unsettled is not None
        if pending:
            self.seen.append((len(self.sink.on("emb")), self.sink.flushes[-1] if self.sink.flushes else 0))
        super().settle()
        if pending and self.fail:
            raise RuntimeError("boom in a meta step")


def test_a_chunks_embeddings_are_queued_before_its_meta_steps_and_the_last_ones_flushed(settings):
    rows = blob_rows(80)  # chunks of 32, 32 and 16
    sink = FakeSink()
    learner = SettleWatcher(sink)
    metrics = Metrics()
    BatchHandler(settings, sink, metrics).handle(learner, records([json.dumps(r).encode() for r in rows]))
    assert learner.seen == [(32, 0), (64, 0), (80, 80)]  # the last chunk's steps wait for the flush
    assert learner._unsettled is None  # nothing is left pending for the service (checkpoint, snapshot)
    assert metrics.registry.get_sample_value("streamlearn_update_duration_seconds_count") == 3


def test_a_learner_failing_after_publishing_keeps_the_embeddings_and_the_stream_goes_on(settings, caplog):
    rows = blob_rows(40)
    sink = FakeSink()
    learner = SettleWatcher(sink, fail=True)
    outcome = BatchHandler(settings, sink, Metrics()).handle(learner, records([json.dumps(r).encode() for r in rows]))
    assert len(sink.on("emb")) == 40 and sink.on("dlq") == []
    assert outcome.embedded == 40 and outcome.rejected == 0
    assert sum("failed while learning from a published batch" in r.getMessage() for r in caplog.records) == 2
    learner.fail = False
    assert BatchHandler(settings, sink, Metrics()).handle(learner, records([json.dumps(r).encode() for r in rows])
                                                          ).embedded == 40


def test_the_first_valid_sample_fixes_an_unknown_dimension(settings):
    lines = [b'{"features": [1, 2, 3]}', b'{"features": [1, 2, 3, 4]}', b'{"features": [4, 5, 6], "label": 1}']
    sink = FakeSink()
    learner = small_learner()
    BatchHandler(settings, sink, Metrics()).handle(learner, records(lines))
    assert [b["id"] for _, b in sink.on("emb")] == [f"{TOPIC}-0-0", f"{TOPIC}-0-2"]
    assert [b["reason"] for _, b in sink.on("dlq")] == ["wrong_dimension"]
    assert learner.n_features == 3


def test_a_huge_first_sample_is_dead_lettered_and_does_not_fix_the_dimension(settings):
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"max_message_bytes": 1_000_000})})
    huge = json.dumps({"features": [0] * (MAX_INFERRED_FEATURES + 1), "label": 1}).encode()
    lines = [huge, b'{"features": [1, 2, 3, 4], "label": 1}', b'{"features": [4, 5, 6, 7], "label": 2}']
    sink = FakeSink()
    learner = small_learner()
    BatchHandler(settings, sink, Metrics()).handle(learner, records(lines))
    assert [b["reason"] for _, b in sink.on("dlq")] == ["too_large"]
    assert [b["id"] for _, b in sink.on("emb")] == [f"{TOPIC}-0-1", f"{TOPIC}-0-2"]
    assert learner.n_features == 4


def test_a_failing_learner_sends_its_batch_to_dead_letters_and_the_stream_goes_on(settings):
    class Broken:
        n_features = N_FEATURES
        model_version = 7

        def process(self, features, labels, *, settle=True):
            raise RuntimeError("boom")  # so the handler never asks it to settle

    lines = [json.dumps(r).encode() for r in blob_rows(5)] + [b"not json"]
    sink, metrics = FakeSink(), Metrics()
    outcome = BatchHandler(settings, sink, metrics).handle(Broken(), records(lines))
    assert sink.on("emb") == []
    letters = [b for _, b in sink.on("dlq")]
    assert sorted(b["reason"] for b in letters) == ["not_json"] + [PROCESSING_ERROR] * 5
    assert all("boom" in b["detail"] for b in letters if b["reason"] == PROCESSING_ERROR)
    assert outcome.rejected == 6 and outcome.embedded == 0
    assert metrics.registry.get_sample_value("streamlearn_dead_letters_total", {"reason": PROCESSING_ERROR}) == 5


def test_a_record_whose_output_cannot_be_encoded_is_dead_lettered_and_the_rest_published(settings, monkeypatch):
    """Validation lets no such sample through (see test_schema); the handler still must not stop the stream.
    The encoder is made to fail here for one id to reach that path."""
    from streamlearn import pipeline

    real = pipeline.EmbeddingRecord.to_json

    def failing(record):
        if record.id == "row-3":
            raise ValueError("cannot encode")
        return real(record)

    monkeypatch.setattr(pipeline.EmbeddingRecord, "to_json", failing)
    rows = blob_rows(6)
    for i, row in enumerate(rows):
        row["id"] = f"row-{i}"
    sink, metrics = FakeSink(), Metrics()
    lines = [json.dumps(r).encode() for r in rows]
    outcome = BatchHandler(settings, sink, metrics).handle(small_learner(), records(lines))
    assert [body["id"] for _, body in sink.on("emb")] == ["row-0", "row-1", "row-2", "row-4", "row-5"]
    letters = [body for _, body in sink.on("dlq")]
    assert [(b["reason"], b["offset"]) for b in letters] == [(PROCESSING_ERROR, 3)]
    assert "cannot encode" in letters[0]["detail"]
    assert (outcome.embedded, outcome.rejected) == (5, 1)


def test_an_oversized_record_is_dead_lettered_within_the_producer_limit(settings):
    huge = b'{"features": [' + b"1," * 900_000 + b'1]}'
    sink = FakeSink()
    BatchHandler(settings, sink, Metrics()).handle(small_learner(), records([huge]))
    [(topic, key, value)] = sink.sent
    body = json.loads(value)
    assert body["reason"] == "too_large" and "truncated" in body["detail"]
    assert len(value) < MAX_REQUEST_BYTES
    assert huge.startswith(base64.b64decode(body["raw"]))


def test_a_rejected_record_is_dead_lettered_whole_where_the_topic_can_hold_it(settings):
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"max_message_bytes": 1_000_000})})
    raw = b"{" + b"x" * 900_000  # not JSON, under the 1,000,000-byte input limit
    sized = dead_letter_bytes(settings.kafka.max_message_bytes)  # the dead-letter topic as the daemon creates it
    for topic_limit, whole in ((sized, True), (None, False), (TOPIC_DEFAULT_BYTES, False), (10 * sized, True)):
        sink = FakeSink()
        BatchHandler(settings, sink, Metrics(), dead_letter_limit=topic_limit).handle(small_learner(), records([raw]))
        [(_, _, value)] = sink.sent
        body = json.loads(value)
        assert (base64.b64decode(body["raw"]) == raw) is whole, topic_limit
        assert ("truncated" in body["detail"]) is not whole
        assert len(value) <= min(topic_limit or TOPIC_DEFAULT_BYTES, producer_max_bytes(settings.kafka.max_message_bytes))


def test_event_time_drives_latency_and_the_output_ts(settings):
    now = 1_800_000_000.0
    row = {"id": "e", "features": [1.0] * N_FEATURES, "ts": now - 2.5}
    sink, metrics = FakeSink(), Metrics()
    handler = BatchHandler(settings, sink, metrics, clock=lambda: now)
    handler.handle(small_learner(), records([json.dumps(row).encode()]))
    assert sink.on("emb")[0][1]["ts"] == now - 2.5
    assert metrics.registry.get_sample_value("streamlearn_end_to_end_latency_seconds_sum") == pytest.approx(2.5)
    assert np.isclose(metrics.registry.get_sample_value("streamlearn_end_to_end_latency_seconds_count"), 1)


@pytest.mark.parametrize("ts", [1_800_000_000_000.0 - 2500.0, -5.0, -1e300, 1_800_000_000.0 + 86_400.0])
def test_a_ts_that_is_not_epoch_seconds_of_about_now_gives_way_to_the_kafka_timestamp(settings, ts, caplog):
    # Milliseconds (a Kafka habit), a negative or absurd value, a day ahead: measured from ts, these
    # pinned the latency histogram at 0 (a p99 alert could never fire) or added decades to its sum.
    now = 1_800_000_000.0
    rows = [json.dumps({"id": f"e{i}", "features": [1.0] * N_FEATURES, "ts": ts}).encode() for i in range(2)]
    sink, metrics = FakeSink(), Metrics()
    handler = BatchHandler(settings, sink, metrics, clock=lambda: now)
    with caplog.at_level("WARNING", logger="streamlearn.pipeline"):
        handler.handle(small_learner(), records(rows, ts_ms=int((now - 4.0) * 1000)))
    assert [b["ts"] for _, b in sink.on("emb")] == [ts, ts]  # the output keeps the sample's own ts
    assert metrics.registry.get_sample_value("streamlearn_end_to_end_latency_seconds_sum") == pytest.approx(8.0)
    assert metrics.registry.get_sample_value("streamlearn_end_to_end_latency_seconds_count") == 2
    assert len([r for r in caplog.records if "not epoch seconds" in r.getMessage()]) == 1  # logged once


def _sample(**fields) -> bytes:
    return json.dumps({"features": [0.5] * N_FEATURES, **fields}).encode()


def test_a_sample_whose_output_would_be_too_large_is_dead_lettered_before_it_is_learned(settings):
    # Under the input limit, but the id goes out twice (key and value): over the producer's limit.
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"max_message_bytes": 2_000_000})})
    sink, learner = FakeSink(), small_learner()
    outcome = BatchHandler(settings, sink, Metrics()).handle(
        learner, records([_sample(id="i" * 600_000, label="a"), _sample(id="ok", label="a"),
                          _sample(id="big-label", label="L" * 600_000)]))
    assert [body["id"] for _, body in sink.on("emb")] == ["ok"]
    assert [(b["offset"], b["reason"]) for _, b in sink.on("dlq")] == [(0, "too_large"), (2, "too_large")]
    assert "shorten the id or the label" in sink.on("dlq")[0][1]["detail"]
    assert learner.labeled_seen == 1 and (outcome.embedded, outcome.rejected) == (1, 2)
    assert all(len(k or b"") + len(v) <= MAX_REQUEST_BYTES for _, k, v in sink.sent)


def test_an_output_made_too_large_by_its_prediction_is_dead_lettered(settings):
    # Each sample alone fits; the second one's prediction is the first one's long label.
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"max_message_bytes": 2_000_000})})
    sink = FakeSink()
    handler = BatchHandler(settings, sink, Metrics())
    learner = small_learner()
    handler.handle(learner, records([_sample(id="first", label="A" * 480_000)]))
    handler.handle(learner, records([_sample(id="i" * 280_000, label="b")], start=1))
    assert [body["id"] for _, body in sink.on("emb")] == ["first"]
    [(_, letter)] = sink.on("dlq")
    assert letter["reason"] == "too_large" and letter["detail"].startswith("learned from")
    assert all(len(k or b"") + len(v) <= MAX_REQUEST_BYTES for _, k, v in sink.sent)


def test_a_long_id_whose_record_fits_is_published(settings):
    # 400 kB of id goes out twice (key and value): 800 kB, under the limit, so it is published.
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"max_message_bytes": 2_000_000})})
    sink = FakeSink()
    BatchHandler(settings, sink, Metrics()).handle(small_learner(), records([_sample(id="i" * 400_000, label="a")]))
    assert [len(body["id"]) for _, body in sink.on("emb")] == [400_000] and not sink.on("dlq")
