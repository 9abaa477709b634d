"""The daemon's run loop with an in-memory source and sink (no broker): bounds, stop, checkpoint, restart."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from streamlearn import __version__, checkpoint
from streamlearn.config import Settings
from streamlearn.errors import CheckpointError, ConfigError, DirectoryInUseError
from streamlearn.kafka.connection import offset_key
from streamlearn.kafka.protocols import Record
from streamlearn.kafka.sink import DeliveryError
from streamlearn.service import Service

from .conftest import blob_rows

TOPIC = "mem.samples"


class MemorySource:
    """Serves a fixed list of records from one partition, tracking positions and commits like Kafka."""

    instances: list[MemorySource] = []

    def __init__(self, lines: list[bytes], kafka_settings, start_offsets=None) -> None:
        self.records = [Record(TOPIC, 0, i, int(time.time() * 1000), None, v) for i, v in enumerate(lines)]
        self.max_records = kafka_settings.poll_max_records
        self.start_offsets = dict(start_offsets or {})
        self.position = self.start_offsets.get(offset_key(TOPIC, 0), 0)
        self.committed: list[dict] = []
        self.closed = False
        MemorySource.instances.append(self)

    def poll(self, max_records=None):
        limit = min(self.max_records, max_records or self.max_records)
        batch = self.records[self.position:self.position + limit]
        self.position += len(batch)
        if not batch:
            time.sleep(0.01)
        return batch

    def positions(self):
        return {offset_key(TOPIC, 0): self.position}

    def commit(self, offsets):
        self.committed.append(dict(offsets))
        return True

    def is_assigned(self):
        return True

    def lag(self):
        return {0: len(self.records) - self.position}

    unanswered = 0.0  # what unanswered_for answers

    def unanswered_for(self):
        return self.unanswered

    restarts = 0

    def close(self):
        self.closed = True


class MemorySink:
    def __init__(self, fail_after: int | None = None) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.fail_after = fail_after
        self.flushes = 0

    def send(self, topic, key, value):
        self.sent.append((topic, key, value))

    def flush(self):
        self.flushes += 1
        if self.fail_after is not None and self.flushes > self.fail_after:
            raise DeliveryError("broker gone")

    waiting = 0.0  # what unconfirmed_for answers

    def unconfirmed_for(self):
        return self.waiting

    def close(self):
        pass

    def ids(self, topic: str) -> list[str]:
        return [json.loads(v)["id"] for t, _, v in self.sent if t == topic]


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(
        kafka={"samples_topic": TOPIC, "embeddings_topic": "mem.emb", "dead_letter_topic": "mem.dlq",
               "poll_max_records": 40},
        api={"enabled": False},
        checkpoint={"dir": tmp_path / "ckpt", "every_samples": 100, "every_seconds": 60.0},
        learner={"hidden_dim": 32, "embedding_dim": 8, "batch_size": 32, "meta_every": 16},
    )


def lines(n: int, bad_every: int = 25) -> list[bytes]:
    out = []
    for i, row in enumerate(blob_rows(n)):
        row["id"] = f"m{i}"
        out.append(b"not json" if i % bad_every == bad_every - 1 else json.dumps(row).encode())
    return out


def service(settings, data, sink, **kwargs) -> Service:
    return Service(settings, source_factory=lambda k, start_offsets=None: MemorySource(data, k, start_offsets),
                   sink_factory=lambda k, **kw: sink, prepare_topics=lambda k: None, **kwargs)


def started(svc: Service, consumed: int, result: list | None = None) -> threading.Thread:
    """``svc.run`` in a thread (its return value appended to ``result``), once it has consumed ``consumed`` records."""
    thread = threading.Thread(target=lambda: (result if result is not None else []).append(svc.run(timeout=60)))
    thread.start()
    deadline = time.monotonic() + 30
    while svc.consumed < consumed and time.monotonic() < deadline:
        time.sleep(0.05)
    return thread


def test_count_bounds_the_run_and_the_final_checkpoint_is_committed(settings):
    data, sink = lines(250), MemorySink()
    assert service(settings, data, sink).run(count=130, timeout=60) == 0
    source = MemorySource.instances[-1]
    assert source.position == 130  # polls never overshoot the count
    assert source.closed
    assert source.committed[-1] == {offset_key(TOPIC, 0): 130}
    learner, extra = checkpoint.load(settings.checkpoint.dir)
    assert extra["offsets"] == source.committed[-1]
    valid = [f"m{i}" for i in range(130) if i % 25 != 24]
    assert sink.ids("mem.emb") == valid
    assert sum(1 for t, _, _ in sink.sent if t == "mem.dlq") == 130 - len(valid)
    assert learner.samples_seen == len(valid)
    assert len(source.committed) == 2  # one checkpoint on cadence (100 records), one at the end


def test_an_unwritable_checkpoint_dir_is_refused_before_anything_is_consumed(settings, tmp_path):
    (tmp_path / "a-file").write_text("")
    bad = settings.model_copy(update={"checkpoint": settings.checkpoint.model_copy(
        update={"dir": tmp_path / "a-file" / "ckpt"})})
    sink = MemorySink()
    MemorySource.instances.clear()
    with pytest.raises(ConfigError, match="checkpoint.dir"):
        service(bad, lines(50), sink).run(count=50, timeout=30)
    assert MemorySource.instances == [] and sink.sent == []


def test_a_second_daemon_on_the_same_checkpoint_dir_is_refused_while_the_first_runs(settings):
    first = service(settings, lines(400), MemorySink())
    thread = started(first, 40)
    try:
        assert first.consumed >= 40
        sink = MemorySink()
        with pytest.raises(DirectoryInUseError, match=rf"checkpoint.dir .* is in use by another streamlearn "
                                                      rf"process \(pid {os.getpid()} on "):
            service(settings, lines(50), sink).run(count=50, timeout=30)
        assert sink.sent == []  # refused before it consumed or published anything
    finally:
        first.stop()
        thread.join(30)
    # The lock goes with the daemon: the directory is free again.
    again = service(settings, lines(400), MemorySink())
    assert again.run(count=20, timeout=30) == 0


def test_restart_resumes_from_the_checkpoint_offsets_with_the_saved_model(settings):
    data = lines(200)
    first = service(settings, data, MemorySink())
    first.run(count=120, timeout=60)
    saved_version = first.learner.model_version
    sink = MemorySink()
    second = service(settings, data, sink)
    second.run(count=80, timeout=60)
    source = MemorySource.instances[-1]
    assert source.start_offsets == {offset_key(TOPIC, 0): 120}
    assert sink.ids("mem.emb")[0] == "m120"
    assert second.learner.model_version >= saved_version
    assert checkpoint.load(settings.checkpoint.dir)[1]["offsets"] == {offset_key(TOPIC, 0): 200}


def test_model_info_describes_the_restored_model_not_the_configured_one(settings):
    service(settings, lines(60), MemorySink()).run(count=60, timeout=60)  # a checkpoint with hidden_dim 32
    wider = settings.model_copy(update={"learner": settings.learner.model_copy(update={"hidden_dim": 64})})
    restarted = service(wider, lines(80), MemorySink())
    restarted.run(count=10, timeout=60)
    assert restarted.learner.hidden_dim == 32  # the checkpoint's hyperparameters win
    info = restarted.metrics.registry.get_sample_value("streamlearn_model_info", {
        "n_features": "8", "embedding_dim": "8", "hidden_dim": "32", "version": __version__})
    assert info == 1.0


def test_a_stop_request_finishes_cleanly_and_checkpoints(settings):
    stop = threading.Event()
    svc = service(settings, lines(60), MemorySink(), stop_event=stop)
    result: list = []
    thread = started(svc, 60, result)
    stop.set()
    thread.join(30)
    assert not thread.is_alive() and result == [0]
    assert MemorySource.instances[-1].committed[-1] == {offset_key(TOPIC, 0): 60}
    assert checkpoint.load(settings.checkpoint.dir)[1]["offsets"] == {offset_key(TOPIC, 0): 60}


def test_timeout_bounds_an_idle_run(settings):
    started = time.monotonic()
    assert service(settings, [], MemorySink()).run(timeout=0.5) == 0
    assert time.monotonic() - started < 10
    assert MemorySource.instances[-1].committed == []  # nothing consumed, nothing to commit


def test_a_delivery_failure_stops_the_daemon_without_committing_the_failed_batch(settings):
    sink = MemorySink(fail_after=3)  # batches of 40: the checkpoint at 120 is fine, the 4th batch is lost
    with pytest.raises(DeliveryError):
        service(settings, lines(200), sink).run(timeout=60)
    source = MemorySource.instances[-1]
    assert source.committed == [{offset_key(TOPIC, 0): 120}]
    assert checkpoint.load(settings.checkpoint.dir)[1]["offsets"] == {offset_key(TOPIC, 0): 120}
    assert source.closed


def test_admin_commands_run_on_the_loop_thread(settings):
    stop = threading.Event()
    svc = service(settings, lines(60), MemorySink(), stop_event=stop)
    thread = started(svc, 60)
    try:
        seen_threads: list = []
        answer = svc.control.call(lambda: seen_threads.append(threading.current_thread()) or 7, timeout=10)
        assert answer == 7 and seen_threads == [thread]
        before = svc.learner.model_version
        assert svc._admin_hooks()["reset"]()["model_version"] > before
        assert svc.store.current().samples_seen == 0
    finally:
        stop.set()
        thread.join(30)
    assert checkpoint.load(settings.checkpoint.dir)[0].samples_seen == 0  # the reset was checkpointed


def test_an_unusable_initial_model_stops_the_start_before_the_broker_is_touched(settings, tmp_path):
    """Exit 2 (ConfigError) naming the setting; no topic is created, no source or sink is opened."""
    touched: list[str] = []
    bad = settings.model_copy(update={"learner": settings.learner.model_copy(
        update={"initial_model": tmp_path / "no-model"})})
    daemon = Service(bad, source_factory=lambda k, start_offsets=None: touched.append("source"),
                     sink_factory=lambda k, **kw: touched.append("sink"), prepare_topics=lambda k: touched.append("topics"))
    with pytest.raises(ConfigError, match="learner.initial_model: .*no-model does not exist"):
        daemon.run(count=10, timeout=30)
    assert touched == []


class DiskTrouble(MemorySink):
    """A sink that, at given flushes, puts a plain file where the checkpoint folder was and later moves it back.

    A real write failure (mkdir of the folder fails), not a mock; a full disk cannot be arranged here.
    ``broken_at`` is the source's position when it broke; ``commits_at`` the number of commits then and
    when it was mended.
    """

    def __init__(self, directory, broken_from: int, broken_until: int | None) -> None:
        super().__init__()
        self.directory, self.broken_from, self.broken_until = directory, broken_from, broken_until
        self.broken_at: int | None = None
        self.commits_at: list[int] = []

    def flush(self):
        super().flush()
        source = MemorySource.instances[-1]
        aside = self.directory.with_name("ckpt-aside")
        if self.flushes == self.broken_from:
            self.directory.rename(aside)
            self.directory.write_text("not a folder")
            self.broken_at, self.commits_at = source.position, [len(source.committed)]
        elif self.flushes == self.broken_until:
            self.commits_at.append(len(source.committed))
            self.directory.unlink()
            aside.rename(self.directory)


def _checkpoint_often(settings):
    return settings.model_copy(update={"checkpoint": settings.checkpoint.model_copy(
        update={"every_samples": 40, "every_seconds": 0.05})})


def test_a_failed_checkpoint_write_is_retried_and_commits_nothing_meanwhile(settings, caplog):
    settings = _checkpoint_often(settings)
    sink = DiskTrouble(settings.checkpoint.dir, 3, 10)
    with caplog.at_level("ERROR", logger="streamlearn.checkpointer"):
        assert service(settings, lines(600), sink).run(count=600, timeout=120) == 0
    assert [r for r in caplog.records if r.getMessage().startswith("checkpoint failed")]
    source = MemorySource.instances[-1]
    before, after = sink.commits_at
    # While broken, only a checkpoint captured (and written) before the break may have been committed.
    assert all(c[offset_key(TOPIC, 0)] <= sink.broken_at for c in source.committed[before:after])
    assert source.committed[-1] == {offset_key(TOPIC, 0): 600}  # written again, and the final one too
    assert checkpoint.load(settings.checkpoint.dir)[1]["offsets"] == source.committed[-1]
    assert sink.ids("mem.emb") == [f"m{i}" for i in range(600) if i % 25 != 24]  # it kept publishing


def test_a_final_checkpoint_that_cannot_be_written_fails_the_run_without_committing(settings):
    settings = _checkpoint_often(settings)
    sink = DiskTrouble(settings.checkpoint.dir, 3, None)
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        service(settings, lines(300), sink).run(count=300, timeout=120)
    [before] = sink.commits_at
    assert all(c[offset_key(TOPIC, 0)] <= sink.broken_at for c in MemorySource.instances[-1].committed[before:])


def test_the_daemon_lifts_its_soft_open_file_limit_to_the_hard_one():
    import resource
    import subprocess
    import sys

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit here ({hard}) leaves nothing to lift")
    code = ("import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit("
            "resource.RLIMIT_NOFILE)[1])); from streamlearn.service import _raise_open_file_limit; "
            "_raise_open_file_limit(); print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert int(done.stdout) > 256


def test_a_checkpoint_of_other_topics_is_named_in_a_warning(settings, caplog):
    # A checkpoint.dir shared by mistake with another deployment: its offsets cannot be this daemon's.
    assert service(settings, lines(60), MemorySink()).run(count=60, timeout=60) == 0
    other = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"samples_topic": "other.samples"})})
    with caplog.at_level("WARNING", logger="streamlearn.service"):
        assert service(other, lines(10), MemorySink()).run(count=1, timeout=60) == 0
    [warning] = [r for r in caplog.records if "written by a daemon of other topics" in r.getMessage()]
    assert warning.offsets_of == [offset_key(TOPIC, 0)] and warning.samples_topic == "other.samples"


def test_the_kafka_gauge_reads_the_source_and_the_sink_at_every_scrape(settings):
    # Read at scrape time: a loop blocked in a flush (outputs the broker does not confirm) cannot set it.
    sink = MemorySink()
    MemorySource.instances.clear()
    daemon = service(settings, lines(400), sink)
    thread = started(daemon, 40)

    def gauge():
        return daemon.metrics.registry.get_sample_value("streamlearn_kafka_unanswered_seconds")

    try:
        assert daemon.consumed >= 40
        source = MemorySource.instances[-1]
        assert gauge() == 0.0
        sink.waiting = 150.0
        assert gauge() == 150.0
        sink.waiting, source.unanswered = 0.0, 30.0
        assert gauge() == 30.0
    finally:
        daemon.stop()
        thread.join(30)
    assert gauge() == 0.0  # the daemon is gone: nothing left to wait for


def test_a_broker_that_stops_answering_is_reported_once_and_its_return_too(settings, caplog):
    # kafka-python only logs its reconnection attempts; the operator got no line of streamlearn's own.
    # (The shared test broker cannot be taken down, so the source's answer is given here.)
    daemon = Service(settings)
    with caplog.at_level("INFO", logger="streamlearn.service"):
        for unanswered in (0.0, 4.0, 11.0, 30.0, 60.0, 0.0, 0.0):
            daemon._report_outage(unanswered)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [("WARNING", "Kafka does not answer; consuming and publishing wait for it (nothing is lost)"),
                     ("INFO", "Kafka answers again")]
