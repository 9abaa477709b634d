"""Checkpoints: portable safetensors, atomic replacement, exact round trip."""

import json
import logging

import numpy as np
import pytest

from streamlearn import checkpoint
from streamlearn.errors import CheckpointError
from streamlearn.learner import Learner
from tests.test_learner import SMALL, blobs, run


@pytest.fixture()
def trained():
    learner = Learner(seed=3, **SMALL)
    x, labels = blobs(1300)
    run(learner, x, [f"c{v}" if v % 2 else v for v in labels])
    return learner


def test_round_trip_gives_identical_embeddings_predictions_and_future(tmp_path, trained):
    path = checkpoint.save(tmp_path, trained, extra={"offsets": {"samples:0": 1300}})
    loaded, extra = checkpoint.load(tmp_path)
    assert extra == {"offsets": {"samples:0": 1300}}
    x, labels = blobs(300, seed=9)
    labels = [f"c{v}" if v % 2 else v for v in labels]
    np.testing.assert_array_equal(loaded.embed(x), trained.embed(x))
    assert loaded.predict(x)[0] == trained.predict(x)[0]
    assert (loaded.model_version, loaded.samples_seen, loaded.classes) == (
        trained.model_version, trained.samples_seen, trained.classes)
    # On the same concept, learning goes on exactly as without a restart (optimiser, RNG, counters
    # are saved; only the drift detectors restart empty).
    a, b = run(trained, x, labels), run(loaded, x, labels)
    np.testing.assert_array_equal(a[-1].embeddings, b[-1].embeddings)
    assert [r.predictions for r in a] == [r.predictions for r in b]
    for name in ("meta_updates", "meta_spacing", "_loss_ema", "_loss_slow"):
        assert getattr(loaded, name) == getattr(trained, name), name
    assert path.name == checkpoint.MODEL_FILE


def test_file_is_safetensors_with_json_metadata_not_pickle(tmp_path, trained):
    path = checkpoint.save(tmp_path, trained)
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    meta = json.loads(header["__metadata__"]["streamlearn"])
    assert meta["format"] == checkpoint.FORMAT and meta["n_features"] == 8
    assert b"\x80\x04" not in raw[:2]  # no pickle protocol header
    assert "encoder.net.0.weight" in header


def test_latest_points_to_a_complete_checkpoint_and_old_ones_are_pruned(tmp_path, trained):
    for _ in range(4):
        run(trained, *blobs(64, seed=_))
        checkpoint.save(tmp_path, trained, keep=2)
    dirs = sorted(p.name for p in tmp_path.glob("ckpt-*"))
    assert len(dirs) == 2
    assert (tmp_path / "LATEST").read_text().strip() == dirs[-1]
    assert not list(tmp_path.glob(".*tmp*"))
    assert checkpoint.load(tmp_path)[0].model_version == trained.model_version


def test_a_model_saved_after_newer_versions_is_the_one_kept(tmp_path, trained):
    # Another run saving into the same folder starts again at a low model version: pruning goes by
    # the time written, so the model just saved stays (it was deleted, and LATEST left dangling).
    for i in range(3):
        run(trained, *blobs(64, seed=i))
        checkpoint.save(tmp_path, trained, keep=3)
    fresh = Learner(seed=1)
    run(fresh, *blobs(32, seed=9))
    assert fresh.model_version < trained.model_version
    path = checkpoint.save(tmp_path, fresh, keep=3)
    assert path.is_file() and len(list(tmp_path.glob("ckpt-*"))) == 3
    (tmp_path / "LATEST").unlink()  # and the fallback to the newest folder finds it too
    assert checkpoint.load(tmp_path)[0].model_version == fresh.model_version


def test_pruning_deletes_only_checkpoints_it_wrote(tmp_path, trained):
    # A user's own folder that happens to start with "ckpt-" was deleted (as the oldest) by the third save.
    mine = tmp_path / "ckpt-mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (tmp_path / "ckpt-backup").mkdir()
    (tmp_path / "ckpt-backup" / checkpoint.MODEL_FILE).write_bytes(b"a user's file, not a checkpoint")
    for i in range(4):
        run(trained, *blobs(32, seed=i))
        checkpoint.save(tmp_path, trained, keep=2)
    assert (mine / "notes.txt").read_text() == "keep me"
    assert (tmp_path / "ckpt-backup" / checkpoint.MODEL_FILE).is_file()
    assert len(list(tmp_path.glob("ckpt-0*"))) == 2
    (tmp_path / "LATEST").unlink()  # the fallback never takes the user's folder for a checkpoint
    assert checkpoint.latest_path(tmp_path).parent.name.startswith("ckpt-0")


