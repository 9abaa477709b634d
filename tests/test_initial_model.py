"""learner.initial_model: replay and the daemon start from a model trained elsewhere instead of a fresh one."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import N_FEATURES, blob_rows
from streamlearn import checkpoint
from streamlearn.checkpointer import restore
from streamlearn.cli import main
from streamlearn.config import CheckpointSettings, LearnerSettings
from streamlearn.drift import DriftEvent
from streamlearn.errors import ConfigError
from streamlearn.initial_model import start_learner
from streamlearn.learner import Learner

SMALL = {"hidden_dim": 32, "embedding_dim": 8, "meta_every": 16}


def arrays(rows: list[dict]) -> tuple[np.ndarray, list]:
    return np.array([r["features"] for r in rows], dtype=np.float32), [r.get("label") for r in rows]


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Learner, Path]:
    """A learner that knows the three blobs, saved (with another stream's offsets) as replay saves a model."""
    learner = Learner(**SMALL)
    x, labels = arrays(blob_rows(600, seed=0))
    for start in range(0, len(x), 32):
        learner.process(x[start:start + 32], labels[start:start + 32])
    checkpoint.save(tmp_path / "model", learner, extra={"offsets": {"elsewhere:0": 600}})
    return learner, tmp_path / "model"


def test_a_supplied_model_predicts_from_the_first_sample(trained) -> None:
    learner, folder = trained
    started = start_learner(LearnerSettings(initial_model=folder, **SMALL))
    fresh = start_learner(LearnerSettings(**SMALL))
    # Same blobs, new samples (the centres come from the seed, the samples from the stream position).
    x, labels = arrays(blob_rows(900, seed=0)[600:])
    assert started.classes == learner.classes and started.model_version == learner.model_version
    np.testing.assert_array_equal(started.embed(x), learner.embed(x))

    first = started.process(x[:32], labels[:32])
    scored = [ok for ok in first.correct if ok is not None]
    assert np.mean(scored) > 0.95  # the classes are known before the stream has shown one
    fresh_scored = [ok for ok in fresh.process(x[:32], labels[:32]).correct if ok is not None]
    assert np.mean(fresh_scored) < np.mean(scored)  # a fresh model has to meet every class first


def test_the_supplied_models_drift_history_stays_behind(trained, tmp_path: Path) -> None:
    # A replay from a model downloaded from a daemon reported the daemon's five old drift events as its own.
    learner, _ = trained
    learner.drift_events.append(DriftEvent("hddm", 77, 5, 1.0, "repair"))
    checkpoint.save(tmp_path / "drifted", learner)
    started = start_learner(LearnerSettings(initial_model=tmp_path / "drifted", **SMALL))
    assert list(started.drift_events) == [] and started.model_version == learner.model_version


def test_the_supplied_model_is_the_first_teacher(trained) -> None:
    _, folder = trained
    started = start_learner(LearnerSettings(initial_model=folder, **SMALL))
    assert started.teacher is not None and started.teacher.model_version == started.model_version
    for mine, teachers in zip(started.encoder.state_dict().values(), started.teacher.encoder.state_dict().values()):
        assert torch.equal(mine, teachers)
    assert started.teacher.encoder is not started.encoder  # frozen: a copy


def test_no_teacher_without_distillation(tmp_path: Path) -> None:
    learner = Learner(**SMALL, distill_weight=0.0)
    x, labels = arrays(blob_rows(100))
    learner.process(x, labels)
    checkpoint.save(tmp_path, learner)
    assert start_learner(LearnerSettings(initial_model=tmp_path, distill_weight=0.0, **SMALL)).teacher is None


def test_the_export_the_api_serves_is_a_starting_model(trained) -> None:
    learner, folder = trained
    export = next(folder.glob("ckpt-*/")) / checkpoint.EXPORT_FILE
    started = start_learner(LearnerSettings(initial_model=export, **SMALL))
    x, _ = arrays(blob_rows(700, seed=0)[600:])
    assert started.predict(x)[0] == learner.predict(x)[0]
    assert len(started.memory.slots()) == 0  # an export holds no raw samples: memory fills from the new stream


def test_the_models_own_hyperparameters_win_and_differences_are_named(trained, caplog) -> None:
    _, folder = trained
    with caplog.at_level(logging.WARNING):
        started = start_learner(LearnerSettings(initial_model=folder, **dict(SMALL, meta_every=8), seed=5))
    assert (started.meta_every, started.seed) == (16, 0)
    [record] = [r for r in caplog.records if "differ" in r.getMessage()]
    assert record.differences == {"meta_every": {"configured": 8, "initial_model": 16},
                                  "seed": {"configured": 5, "initial_model": 0}}
    assert "unset learner.initial_model" in record.getMessage()


def _empty_folder(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _junk_file(tmp: Path) -> Path:
    (tmp / "x.safetensors").write_bytes(b"not a model")
    return tmp / "x.safetensors"


@pytest.mark.parametrize("make, reason", [
    (lambda tmp: tmp / "absent", "does not exist"),
    (_empty_folder, "no checkpoint found"),
    (_junk_file, "cannot read checkpoint"),
])
def test_an_unusable_initial_model_is_a_config_error(tmp_path: Path, make, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        start_learner(LearnerSettings(initial_model=make(tmp_path)))
    assert caught.value.field == "learner.initial_model" and reason in caught.value.reason


def test_an_initial_model_of_another_dimension_is_a_config_error(trained) -> None:
    _, folder = trained
    with pytest.raises(ConfigError, match=r"learner.initial_model: .* takes 8 features, learner.n_features is 5"):
        start_learner(LearnerSettings(initial_model=folder, n_features=5))


def test_a_checkpoint_wins_over_the_initial_model(trained, tmp_path: Path) -> None:
    """The daemon's start: its own checkpoint continues its model; the initial model only starts one."""
    _, folder = trained
    settings = LearnerSettings(initial_model=folder, **SMALL)
    own = Learner(**SMALL, seed=9)
    own.process(*arrays(blob_rows(50, seed=4)))
    checkpoint.save(tmp_path / "ckpt", own, extra={"offsets": {"samples:0": 50}})

    learner, extra, path = restore(CheckpointSettings(dir=tmp_path / "ckpt"), lambda: start_learner(settings))
    assert (learner.seed, extra["offsets"], path is not None) == (9, {"samples:0": 50}, True)
    learner, extra, path = restore(CheckpointSettings(dir=tmp_path / "none"), lambda: start_learner(settings))
    assert (learner.model_version, extra, path) == (start_learner(settings).model_version, {}, None)


def test_replay_starts_from_the_initial_model(trained, write_jsonl, tmp_path: Path, monkeypatch) -> None:
    learner, folder = trained
    data = write_jsonl([json.dumps(r) for r in blob_rows(900, seed=0)[600:664]])
    monkeypatch.setenv("STREAMLEARN_LEARNER__HIDDEN_DIM", "32")
    monkeypatch.setenv("STREAMLEARN_LEARNER__EMBEDDING_DIM", "8")
    fresh, supplied = tmp_path / "fresh.json", tmp_path / "supplied.json"
    assert main(["replay", str(data), "--report", str(fresh)]) == 0
    monkeypatch.setenv("STREAMLEARN_LEARNER__INITIAL_MODEL", str(folder))
    assert main(["replay", str(data), "--report", str(supplied)]) == 0
    fresh, supplied = json.loads(fresh.read_text()), json.loads(supplied.read_text())
    assert supplied["accuracy"] == 1.0 and fresh["accuracy"] < 1.0
    assert supplied["model_version"] >= learner.model_version > fresh["model_version"]
    assert sorted(map(str, supplied["classes"])) == ["2", "a", "b"]


def test_replay_with_a_missing_initial_model_exits_2_with_one_line(write_jsonl, tmp_path: Path, monkeypatch,
                                                                  capsys) -> None:
    data = write_jsonl([json.dumps(r) for r in blob_rows(10)])
    monkeypatch.setenv("STREAMLEARN_LEARNER__INITIAL_MODEL", str(tmp_path / "gone"))
    assert main(["replay", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"learner.initial_model: {tmp_path / 'gone'} does not exist" in err
