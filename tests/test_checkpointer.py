"""Checkpoint cadence and ordering: the checkpoint is durable before its offsets are committed."""

from __future__ import annotations

import numpy as np
import pytest

from streamlearn import checkpoint
from streamlearn.checkpointer import Checkpointer, restore
from streamlearn.config import CheckpointSettings
from streamlearn.learner import Learner
from streamlearn.metrics import Metrics
from streamlearn.snapshot_store import SnapshotStore


class RecordingSource:
    """A source whose commit checks what is on disk at that moment."""

    def __init__(self, directory, offsets: dict[str, int]) -> None:
        self.directory = directory
        self.offsets = offsets
        self.commits: list[tuple[dict, dict | None]] = []  # (committed, checkpoint offsets on disk then)

    def positions(self) -> dict[str, int]:
        return dict(self.offsets)

    def commit(self, offsets) -> bool:
        on_disk = None
        if checkpoint.latest_path(self.directory) is not None:
            on_disk = checkpoint.load(self.directory)[1].get("offsets")
        self.commits.append((dict(offsets), on_disk))
        return True


def trained_learner() -> Learner:
    rng = np.random.default_rng(0)
    learner = Learner(seed=0, hidden_dim=16, embedding_dim=4, meta_every=8)
    learner.process(rng.normal(size=(20, 3)).astype(np.float32), ["a", "b"] * 10)
    return learner


def make(tmp_path, offsets, clock=lambda: 0.0, **overrides):
    settings = CheckpointSettings(dir=tmp_path / "ckpt", **{"every_samples": 100, "every_seconds": 10.0, **overrides})
    source = RecordingSource(settings.dir, offsets)
    metrics, store = Metrics(), SnapshotStore()
    return Checkpointer(settings, source, metrics, store, clock=clock), source, metrics, store


def test_offsets_are_committed_only_after_the_checkpoint_holding_them_is_on_disk(tmp_path):
    cp, source, metrics, store = make(tmp_path, {"samples:0": 42, "samples:1": 7})
    learner = trained_learner()
    path = cp.checkpoint(learner)
    assert source.commits == [({"samples:0": 42, "samples:1": 7}, {"samples:0": 42, "samples:1": 7})]
    assert path == checkpoint.latest_path(tmp_path / "ckpt")
    assert store.current().checkpoint_path == str(path)
    assert metrics.registry.get_sample_value("streamlearn_checkpoint_duration_seconds_count") == 1
    assert metrics.registry.get_sample_value("streamlearn_last_checkpoint_timestamp_seconds") > 0
    restored, extra, _ = restore(CheckpointSettings(dir=tmp_path / "ckpt"), fresh=lambda: pytest.fail("not fresh"))
    assert extra["offsets"] == {"samples:0": 42, "samples:1": 7}
    assert restored.model_version == learner.model_version


def test_a_learner_without_a_model_only_commits(tmp_path):
    cp, source, _, store = make(tmp_path, {"samples:0": 3})
    assert cp.checkpoint(Learner(hidden_dim=8, embedding_dim=4)) is None
    assert source.commits == [({"samples:0": 3}, None)]
    assert not (tmp_path / "ckpt").exists()


def test_cadence_by_samples_and_by_seconds(tmp_path):
    now = [0.0]
    cp, _, _, _ = make(tmp_path, {"samples:0": 1}, clock=lambda: now[0], every_samples=100, every_seconds=10.0)
    assert not cp.due()
    now[0] = 50.0
    assert not cp.due()  # time passed, but nothing new to save
    cp.note(99)
    assert cp.due()  # ... and now there is
    cp.checkpoint(trained_learner())
    assert not cp.due()
    cp.note(100)
    assert cp.due()
    cp.checkpoint(trained_learner())
    cp.request()
    assert cp.due()  # an admin action asks for one regardless of cadence


