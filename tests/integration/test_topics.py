"""The daemon's topics on a real broker: a dead letter keeps its record whole, or the operator is told why not."""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Iterator

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from streamlearn.config import KafkaSettings
from streamlearn.kafka import KafkaSink, prepare_service_topics, service_topics
from streamlearn.kafka.limits import TOPIC_DEFAULT_BYTES, dead_letter_bytes, raw_bytes_within
from streamlearn.schema import DeadLetter

pytestmark = pytest.mark.integration


@pytest.fixture
def kafka(kafka_bootstrap: str) -> Iterator[KafkaSettings]:
    """Settings naming three topics that do not exist yet; whatever was created is deleted afterwards."""
    suffix = uuid.uuid4().hex[:10]
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, samples_topic=f"tt-{suffix}.samples",
                             embeddings_topic=f"tt-{suffix}.embeddings", dead_letter_topic=f"tt-{suffix}.dead-letter")
    yield settings
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10_000)
    try:
        present = set(admin.list_topics())
        admin.delete_topics([t for t in service_topics(settings) if t in present], timeout_ms=10_000)
    finally:
        admin.close()


def _limit(settings: KafkaSettings, topic: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=10_000)
    try:
        reply = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})],
                                       config_filter="all")
        return int(reply["topic"][topic]["max.message.bytes"]["value"])
    finally:
        admin.close()


def _read_one(settings: KafkaSettings, topic: str, timeout_s: float = 30.0):
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                return records[0]
        raise AssertionError(f"nothing arrived on {topic} within {timeout_s}s")
    finally:
        consumer.close()


def test_the_dead_letter_of_a_record_at_the_input_limit_is_delivered_whole(kafka: KafkaSettings) -> None:
    # The broker's default topic takes 1 MiB; a dead letter of a 1,000,000-byte record is 1.33 MB of base64.
    limit = prepare_service_topics(kafka)
    assert limit == _limit(kafka, kafka.dead_letter_topic) == dead_letter_bytes(kafka.max_message_bytes)
    assert _limit(kafka, kafka.embeddings_topic) == TOPIC_DEFAULT_BYTES  # embeddings stay under 1 MiB
    raw = b"{" + b"x" * (kafka.max_message_bytes - 1)  # not JSON, and as large as an input may be
    assert raw_bytes_within(limit) >= len(raw)
    sink = KafkaSink(kafka)
    try:
        letter = DeadLetter("not_json", "a test", kafka.samples_topic, 0, 7, raw)
        sink.send(kafka.dead_letter_topic, b"k", letter.to_json())
        sink.flush(timeout_s=30)
    finally:
        sink.close()
    record = _read_one(kafka, kafka.dead_letter_topic)
    assert base64.b64decode(json.loads(record.value)["raw"]) == raw


def test_a_larger_input_limit_sizes_the_samples_topic_too(kafka: KafkaSettings) -> None:
    settings = kafka.model_copy(update={"max_message_bytes": 5_000_000})
    prepare_service_topics(settings)
    assert _limit(settings, settings.samples_topic) > 5_000_000
    assert raw_bytes_within(_limit(settings, settings.dead_letter_topic)) >= 5_000_000


def test_an_existing_dead_letter_topic_too_small_is_reported_and_used(kafka: KafkaSettings,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(kafka.dead_letter_topic, num_partitions=1, replication_factor=1)],
                            timeout_ms=10_000)
    finally:
        admin.close()
    with caplog.at_level(logging.WARNING, logger="streamlearn.kafka.admin"):
        limit = prepare_service_topics(kafka)
    assert limit == TOPIC_DEFAULT_BYTES  # left as it was: the daemon changes no topic it did not create
    [warning] = [r for r in caplog.records if r.getMessage() == "the dead-letter topic cannot hold every rejected record whole"]
    assert str(dead_letter_bytes(kafka.max_message_bytes)) in warning.detail
    assert warning.topic == kafka.dead_letter_topic
