"""Integration tests for deploy/kafka/kafka-local: a real broker that takes and serves messages."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError
from kafka.structs import TopicPartition

from tests.integration.support import fresh_topic

pytestmark = pytest.mark.integration

KAFKA_LOCAL = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "kafka-local"

WAIT_S = 30.0


@pytest.fixture
def topic(kafka_bootstrap: str) -> Iterator[str]:
    """A fresh one-partition topic, deleted afterwards."""
    with fresh_topic(kafka_bootstrap, "test.kafka-local") as name:
        yield name


def _consume(consumer: KafkaConsumer, count: int, timeout_s: float = WAIT_S) -> list:
    """Poll until *count* records arrived or the timeout passed; returns what arrived."""
    records: list = []
    deadline = time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


def test_produced_message_is_consumed_by_a_group(kafka_bootstrap: str, topic: str) -> None:
    value = f"hello {uuid.uuid4()}".encode()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", max_block_ms=10_000)
    try:
        sent = producer.send(topic, key=b"k1", value=value).get(timeout=WAIT_S)
    finally:
        producer.close(timeout=10)

    consumer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    try:
        consumer.subscribe([topic])
        records = _consume(consumer, count=1)
        assert [(r.key, r.value, r.offset) for r in records] == [(b"k1", value, sent.offset)]
        consumer.commit()  # the group coordinator (offsets topic, replication 1) must work too
        assert consumer.committed(TopicPartition(topic, sent.partition)) == sent.offset + 1
    finally:
        consumer.close()


def test_topics_are_not_created_on_first_use(kafka_bootstrap: str, kafka_local) -> None:
    if kafka_local is None:
        pytest.skip("KAFKA_BOOTSTRAP names an outside broker; auto-create is its own setting")
    name = f"test.kafka-local.absent.{uuid.uuid4().hex[:12]}"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, max_block_ms=2_000)
    try:
        with pytest.raises(KafkaTimeoutError):
            producer.send(name, b"x").get(timeout=10)
    finally:
        producer.close(timeout=10)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10_000)
    try:
        assert name not in admin.list_topics()
    finally:
        admin.close()


def test_status_reports_running(kafka_bootstrap: str, kafka_local) -> None:
    if kafka_local is None:
        pytest.skip("KAFKA_BOOTSTRAP names an outside broker, not one kafka-local runs")
    result = kafka_local("status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"running {kafka_bootstrap} (pid ")


def test_second_start_is_idempotent(kafka_bootstrap: str, kafka_local) -> None:
    if kafka_local is None:
        pytest.skip("KAFKA_BOOTSTRAP names an outside broker, not one kafka-local runs")
    before = kafka_local("status").stdout
    result = kafka_local("start")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == kafka_bootstrap
    assert "already running" in result.stderr
    assert kafka_local("status").stdout == before  # same pid: nothing was restarted


def _run_script(command: str, **env: str) -> subprocess.CompletedProcess:
    """Run kafka-local with only the given settings (no broker of this session involved)."""
    return subprocess.run(
        [str(KAFKA_LOCAL), command], env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **env},
        capture_output=True, text=True, timeout=30, check=False,
    )


def test_port_taken_by_another_process_is_a_clear_usage_error(tmp_path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = _run_script("start", KAFKA_PORT=str(port), KAFKA_STATE_DIR=str(tmp_path / "state"))
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("port", ["abc", "0", "70000"])
def test_bad_port_is_a_clear_usage_error(port: str) -> None:
    result = _run_script("status", KAFKA_PORT=port)
    assert result.returncode == 2
    assert result.stderr.strip() == f"kafka-local: error: KAFKA_PORT must be a port number 1-65535, got '{port}'"


def test_status_of_a_never_started_broker_is_stopped(tmp_path) -> None:
    result = _run_script("status", KAFKA_PORT="1", KAFKA_STATE_DIR=str(tmp_path / "state"))
    assert (result.returncode, result.stdout) == (3, "stopped\n")