def test_load_errors_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        checkpoint.load(tmp_path)
    (tmp_path / checkpoint.MODEL_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        checkpoint.load(tmp_path)


def test_saving_an_untrained_learner_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not seen a sample"):
        checkpoint.save(tmp_path, Learner())


def test_saving_twice_without_learning_keeps_latest_valid_and_drift_history(tmp_path, trained):
    first = checkpoint.save(tmp_path, trained)
    second = checkpoint.save(tmp_path, trained)  # nothing learned in between: same version, same count
    assert first != second and first.is_file() and second.is_file()
    loaded, _ = checkpoint.load(tmp_path)
    assert [e.to_dict() for e in loaded.drift_events] == [e.to_dict() for e in trained.drift_events]


def test_an_unreadable_newest_checkpoint_gives_way_to_the_newest_readable_older_one(tmp_path, trained, caplog):
    # A truncated newest file stopped the daemon (exit 1) while two good checkpoints were kept beside it.
    versions = []
    for i in range(3):
        run(trained, *blobs(64, seed=i))
        checkpoint.save(tmp_path, trained, extra={"offsets": {"t:0": 64 * (i + 1)}}, keep=3)
        versions.append(trained.model_version)
    newest = checkpoint.latest_path(tmp_path)
    newest.write_bytes(newest.read_bytes()[:1000])
    with caplog.at_level("WARNING", logger="streamlearn.checkpoint"):
        learner, extra = checkpoint.load(tmp_path)
    assert learner.model_version == versions[1] and extra["offsets"] == {"t:0": 128}  # older: learned again
    assert any("newest checkpoint cannot be read" in r.getMessage() for r in caplog.records)
    for folder in tmp_path.glob("ckpt-*"):
        (folder / checkpoint.MODEL_FILE).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):  # none readable: an error, never a fresh start
        checkpoint.load(tmp_path)


def test_a_dangling_latest_falls_back_to_the_newest_complete_checkpoint(tmp_path, trained, caplog):
    path = checkpoint.save(tmp_path, trained)
    (tmp_path / "LATEST").write_text("ckpt-gone\n")
    with caplog.at_level(logging.WARNING, logger="streamlearn.checkpoint"):
        assert checkpoint.latest_path(tmp_path) == path
        assert checkpoint.load(tmp_path)[0].model_version == trained.model_version
    # Said once, not at every look-up (the daemon's start-up looks three times).
    assert [r.getMessage() for r in caplog.records].count("LATEST is missing or dangling; using the newest "
                                                         "complete checkpoint") == 1


def test_the_export_beside_each_checkpoint_holds_no_raw_samples_and_predicts_alike_on_blobs(tmp_path, trained):
    path = checkpoint.save(tmp_path, trained)
    export = path.with_name(checkpoint.EXPORT_FILE)
    raw = export.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert not [k for k in header if k.startswith(("memory.", "recent.", "library.", "good.", "optim."))]
    assert "vote.view0" in header and "vote.view1" not in header  # neighbour embeddings, not stored inputs
    assert len(raw) < path.stat().st_size
    served, _ = checkpoint.load(export)
    x, _ = blobs(200, seed=11)
    np.testing.assert_array_equal(served.embed(x), trained.embed(x))
    assert served.predict(x)[0] == trained.predict(x)[0]


def test_a_checkpoint_during_the_standardisers_warm_up_resumes_it_and_its_export_holds_no_rows(tmp_path):
    x, labels = blobs(60, seed=5)
    learner = Learner(seed=0, **SMALL)
    learner.process(x[:10], labels[:10])
    assert len(learner.normalizer.state()["recent_rows"]) == 10  # the raw rows young statistics are rebuilt from
    path = checkpoint.save(tmp_path, learner)
    raw = path.with_name(checkpoint.EXPORT_FILE).read_bytes()
    assert not [k for k in json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")]) if "recent_rows" in k]
    restored, _ = checkpoint.load(path)
    for model in (learner, restored):
        model.process(x[10:], labels[10:])
    np.testing.assert_array_equal(restored.normalizer.var, learner.normalizer.var)
    np.testing.assert_array_equal(restored.embed(x), learner.embed(x))


def test_a_vote_led_export_votes_on_the_embedding_alone(tmp_path):
    """The export keeps no stored input: a model whose vote leads is served with the embedding view only."""
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 4, (24, 6)).astype(np.float32)
    which = rng.integers(0, 24, 1200)
    x = centres[which] + rng.normal(0, 0.3, (1200, 6)).astype(np.float32)
    learner = Learner(seed=0, hidden_dim=8, embedding_dim=1, meta_every=10**9, linear_lr=0)
    run(learner, x, ["even" if w % 2 == 0 else "odd" for w in which])
    assert learner.snapshot().predictor == "vote" and learner.vote.n_views == 2
    path = checkpoint.save(tmp_path, learner)
    served, _ = checkpoint.load(path.with_name(checkpoint.EXPORT_FILE))
    assert served.snapshot().predictor == "vote" and served.vote.n_views == 1
    np.testing.assert_array_equal(served.embed(x[:50]), learner.embed(x[:50]))
    full, _ = checkpoint.load(path)  # the whole checkpoint keeps both views and predicts exactly alike
    assert full.vote.n_views == 2 and full.predict(x)[0] == learner.predict(x)[0]


