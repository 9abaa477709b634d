"""The consumer source on a real broker: a partition that comes back after a rebalance is not read again."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata, TopicPartition

from streamlearn.config import KafkaSettings
from streamlearn.kafka import KafkaSource

from tests.integration.support import fresh_topic

pytestmark = pytest.mark.integration

WAIT_S = 60.0
FIRST, N = 10, 40  # records per partition before the rebalance, and in all


@pytest.fixture
def kafka(kafka_bootstrap: str) -> Iterator[KafkaSettings]:
    """Settings for a fresh two-partition topic, deleted afterwards."""
    with fresh_topic(kafka_bootstrap, "test.source", partitions=2) as name:
        yield KafkaSettings(bootstrap_servers=kafka_bootstrap, samples_topic=name, group_id=name,
                            poll_max_records=10, poll_timeout_ms=200)


class _Joined(ConsumerRebalanceListener):
    """Notes that its consumer completed a join (the group rebalanced: eagerly, every member was revoked)."""

    done = False

    def on_partitions_revoked(self, revoked) -> None:
        pass

    def on_partitions_assigned(self, assigned) -> None:
        self.done = True


def _join_and_leave(kafka: KafkaSettings, source: KafkaSource, poll, before_leaving=None) -> set:
    """A second member joins the group (the source polling meanwhile), then leaves without committing
    (``before_leaving(consumer)``, if given, acts as that member first)."""
    joined = _Joined()
    other = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=kafka.group_id,
                          enable_auto_commit=False, session_timeout_ms=10_000)
    other.subscribe([kafka.samples_topic], listener=joined)
    deadline = time.monotonic() + WAIT_S
    while not joined.done and time.monotonic() < deadline:  # both members poll until the group has both
        other.poll(timeout_ms=100, max_records=1)
        poll(1)
    assert joined.done, "the second member never joined the group"
    assignment = set(other.assignment())
    if before_leaving is not None:
        before_leaving(other)
    other.close(autocommit=False)  # the partition comes back to the source
    deadline = time.monotonic() + WAIT_S
    while not assignment <= source._consumer.assignment() and time.monotonic() < deadline:
        poll(1)  # (the consumer's own assignment: the source has no public view of it)
    assert assignment <= source._consumer.assignment(), "the partition never came back"
    return assignment


def produce(settings: KafkaSettings, offsets: range) -> None:
    """Records at ``offsets`` in both partitions (the topic holds those before them)."""
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", max_block_ms=10_000)
    for i in offsets:
        for partition in (0, 1):
            producer.send(settings.samples_topic, value=str(i).encode(), partition=partition)
    producer.flush(timeout=WAIT_S)
    producer.close()


def _reader(kafka: KafkaSettings) -> tuple[KafkaSource, list[tuple[int, int]], Callable[..., None]]:
    """A source on a topic holding FIRST records per partition, with a poll that notes (partition, offset)
    of what it reads, once it has read at least FIRST of each partition (or WAIT_S passed)."""
    produce(kafka, range(FIRST))
    source = KafkaSource(kafka)
    read: list[tuple[int, int]] = []

    def poll(limit: int | None = None) -> None:
        read.extend((r.partition, r.offset) for r in source.poll(limit))

    deadline = time.monotonic() + WAIT_S
    try:
        while min(sum(1 for p, _ in read if p == partition) for partition in (0, 1)) < FIRST \
                and time.monotonic() < deadline:
            poll()
    except BaseException:
        source.close()
        raise
    return source, read, poll


def test_a_rebalance_does_not_send_the_consumer_back_to_the_committed_offset(kafka: KafkaSettings) -> None:
    # The source reads what is there; a second member joins (each member gets one partition: the
    # group is rebalanced, so the source gives up both for a moment) and leaves without committing,
    # as nothing is committed between two checkpoints; then more records arrive. Without care, the
    # partitions handed back would be read again from their start: every sample learned twice.
    source, read, poll = _reader(kafka)
    try:
        assert sorted(read) == [(p, o) for p in (0, 1) for o in range(FIRST)]

        for _ in range(2):  # twice: the second time the source has read nothing since it got them back
            other_assignment = _join_and_leave(kafka, source, poll)

        produce(kafka, range(FIRST, N))
        deadline = time.monotonic() + WAIT_S
        while len(set(read)) < 2 * N and time.monotonic() < deadline:
            poll()
    finally:
        source.close()
    assert len(other_assignment) == 1, "the second member should have taken one partition"
    for partition in (0, 1):
        offsets = [o for p, o in read if p == partition]
        assert offsets == list(range(N)), f"partition {partition}: offsets read more than once or skipped"


def test_an_offset_captured_before_a_partition_went_away_does_not_move_the_group_back(kafka: KafkaSettings) -> None:
    # A checkpoint captured (and written in the background) before a rebalance commits its offsets
    # afterwards. If another member handled a partition meanwhile and committed further on, the old
    # offset must not be committed over it: the group would read those records again.
    source, read, poll = _reader(kafka)
    try:
        captured = source.positions()  # what a background checkpoint would commit later
        assert captured == {f"{kafka.samples_topic}:{p}": FIRST for p in (0, 1)}
        produce(kafka, range(FIRST, N))

        def handle_all(other: KafkaConsumer) -> None:  # it handled its whole partition
            (taken,) = other.assignment()
            other.commit({taken: OffsetAndMetadata(N, "", -1)})

        (taken,) = _join_and_leave(kafka, source, poll, before_leaving=handle_all)
        poll()  # the source learns where the group stands on the returned partition

        assert source.commit(captured)
        kept = TopicPartition(kafka.samples_topic, 1 - taken.partition)
        committed = {tp.partition: source._consumer.committed(tp, timeout_ms=10_000) for tp in (taken, kept)}
    finally:
        source.close()
    assert committed == {taken.partition: N, kept.partition: FIRST}


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_are_read(kafka: KafkaSettings, codec: str) -> None:
    # A producer may compress its batches with any codec Kafka knows: the daemon must read them all
    # (a batch it cannot decompress would stop the partition for good).
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all", compression_type=codec,
                             max_block_ms=10_000)
    for i in range(20):
        producer.send(kafka.samples_topic, value=f'{{"features": [{i}]}}'.encode(), partition=0)
    producer.flush(timeout=WAIT_S)
    producer.close()
    source = KafkaSource(kafka)
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + WAIT_S
        while len(values) < 20 and time.monotonic() < deadline:
            values += [r.value for r in source.poll()]
    finally:
        source.close()
    assert values == [f'{{"features": [{i}]}}'.encode() for i in range(20)]


def test_a_source_started_the_moment_its_topic_is_created_is_assigned_it(kafka_bootstrap: str) -> None:
    """The daemon creates its topic and subscribes right away. A group joined before the topic is in the
    cluster metadata assigns nothing until kafka-python's next metadata refresh (5 minutes): the source
    waits for the metadata first, so the first records are read within seconds."""
    with fresh_topic(kafka_bootstrap, "test.source.new") as name:
        settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, samples_topic=name, group_id=name,
                                 poll_max_records=10, poll_timeout_ms=200)
        source = KafkaSource(settings)
        try:
            producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", max_block_ms=10_000)
            producer.send(name, value=b"first")
            producer.flush(timeout=WAIT_S)
            producer.close()
            read, deadline = [], time.monotonic() + WAIT_S
            while not read and time.monotonic() < deadline:
                read = source.poll()
            assert [r.value for r in read] == [b"first"]
            assert source.is_assigned()
        finally:
            source.close()


def test_records_that_arrived_while_the_caller_was_busy_come_in_one_poll(kafka_bootstrap: str) -> None:
    """kafka-python sends its next fetch as a poll returns, and the broker answers it with the one record
    there is then. The records that arrive while the caller works on that record come with the fetch after:
    a poll that stopped at the first answer would leave them for the next poll, one batch later."""
    with fresh_topic(kafka_bootstrap, "test.source.busy") as name:
        settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, samples_topic=name, group_id=name,
                                 poll_max_records=500, poll_timeout_ms=1000)
        source = KafkaSource(settings)
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", max_block_ms=10_000)

        def send(*values: bytes) -> None:
            for value in values:
                producer.send(name, value=value)
            producer.flush(timeout=WAIT_S)

        try:
            send(b"warm-up")
            read, deadline = [], time.monotonic() + WAIT_S
            while not read and time.monotonic() < deadline:
                read = source.poll()
            assert [r.value for r in read] == [b"warm-up"]  # and the next fetch is on its way
            send(b"first")  # the broker answers that fetch with this one record
            time.sleep(0.5)
            later = [b"later-%d" % i for i in range(30)]
            send(*later)  # while the caller is still busy
            time.sleep(0.2)
            assert [r.value for r in source.poll()] == [b"first", *later]
        finally:
            producer.close()
            source.close()


def test_the_lag_counts_records_the_consumer_has_not_fetched(kafka: KafkaSettings,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A consumer that stops fetching must still report the records waiting at the broker: the lag from the
    last fetch response stays at what that fetch saw, and the StreamlearnStalled alert needs a lag above 0."""
    from streamlearn.kafka import source as source_module

    monkeypatch.setattr(source_module, "_QUIET_S", 0.5)
    source, read, poll = _reader(kafka)
    try:
        time.sleep(0.5)
        assert source.lag() == {0: 0, 1: 0}
        owned = list(source._consumer.assignment())
        source._consumer.pause(*owned)  # stands in for a consumer that has stopped fetching
        time.sleep(0.5)  # longer than the fetch wait: a fetch still in flight comes back empty
        poll()
        produce(kafka, range(FIRST, FIRST + 5))
        time.sleep(0.5)
        poll()
        assert source.lag() == {0: 5, 1: 5}
    finally:
        source.close()



