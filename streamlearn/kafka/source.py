"""Consumer source: batches of sample records from Kafka, in a consumer group, with manual commits.

Offsets are committed only when the service says so (after a checkpoint), and
partitions are moved to the offsets recorded in the checkpoint the first time
they are assigned, so a restart resumes exactly where the restored model
stopped learning. A partition that comes back after a rebalance (another
member joined or left, or the broker dropped this member) resumes where this
consumer stopped reading it, or further on when the group's committed offset
is ahead (another member handled it meanwhile): never from an older committed
offset, which would learn and publish again what was handled since the last
checkpoint.

Two guards keep the consumer from sitting idle while records wait (kafka-python 3.0.12):
a group join that a poll's timeout interrupted is finished (``_finish_interrupted_join``), and
a consumer that has fetched nothing for ``_STALL_S`` while the broker holds records past its
position is replaced by a new one that resumes where it stopped (``_restart_if_stalled``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

import kafka
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from streamlearn.config import KafkaSettings
from streamlearn.errors import KafkaSetupError
from streamlearn.kafka.connection import client_options, offset_key, parse_key
from streamlearn.kafka.protocols import Record

__all__ = ["KafkaSource"]

logger = logging.getLogger(__name__)

_POSITION_TIMEOUT_MS = 100
_END_OFFSETS_TIMEOUT_MS = 500
_QUIET_S = 5.0  # no record for this long: lag() asks the broker for the end offsets (see lag)
_COMMITTED_TIMEOUT_MS = 5_000
_SESSION_TIMEOUT_MS = 10_000
_METADATA_MAX_AGE_MS = 30_000
_FOLLOW_UP_MS = 10  # longest wait for the fetch kafka-python sends as a poll returns (see poll)
_METADATA_WAIT_S = 30.0  # longest wait for a just-created samples topic to appear in the cluster metadata
_STALL_S = 30.0  # no record for this long while records wait past the consumer's position: restart it
_STALL_MAX_S = 600.0  # a restart that brought nothing doubles the wait before the next one, up to this
_STALL_CHECK_EVERY_S = 5.0  # how often a quiet consumer asks the broker whether records wait
_CLOSE_TIMEOUT_MS = 5_000  # longest wait for a stalled consumer to leave its group
_JOIN_WAIT_MS = 1_000  # longest wait, per poll, for a group join that the poll's own timeout interrupted
_KAFKA_PYTHON_3 = kafka.__version__.startswith("3.")  # the interrupted-join guard knows this release line


class KafkaSource:
    """Samples-topic consumer: ``poll()`` returns up to ``poll_max_records`` within ``poll_timeout_ms``."""

    def __init__(self, settings: KafkaSettings, *, start_offsets: Mapping[str, int] | None = None) -> None:
        self.settings = settings
        self.topic = settings.samples_topic
        self.max_records = settings.poll_max_records
        self.timeout_s = settings.poll_timeout_ms / 1000.0
        self._lock = threading.Lock()
        self._positions: dict[TopicPartition, int] = {}
        self._pending_seeks: dict[TopicPartition, int] = {}
        self._given_up: dict[TopicPartition, int] = {}  # position of each partition when it was revoked
        self._reacquired: dict[TopicPartition, int] = {}  # revoked, assigned again: resume at least here
        self._floors: dict[TopicPartition, int] = {}  # the group's committed offset seen when a partition came back
        self._returned_at = time.monotonic()  # when poll() last returned: the caller has been away since
        self._records_at = self._returned_at  # when poll() last returned records
        self._stall_after_s = _STALL_S
        self._stall_checked_at = self._returned_at
        self.restarts = 0  # consumers replaced because they had stalled
        self._unanswered_since: float | None = None  # the broker's first unanswered end-offsets request
        for key, offset in (start_offsets or {}).items():
            topic, partition = parse_key(key)
            if topic == self.topic:
                self._pending_seeks[TopicPartition(topic, partition)] = int(offset)
        try:
            self._consumer = self._subscribed_consumer()
        except (KafkaError, OSError) as exc:
            raise KafkaSetupError(
                f"cannot start a consumer for {self.topic} at {settings.bootstrap_servers}: {exc}"
            ) from exc

    def _subscribed_consumer(self) -> KafkaConsumer:
        settings = self.settings
        consumer = KafkaConsumer(
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.poll_max_records,
            fetch_max_wait_ms=min(500, max(10, settings.poll_timeout_ms)),
            max_partition_fetch_bytes=max(1_048_576, settings.max_message_bytes + 65_536),
            # A crashed replica's partitions move to the others (or to its restart) within ~10 s.
            session_timeout_ms=_SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=_SESSION_TIMEOUT_MS // 3,
            # Partitions added to the samples topic are seen (and assigned) within 30 s, not kafka-python's 5 min.
            metadata_max_age_ms=_METADATA_MAX_AGE_MS,
            **client_options(settings),
        )
        try:
            self._await_topic_metadata(consumer)
            consumer.subscribe([self.topic], listener=_Rebalance(self))
        except BaseException:
            consumer.close(autocommit=False, timeout_ms=_CLOSE_TIMEOUT_MS)
            raise
        return consumer

    def _await_topic_metadata(self, consumer: KafkaConsumer) -> None:
        """Wait until the cluster metadata lists the samples topic's partitions, for up to ``_METADATA_WAIT_S``.

        A topic created a moment ago (the daemon creates its own) may not be in the metadata the
        consumer fetches first. A group that is joined then assigns this consumer nothing
        ("No partition metadata for topic"), and kafka-python only looks again at its next
        metadata refresh, 5 minutes later: the daemon would sit idle, ready to all appearances.
        """
        deadline = time.monotonic() + _METADATA_WAIT_S
        while not consumer.partitions_for_topic(self.topic):
            if time.monotonic() >= deadline:
                logger.warning("the samples topic has no partitions in the cluster metadata yet; subscribing anyway "
                               "(partitions are assigned once the metadata lists them)",
                               extra={"topic": self.topic, "waited_s": _METADATA_WAIT_S})
                return
            time.sleep(0.1)

    # -- rebalance callbacks (run on kafka-python's IO thread) --------------------------------
    def _assigned(self, partitions: list[TopicPartition]) -> None:
        with self._lock:
            for tp in partitions:
                offset = self._pending_seeks.pop(tp, None)
                if offset is not None:
                    # The restored model has learned everything before `offset`; resume there
                    # even when the committed offset differs (a crash between checkpoint and commit).
                    self._consumer.seek(tp, offset)
                    self._positions[tp] = offset  # handled up to here, even before a record is read
                    logger.info("seek to checkpoint %s[%d]@%d", tp.topic, tp.partition, offset)
                elif tp in self._given_up:
                    # Settled by poll() on the caller's thread: it needs the committed offset (a broker call).
                    self._reacquired[tp] = self._given_up.pop(tp)
        logger.info("partitions assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions))

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        with self._lock:
            for tp in partitions:
                position = self._positions.pop(tp, None)
                if position is not None:
                    self._given_up[tp] = position
                self._floors.pop(tp, None)  # settled again if it comes back
        if partitions:
            logger.info("partitions revoked %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions))

    # -- Source protocol -----------------------------------------------------------------------
    def poll(self, max_records: int | None = None) -> list[Record]:
        """Return up to ``max_records`` records, waiting at most ``poll_timeout_ms`` for them to arrive.

        Returns as soon as records are there, plus what a second, short poll brings: under a
        backlog batches are full, at a low rate they are small and a sample waits for one batch,
        not for ``poll_timeout_ms``.

        The second poll is for the records that arrived while the caller was busy with the
        last batch. kafka-python sends the next fetch as a poll returns records, and the broker
        answers it at once with what it has then, a millisecond's worth; what arrives later
        comes with the fetch after that, one batch later. The second poll sends that fetch
        and waits for its answer, at most ``_FOLLOW_UP_MS`` and never longer than the caller
        was away: a caller that was quick has nothing waiting for it. At 1,000 samples/s this
        took the daemon's latency from p50 / p99 275 / 884 ms to 190 / 656 ms (three
        alternating 30,000-sample runs of ``benchmarks/throughput.py`` each, the wait
        fixed at 10 ms).
        """
        limit = self.max_records if max_records is None else max(1, min(max_records, self.max_records))
        now = time.monotonic()
        away_ms = int((now - self._returned_at) * 1000)
        deadline = now + self.timeout_s
        out: list = []
        for follow_up in (False, True):
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            wait_ms = min(left_ms, _FOLLOW_UP_MS, away_ms) if follow_up else left_ms
            batch = self._consumer.poll(timeout_ms=wait_ms, max_records=limit - len(out))
            if self._reacquired:
                batch = self._resume_reacquired(batch)
            if batch:
                with self._lock:
                    for tp, records in batch.items():
                        if records:
                            out.extend(records)
                            self._positions[tp] = records[-1].offset + 1
            if len(out) >= limit or not batch:
                break
        self._returned_at = time.monotonic()
        if out:
            self._records_at = self._returned_at
            self._stall_after_s = _STALL_S
        else:
            self._finish_interrupted_join()
            self._restart_if_stalled()
        return out

    def _finish_interrupted_join(self) -> None:
        """Await a group join that the last poll's timeout interrupted, so that it is not lost.

        kafka-python 3.0.12 finishes a join (applies the assignment, turns heartbeats back on)
        only in a poll that awaits it. A join that ends while no poll waits is lost: the next
        poll starts a new one, which a short poll loses the same way (a rebalance that never
        ends), or, when the join has stopped being needed meanwhile, starts none, and the
        consumer sits assigned nothing, heartbeats off, for good (the group drops it 10 s
        later). The second happened to the daemon after its first batch: its 10 ms follow-up
        poll timed out in the rebalance a consumer makes right after its first join (whose
        metadata snapshot predates the topic's partitions), and by the next poll this member,
        the group's leader, had computed the assignment. 1 ms polls with the caller away
        200 ms between them show the first every time.

        So when a poll returns with a join in progress, the join is awaited here, for up to
        ``_JOIN_WAIT_MS`` (it takes tens of ms), asked for again first if it has stopped being
        needed. Uses the coordinator's internals, looked for first: where they differ (another
        kafka-python release) this does nothing, and the stall check stays.
        """
        coordinator = getattr(self._consumer, "_coordinator", None)
        if not (_KAFKA_PYTHON_3 and getattr(coordinator, "rejoining", False)):
            return
        try:
            if not coordinator.need_rejoin():  # no poll would await it: ask for it again
                logger.info("finishing a group join that a poll's timeout interrupted")
                coordinator.request_rejoin()
            coordinator.ensure_active_group(timeout_ms=_JOIN_WAIT_MS)
        except AttributeError:  # another kafka-python release
            return
        except KafkaError as exc:  # the next poll sees it too
            logger.debug("group join: %s", exc)

    def _restart_if_stalled(self) -> None:
        """Replace the consumer when it has fetched nothing for a while although records wait for it.

        The last line of defence against a consumer that sits idle, no error raised, while the
        backlog grows: the lost group join (``_finish_interrupted_join``) did that to the daemon,
        three times in ~30 runs of the test suite, and a kafka-python release may have other
        ways (its issues #3106, #3131). After ``_STALL_S`` without a record, this
        asks the broker for the end offsets (every ``_STALL_CHECK_EVERY_S``); if an owned
        partition has records past this consumer's position, a new consumer takes over from the
        positions reached, and the stalled one leaves the group. A restart that brings no record
        doubles the wait before the next one (up to ``_STALL_MAX_S``): a position that cannot
        move (the end offset of a topic that ends in a transaction marker) costs a restart now
        and then, not one every ``_STALL_S``. The broker not answering is no stall: nothing is
        restarted then.
        """
        now = time.monotonic()
        quiet_s = now - self._records_at
        if quiet_s < self._stall_after_s or now - self._stall_checked_at < _STALL_CHECK_EVERY_S:
            return
        self._stall_checked_at = now
        waiting = {tp: n for tp, n in self._lag(from_broker=True).items() if n > 0}
        if not waiting:
            return
        logger.warning("the consumer has fetched nothing for %.0f s while records wait; replacing it", quiet_s,
                       extra={"waiting": {f"{tp.topic}[{tp.partition}]": n for tp, n in sorted(waiting.items())}})
        try:
            replacement = self._subscribed_consumer()
        except (KafkaError, OSError) as exc:  # keep the old one; try again at the next check
            logger.warning("could not start a new consumer: %s", exc)
            return
        with self._lock:
            resume = dict(self._positions)  # everything before these offsets was handled
        try:
            self._consumer.close(autocommit=False, timeout_ms=_CLOSE_TIMEOUT_MS)
        except KafkaError as exc:
            logger.warning("error while closing the stalled consumer: %s", exc)
        with self._lock:  # the new consumer starts where the old one stopped (its close revoked the partitions)
            self._pending_seeks.update(resume)
            self._positions.update(resume)  # still handled up to here: a checkpoint meanwhile keeps them
            self._given_up.clear()
            self._reacquired.clear()
        self._consumer = replacement
        self.restarts += 1
        self._records_at = self._stall_checked_at = time.monotonic()
        self._stall_after_s = min(2 * self._stall_after_s, _STALL_MAX_S)  # back to _STALL_S at the next record

    def _resume_reacquired(self, batch: dict) -> dict:
        """Move partitions assigned back to this consumer past what it (or the group) has handled already.

        Without a seek, the consumer resumes a partition it gets back at the group's committed
        offset, which lags behind what the learner has learned by up to one checkpoint interval
        (more when a commit failed because the broker dropped this member). Records of such a
        partition that ``batch`` already holds from before that point are dropped: this
        consumer, or the member that committed, handled them.
        """
        with self._lock:
            reacquired, self._reacquired = self._reacquired, {}
        owned = self._consumer.assignment()
        batch = dict(batch)
        for tp, ours in reacquired.items():
            if tp not in owned:  # revoked again meanwhile: keep what this consumer read for next time
                with self._lock:
                    self._given_up.setdefault(tp, ours)
                continue
            try:
                committed = self._consumer.committed(tp, timeout_ms=_COMMITTED_TIMEOUT_MS)
            except KafkaError as exc:  # the coordinator is away: what this consumer read is still right
                logger.warning("cannot read the committed offset of %s[%d]: %s", tp.topic, tp.partition, exc)
                committed = None
            target = max(ours, committed or 0)
            if committed:
                with self._lock:
                    self._floors[tp] = max(committed, self._floors.get(tp, 0))
            kept = [r for r in batch.get(tp, ()) if r.offset >= target]
            if tp in batch:
                batch[tp] = kept
            if not kept:
                self._consumer.seek(tp, target)
                with self._lock:  # remembered even if the partition is taken away before a record is read
                    self._positions.setdefault(tp, target)
            logger.info("partition %s[%d] back: resume at %d (read up to %d here, group committed %s)",
                        tp.topic, tp.partition, target, ours, committed)
        return {tp: records for tp, records in batch.items() if records}

    def positions(self) -> dict[str, int]:
        """Next offset to handle per owned ``"topic:partition"``: after the records returned so far, or where a
        checkpoint seek or a partition's return moved it (everything before it was handled)."""
        with self._lock:
            return {offset_key(tp.topic, tp.partition): offset for tp, offset in self._positions.items()}

    def commit(self, offsets: Mapping[str, int]) -> bool:
        """Commit ``offsets`` for the partitions still owned; False (logged) if the group moved on.

        An offset below what the group had committed when the partition came back to this consumer
        is left out: it was captured before the partition went away (a checkpoint written in the
        background meanwhile), and committing it would send the group back over records another
        member handled.
        """
        owned = self._consumer.assignment()
        request = {}
        for key, offset in offsets.items():
            tp = TopicPartition(*parse_key(key))
            if tp not in owned:
                continue
            with self._lock:
                floor = self._floors.get(tp, 0)
            if offset < floor:
                logger.info("not committing %s[%d]@%d: the group committed %d meanwhile",
                            tp.topic, tp.partition, offset, floor)
                continue
            request[tp] = OffsetAndMetadata(int(offset), "", -1)
        if not request:
            return True
        try:
            self._consumer.commit(offsets=request)
        except KafkaError as exc:
            # Not fatal: the checkpoint holds the offsets, and a restart seeks to them.
            logger.warning("offset commit failed offsets=%s error=%s", dict(offsets), exc)
            return False
        with self._lock:  # our own commit is the group's offset now (an admin may reset it later)
            for tp in request:
                self._floors.pop(tp, None)
        logger.debug("committed offsets=%s", dict(offsets))
        return True

    def is_assigned(self) -> bool:
        """True when this consumer owns at least one partition of the samples topic."""
        return bool(self._consumer.assignment())

    def lag(self) -> dict[int, int]:
        """Records behind the newest one for each owned partition whose end offset is known.

        While records come, the end offsets are the high watermarks of the last fetch responses.
        After ``_QUIET_S`` without a record they are asked of the broker (at most
        ``_END_OFFSETS_TIMEOUT_MS``): a consumer that has stopped fetching would otherwise report
        the lag of its last fetch, 0, however many records wait, and the ``StreamlearnStalled``
        alert (a lag above 0, nothing embedded) could never fire. The last fetch's high watermark
        stands in when the broker does not answer in time.
        """
        quiet = time.monotonic() - self._records_at >= _QUIET_S
        return {tp.partition: n for tp, n in self._lag(from_broker=quiet).items()}

    def unanswered_for(self) -> float:
        """Seconds the broker has not answered the lag's end-offset requests (0 while it answers, or records come).

        Asked only after ``_QUIET_S`` without a record, so a broker that is down shows here
        within seconds, while kafka-python only logs its reconnection attempts.
        """
        if self._unanswered_since is None or self._records_at > self._unanswered_since:
            return 0.0
        return time.monotonic() - self._unanswered_since

    def _lag(self, *, from_broker: bool) -> dict[TopicPartition, int]:
        owned = list(self._consumer.assignment())
        ends = {}
        if owned and from_broker:
            try:
                ends = self._consumer.end_offsets(owned, timeout_ms=_END_OFFSETS_TIMEOUT_MS)
                self._unanswered_since = None
            except KafkaError:
                if self._unanswered_since is None:
                    self._unanswered_since = time.monotonic()
        lag: dict[TopicPartition, int] = {}
        for tp in owned:
            high = ends.get(tp)
            if high is None:
                try:
                    high = self._consumer.highwater(tp)
                except KafkaError:
                    continue
            if high is None:
                continue
            with self._lock:
                position = self._positions.get(tp)
            if position is None:
                try:
                    position = self._consumer.position(tp, timeout_ms=_POSITION_TIMEOUT_MS)
                except KafkaError:
                    position = None
            if position is not None:
                lag[tp] = max(0, high - position)
        return lag

    def close(self) -> None:
        """Leave the group without committing (commits happen only after checkpoints)."""
        try:
            self._consumer.close(autocommit=False)
        except KafkaError as exc:
            logger.warning("error while closing the consumer: %s", exc)

    def __enter__(self) -> KafkaSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Rebalance(ConsumerRebalanceListener):
    """Forwards group rebalances to the source (seek on first assignment, forget revoked positions)."""

    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._source._assigned(list(assigned))

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._source._revoked(list(revoked))