def test_when_the_fused_head_leads_every_serving_path_fuses_the_vote_and_the_linear_head(tmp_path):
    """Which head leads is set here by hand (streams where fusion leads take thousands of samples);
    what is checked is that the learner, its snapshot, a checkpoint and the export all predict with it."""
    from streamlearn.model import fuse, linear_inputs

    x, labels = blobs(400, seed=3)
    learner = Learner(seed=0, **SMALL)
    run(learner, x, labels)
    learner.choice.accuracy[:] = (0.5, 0.6, 0.6, 0.9)
    assert learner.snapshot().predictor == "fused"
    test, _ = blobs(100, seed=4)
    xn = learner.normalizer.transform(test)
    z = learner.embed(test)
    fused = fuse(learner.vote.shares((z, xn)), learner.linear.probabilities(linear_inputs(z, xn)))
    expected = [learner.registry.label_of(int(s)) for s in fused]
    assert learner.predict(test)[0] == learner.snapshot().predict(test)[0] == expected
    path = checkpoint.save(tmp_path, learner)
    full, _ = checkpoint.load(path)
    assert full.snapshot().predictor == "fused" and full.predict(test)[0] == expected
    served, _ = checkpoint.load(path.with_name(checkpoint.EXPORT_FILE))
    assert served.snapshot().predictor == "fused" and served.vote.n_views == 1  # the export's vote: embeddings only


def test_a_checkpoint_written_by_version_0_1_loads_as_the_model_it_was(trained):
    """0.1 had one vote view (vote.z), two head accuracies, no linear head and no linear_lr."""
    arrays, meta = checkpoint.to_state(trained)
    arrays = {k: v for k, v in arrays.items() if not k.startswith("linear.") and ".linear." not in k}
    arrays["vote.z"] = arrays.pop("vote.view0")
    del arrays["vote.view1"]
    arrays["head_accuracy"] = arrays["head_accuracy"][:2]
    meta = dict(meta, hyperparameters={k: v for k, v in meta["hyperparameters"].items() if k != "linear_lr"})
    old = checkpoint.from_state(arrays, meta)
    assert old.linear is None and old.vote.n_views == 1
    x, labels = blobs(200, seed=5)
    np.testing.assert_array_equal(old.embed(x), trained.embed(x))
    run(old, x, [f"c{v}" if v % 2 else v for v in labels])  # learning goes on; the vote refits with two views
    assert old.vote.n_views == 2


def test_a_checkpoint_written_before_the_encoders_linear_path_loads_as_the_model_it_was(trained):
    """Models saved before the input-to-embedding path had none: theirs loads as a zero map."""
    import torch

    arrays, meta = checkpoint.to_state(trained)
    last = len(list(trained.encoder.parameters())) - 1  # the path's index in the optimiser
    old_arrays = {k: v for k, v in arrays.items() if not k.endswith("skip.weight") and not k.startswith(f"optim.{last}.")}
    assert len(old_arrays) < len(arrays) - 1
    (group,) = meta["optimizer_groups"]
    old = checkpoint.from_state(old_arrays, dict(meta, format="streamlearn/1",
                                                 optimizer_groups=[dict(group, params=group["params"][:-1])]))
    x, labels = blobs(200, seed=5)
    with torch.no_grad():  # what the saved weights compute without the path
        expected = trained.encoder.net(torch.from_numpy(trained.normalizer.transform(x))).numpy()
    np.testing.assert_allclose(old.embed(x), expected, rtol=1e-5, atol=1e-5)
    run(old, x, [f"c{v}" if v % 2 else v for v in labels])  # and it learns on


def test_a_checkpoint_from_before_paced_meta_steps_keeps_a_step_every_meta_every_labels(trained):
    arrays, meta = checkpoint.to_state(trained)
    hyper = {k: v for k, v in meta["hyperparameters"].items() if k not in ("meta_max_every", "meta_calm_loss")}
    counters = {k: v for k, v in meta["counters"].items() if k not in ("meta_interval", "loss_ema", "loss_steps")}
    old = checkpoint.from_state(arrays, dict(meta, hyperparameters=hyper, counters=counters))
    assert old.meta_max_every == old.meta_every == trained.meta_every
    assert trained.meta_max_every > trained.meta_every  # the current default spaces steps out
    before, expected = old.meta_updates, (old._since_meta + 640) // old.meta_every
    x, labels = blobs(640, seed=6)
    run(old, x, labels)
    assert old.meta_updates - before == expected