def test_a_consumer_that_stopped_fetching_is_replaced_and_the_new_one_resumes_where_it_stopped(
        kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A kafka-python 3 consumer has been seen to stop fetching with its partition assigned. Pausing the
    partitions stands in for that: the source must notice the records waiting at the broker, replace the
    consumer, and read each waiting record exactly once, none of those it had read already."""
    from streamlearn.kafka import source as source_module

    monkeypatch.setattr(source_module, "_STALL_S", 2.0)
    monkeypatch.setattr(source_module, "_STALL_CHECK_EVERY_S", 0.5)
    source, read, poll = _reader(kafka)
    try:
        assert source.restarts == 0
        source._consumer.pause(*source._consumer.assignment())  # the stall
        time.sleep(0.5)  # longer than the fetch wait: a fetch still in flight comes back empty
        poll()
        produce(kafka, range(FIRST, N))
        before = len(read)
        deadline = time.monotonic() + WAIT_S
        with caplog.at_level("WARNING", logger="streamlearn.kafka.source"):
            while len(read) < 2 * N and time.monotonic() < deadline:
                poll()
        assert source.restarts == 1
        assert "fetched nothing" in caplog.text
        assert sorted(read) == [(p, o) for p in (0, 1) for o in range(N)], read[before:]
        assert source.positions() == {f"{kafka.samples_topic}:0": N, f"{kafka.samples_topic}:1": N}
    finally:
        source.close()


def test_a_quiet_consumer_with_nothing_waiting_is_not_replaced(kafka: KafkaSettings,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlearn.kafka import source as source_module

    monkeypatch.setattr(source_module, "_STALL_S", 1.0)
    monkeypatch.setattr(source_module, "_STALL_CHECK_EVERY_S", 0.2)
    source, read, poll = _reader(kafka)
    try:
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            poll()
        assert source.restarts == 0
        assert len(read) == 2 * FIRST
    finally:
        source.close()


def test_a_group_join_interrupted_by_a_short_poll_is_finished(kafka: KafkaSettings,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-python 3.0.12 loses a group join that a poll's timeout interrupted once the join stops being
    needed (its leader has computed the assignment) before the next poll: 1 ms polls with the caller away
    200 ms between them lose every one, and such a consumer never reads a record. The source must finish
    the join. (The stall check that would replace the consumer is kept out of the way.)"""
    from streamlearn.kafka import source as source_module

    monkeypatch.setattr(source_module, "_STALL_S", 3600.0)
    produce(kafka, range(FIRST))
    source = KafkaSource(kafka.model_copy(update={"poll_timeout_ms": 1}))
    read: list[tuple[int, int]] = []
    try:
        deadline = time.monotonic() + WAIT_S
        while len(read) < 2 * FIRST and time.monotonic() < deadline:
            read.extend((r.partition, r.offset) for r in source.poll())
            time.sleep(0.2)  # the caller busy with a batch
        assert sorted(read) == [(p, o) for p in (0, 1) for o in range(FIRST)]
        assert source.restarts == 0
    finally:
        source.close()


def test_partitions_added_to_the_samples_topic_are_read_within_a_minute(kafka: KafkaSettings) -> None:
    """kafka-python refreshes its metadata every 5 minutes by default: records on a new partition waited
    that long, with no lag reported for them."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewPartitions

    source = KafkaSource(kafka)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all", max_block_ms=10_000,
                             metadata_max_age_ms=500)  # the test's producer sees the new partition at once
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, request_timeout_ms=10_000)
    try:
        deadline = time.monotonic() + WAIT_S
        while len(source.lag()) < 2 and time.monotonic() < deadline:  # both partitions assigned and fetched
            source.poll()
        admin.create_partitions({kafka.samples_topic: NewPartitions(total_count=3)})
        deadline = time.monotonic() + WAIT_S
        while len(producer.partitions_for(kafka.samples_topic)) < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        producer.send(kafka.samples_topic, value=b"on the new partition", partition=2).get(timeout=WAIT_S)
        added = time.monotonic()
        read = []
        while not read and time.monotonic() < added + WAIT_S:
            read = [r for r in source.poll() if r.partition == 2]
        assert [r.value for r in read] == [b"on the new partition"], "not read within a minute"
    finally:
        admin.close()
        producer.close()
        source.close()
