"""Oracle tests for the learner's fast paths: each must behave exactly like the plain version it replaces."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from river.drift import binary

from streamlearn.drift import _HDDMA
from streamlearn.learner import Learner
from streamlearn.model import Encoder, PrototypeHead, Teacher


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.05, 0.5), st.floats(0.5, 0.95), st.integers(50, 400))
def test_hddm_a_with_cheap_copies_detects_exactly_like_rivers(seed, before, after, switch):
    rng = np.random.default_rng(seed)
    errors = np.concatenate([rng.random(switch) < before, rng.random(300) < after])
    ours, theirs = _HDDMA(drift_confidence=0.001), binary.HDDMA(drift_confidence=0.001)
    for e in errors:
        ours.update(bool(e))
        theirs.update(bool(e))
        assert (ours.drift_detected, ours.warning_detected) == (theirs.drift_detected, theirs.warning_detected)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 3), st.integers(1, 40))
def test_refreshed_distance_columns_equal_a_full_recomputation(seed, per_class, n):
    rng = np.random.default_rng(seed)
    head = PrototypeHead(embedding_dim=4, per_class=per_class, spawn_after=2)
    for slot in range(3):
        head.update(slot, rng.normal(size=4).astype(np.float32))
    z = rng.normal(size=(n, 4)).astype(np.float32)
    distances = head.class_distances(z)
    for i in range(n):  # learn each row in turn, as Learner.process does
        slot = int(rng.integers(0, 3))
        head.update(slot, z[i], missed=bool(rng.random() < 0.5))
        head.refresh(distances[i + 1 :], z[i + 1 :], slot)
        np.testing.assert_allclose(distances[i + 1 :], head.class_distances(z[i + 1 :]), rtol=1e-5, atol=1e-5)


def test_batch_predictions_follow_prototype_updates_made_earlier_in_the_batch():
    # Class "b" first appears mid-batch; later samples near it must be predicted "b" within the same batch.
    x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0], [4.9, 5.1], [0.0, 0.1]], dtype=np.float32)
    out = Learner(seed=0, hidden_dim=16, embedding_dim=4, neighbours=0).process(x, ["a", "a", "b", "b", "b", "a"])
    assert out.predictions == [None, "a", "a", "b", "b", "a"]


def test_teacher_refresh_copies_weights_and_stays_frozen():
    torch.manual_seed(0)
    student = Encoder(6, hidden_dim=8, embedding_dim=3)
    teacher = Teacher(student, model_version=1)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    x = torch.randn(5, 6)
    assert not torch.equal(teacher.embed(x), student(x).detach())
    teacher.refresh(student, model_version=7)
    assert teacher.model_version == 7 and torch.equal(teacher.embed(x), student(x).detach())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)  # later learning must not leak into the teacher
    assert not torch.equal(teacher.embed(x), student(x).detach())
    assert all(not p.requires_grad for p in teacher.encoder.parameters())


def test_memory_embedding_cache_follows_adds_clears_and_loads():
    from streamlearn.model import ClassMemory

    mem = ClassMemory(n_features=2, per_class=3)
    for v in range(4):
        mem.add(0, np.array([v, v], np.float32))
    mem.add(1, np.array([9, 9], np.float32))
    assert list(mem.stale_slots()) == [0, 1]
    xs, slots = mem.all_samples()
    for slot in (0, 1):
        mem.set_embeddings(slot, xs[slots == slot][:, :1] * 10)
    z, zslots = mem.embeddings()
    assert np.array_equal(zslots, slots) and np.array_equal(z, xs[:, :1] * 10)  # same order as all_samples
    mem.add(0, np.array([5, 5], np.float32), z=np.array([50.0], np.float32))  # with its embedding: still usable
    assert list(mem.stale_slots()) == []
    z, zslots = mem.embeddings()
    assert z[zslots == 0][:, 0].tolist() == [20.0, 30.0, 50.0]
    mem.add(1, np.array([7, 7], np.float32))  # without: slot 1 must be embedded again
    assert list(mem.stale_slots()) == [1]
    mem.load_state(mem.state())
    assert list(mem.stale_slots()) == [0, 1]


def test_refresh_is_the_whole_memory_within_budget_and_bounded_beyond(monkeypatch):
    import streamlearn.learner as learner_module

    rng = np.random.default_rng(0)
    learner = Learner(seed=0, hidden_dim=16, embedding_dim=4, memory_per_class=4, meta_every=1000)
    x = rng.normal(size=(120, 3)).astype(np.float32)
    learner.process(x, [f"c{i % 30}" for i in range(120)])  # 30 classes x 4 samples = 120
    held = learner.memory.slots()
    xs, _ = learner.memory.all_samples()
    z, slots = learner._embed_memory()
    assert len(slots) == len(xs)  # within budget: the whole memory
    np.testing.assert_allclose(z, learner.embed(xs), rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(learner_module, "_REFRESH_BUDGET", 40)
    learner._embed_memory()  # crossing the budget: every class is stale once, so all are embedded
    z, _ = learner.memory.embeddings()
    np.testing.assert_allclose(z, learner.embed(xs), rtol=1e-5, atol=1e-6)
    seen: set[int] = set()
    for _ in range(3):
        _, slots = learner._embed_memory()
        assert len(slots) <= 40
        seen.update(int(s) for s in slots)
    assert seen == set(int(s) for s in held)  # round robin reaches every class


def test_shortlisted_vote_equals_the_exact_vote_when_the_neighbours_lie_in_the_nearest_classes():
    from streamlearn.model import NeighbourVote

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 8)).astype(np.float32) * 10
    slots = np.repeat(np.arange(40), 30)
    memory = centres[slots] + rng.normal(size=(len(slots), 8)).astype(np.float32)
    queries = centres[rng.integers(0, 40, 200)] + rng.normal(size=(200, 8)).astype(np.float32)
    class_distances = ((queries[:, None] - centres[None]) ** 2).sum(-1)
    exact, shortlisted = NeighbourVote(k=5), NeighbourVote(k=5, exact_up_to=100, shortlist=4)
    other = 2.0 * memory[:, ::-1]  # a second view (as the standardised input is beside the embedding)
    exact.fit([memory, other], slots)
    shortlisted.fit([memory, other], slots)
    views = [queries, 2.0 * queries[:, ::-1]]
    assert shortlisted._candidates(class_distances) is not None  # the shortlist path is the one tested
    assert np.array_equal(shortlisted.predict(views, class_distances), exact.predict(views))
    assert np.array_equal(shortlisted.predict(views), exact.predict(views))  # no distances: exact search