def test_a_checkpoint_from_before_sooner_steps_never_takes_them_sooner():
    from sklearn.datasets import make_classification

    # A stream whose episode loss keeps falling for a while (see test_learner): today's learner takes steps sooner.
    x, y = make_classification(2048, 20, n_informative=10, n_classes=4, n_clusters_per_class=2, random_state=0)
    x, labels = x.astype(np.float32), [int(v) for v in y]
    learner = Learner(seed=0, **SMALL)
    run(learner, x[:512], labels[:512])
    arrays, meta = checkpoint.to_state(learner)
    hyper = {k: v for k, v in meta["hyperparameters"].items() if k != "meta_min_every"}
    counters = {k: v for k, v in meta["counters"].items() if k != "loss_slow"}
    old = checkpoint.from_state(arrays, dict(meta, hyperparameters=hyper, counters=counters))
    current = checkpoint.from_state(arrays, meta)
    assert old.meta_min_every == old.meta_every and current.meta_min_every < current.meta_every
    assert old._loss_slow is None and old._loss_ema is not None  # its running loss goes on; the slow one starts
    steps = []
    for restored in (old, current):
        before, expected = restored.meta_updates, (restored._since_meta + 1024) // restored.meta_every
        run(restored, x[512:1536], labels[512:1536])
        steps.append((restored.meta_updates - before, expected))
    (old_steps, expected), (current_steps, _) = steps
    assert old_steps == expected < current_steps and old._loss_slow is not None


def test_a_checkpoint_of_an_unknown_format_is_refused_with_a_reason(trained):
    arrays, meta = checkpoint.to_state(trained)
    with pytest.raises(CheckpointError, match="unsupported checkpoint format 'streamlearn/9'"):
        checkpoint.from_state(arrays, dict(meta, format="streamlearn/9"))


def _rewrite(path, change_arrays=None, change_meta=None) -> None:
    """Write ``path`` again with its arrays and streamlearn metadata changed (as another version might write it)."""
    from safetensors.numpy import load_file, save_file

    arrays = load_file(str(path))
    with open(path, "rb") as fh:
        meta = checkpoint._metadata(fh.read(int.from_bytes(fh.read(8), "little")))
    if change_arrays:
        change_arrays(arrays)
    if change_meta:
        change_meta(meta)
    save_file(arrays, str(path), metadata={"streamlearn": json.dumps(meta)})


@pytest.mark.parametrize("damage", ["unknown hyperparameter", "non-finite weights"])
def test_a_newest_checkpoint_this_version_cannot_use_gives_way_to_an_older_one(tmp_path, trained, caplog, damage):
    # An unknown hyperparameter (a newer version wrote it, then the deployment was rolled back) stopped the
    # start with "unexpected TypeError"; NaN weights were restored and served null embeddings.
    for i in range(2):
        run(trained, *blobs(64, seed=10 + i))
        checkpoint.save(tmp_path, trained, extra={"offsets": {"t:0": 64 * (i + 1)}}, keep=3)
    if damage == "unknown hyperparameter":
        _rewrite(checkpoint.latest_path(tmp_path), change_meta=lambda m: m["hyperparameters"].update(bogus_param=1))
    else:
        _rewrite(checkpoint.latest_path(tmp_path),
                 change_arrays=lambda a: a["encoder.net.0.bias"].__setitem__(0, np.nan))
    with caplog.at_level("WARNING", logger="streamlearn.checkpoint"):
        learner, extra = checkpoint.load(tmp_path)
    assert extra["offsets"] == {"t:0": 64}  # the older one: its records since are learned again
    assert np.isfinite(learner.embed(blobs(8, seed=3)[0])).all()
    assert any("newest checkpoint cannot be read" in r.getMessage() for r in caplog.records)


def test_unfinished_writes_of_dead_processes_are_removed_and_a_running_ones_kept(tmp_path, trained):
    import os
    import subprocess

    checkpoint.save(tmp_path, trained)
    gone = tmp_path / ".ckpt-0000000001-000000000001-00000000000000000001.tmp-999999999"  # above any pid_max
    mine = tmp_path / f".ckpt-0000000002-000000000001-00000000000000000002.tmp-{os.getpid()}"
    running = subprocess.Popen(["sleep", "30"])
    try:
        theirs = tmp_path / f".ckpt-0000000003-000000000001-00000000000000000003.tmp-{running.pid}"
        for folder in (gone, mine, theirs):
            folder.mkdir()
            (folder / checkpoint.MODEL_FILE).write_bytes(b"half")
        assert sorted(checkpoint.remove_stale_temporaries(tmp_path)) == sorted([gone.name, mine.name])
        assert theirs.is_dir() and not gone.exists() and not mine.exists()
        assert checkpoint.latest_path(tmp_path) is not None  # finished checkpoints are untouched
    finally:
        running.kill()
        running.wait()