def test_keep_prunes_old_checkpoints(tmp_path):
    cp, _, _, _ = make(tmp_path, {"samples:0": 1}, keep=2)
    learner = trained_learner()
    rng = np.random.default_rng(1)
    for _ in range(4):
        learner.process(rng.normal(size=(8, 3)).astype(np.float32), ["a", "b"] * 4)
        cp.checkpoint(learner)
    assert len(list((tmp_path / "ckpt").glob("ckpt-*"))) == 2


def test_restore_without_checkpoint_builds_a_fresh_learner(tmp_path):
    fresh = Learner(hidden_dim=8, embedding_dim=4)
    learner, extra, _ = restore(CheckpointSettings(dir=tmp_path / "none"), fresh=lambda: fresh)
    assert learner is fresh and extra == {}


def test_restore_warns_when_configured_learner_settings_differ(tmp_path, caplog):
    import logging

    import numpy as np

    from streamlearn import checkpoint
    from streamlearn.checkpointer import restore
    from streamlearn.config import CheckpointSettings, LearnerSettings
    from streamlearn.learner import Learner

    trained = Learner(seed=1, hidden_dim=16, embedding_dim=4)
    trained.process(np.zeros((2, 3), np.float32), [0, 1])
    checkpoint.save(tmp_path, trained)
    with caplog.at_level(logging.WARNING):
        learner, _, _ = restore(CheckpointSettings(dir=tmp_path), lambda: None,
                             LearnerSettings(seed=2, hidden_dim=16, embedding_dim=4))
    assert learner.seed == 1
    [record] = [r for r in caplog.records if "differ" in r.getMessage()]
    assert record.differences == {"seed": {"configured": 2, "checkpoint": 1}}


def test_background_checkpoint_commits_only_once_durable_and_holds_the_state_at_its_start(tmp_path):
    cp, source, metrics, store = make(tmp_path, {"samples:0": 20})
    learner = trained_learner()
    seen_at_start = learner.samples_seen
    cp.note(20)
    cp.start(learner)
    assert not cp.due()  # one background write at a time
    # Learning and consuming go on while the file is written.
    source.offsets = {"samples:0": 30}
    cp.note(10)
    learner.process(np.random.default_rng(1).normal(size=(10, 3)).astype(np.float32), ["a"] * 10)
    path = cp.finish(wait=True)
    assert source.commits == [({"samples:0": 20}, {"samples:0": 20})]  # committed what is on disk, no more
    assert store.current().checkpoint_path == str(path)
    assert checkpoint.load(tmp_path / "ckpt")[0].samples_seen == seen_at_start
    assert cp.pending == 10  # the records after the capture still wait for the next checkpoint
    assert cp.finish(wait=True) is None
    cp.close()


def test_a_synchronous_checkpoint_first_completes_the_background_one(tmp_path):
    cp, source, _, _ = make(tmp_path, {"samples:0": 5})
    learner = trained_learner()
    cp.start(learner)
    source.offsets = {"samples:0": 9}
    cp.checkpoint(learner)
    assert [committed for committed, _ in source.commits] == [{"samples:0": 5}, {"samples:0": 9}]
    assert all(committed == on_disk for committed, on_disk in source.commits)
    cp.close()


def test_restore_names_the_checkpoint_it_read_so_the_api_serves_that_one(tmp_path):
    """With an unreadable newest checkpoint, /v1/model/weights must serve the older one the daemon runs."""
    learner = trained_learner()
    older = checkpoint.save(tmp_path, learner, keep=3)
    newest = checkpoint.save(tmp_path, learner, keep=3)
    newest.write_bytes(newest.read_bytes()[:1000])
    restored, _, path = restore(CheckpointSettings(dir=tmp_path), fresh=lambda: pytest.fail("not fresh"))
    assert path == older and restored.model_version == learner.model_version
    assert restore(CheckpointSettings(dir=tmp_path / "none"), fresh=lambda: learner)[2] is None
