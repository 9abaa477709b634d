"""The online learner: predict, then learn, then repair — one mini-batch at a time, no I/O inside."""

from __future__ import annotations

import inspect
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from streamlearn.drift import DriftEvent, DriftMonitor
from streamlearn.model import (
    ClassMemory, ClassPrior, ClassRegistry, Encoder, HeadChoice, Label, LinearHead, MetaStep, NeighbourVote,
    OnlineStandardizer, PrototypeHead, Teacher, as_label, fuse, linear_inputs, linear_width,
)
from streamlearn.concepts import Concept, ConceptLibrary
from streamlearn.repair import RepairMixin
from streamlearn.replica_fusion import FusionMixin
from streamlearn.snapshot import ModelSnapshot, embed_with, encode, predict_with

__all__ = ["BatchResult", "Learner"]

logger = logging.getLogger(__name__)

_RECENT = 256  # labeled samples kept to judge and repair a drift
_REFRESH_BUDGET = 4096  # memory samples embedded again per refresh when memory is larger (see _embed_memory)
_LOSS_RATE = 0.1  # weight of the newest meta step in the running episode loss that paces the steps
_LOSS_WARM_UP = 10  # meta steps the running loss needs before it may space steps out
_SLOW_RATE = 0.02  # the same for the slow running loss that the running loss is compared with
_FALLING_WARM_UP = 20  # meta steps both need before a falling loss may bring the steps closer
_FALLING = 0.1  # the running loss is falling while it is this fraction below the slow one
# A young learner takes a large batch in parts: at most a sixteenth of the samples it has seen so
# far, and never fewer than _YOUNG_PART at a time (see process).
_YOUNG_PART = 32
_YOUNG_SHARE = 16


def _running(average: float | None, value: float, rate: float) -> float:
    """A moving average after ``value``: ``value`` itself when there is none yet."""
    return value if average is None else average + rate * (value - average)


@dataclass(frozen=True)
class BatchResult:
    """What the learner made of one batch, per sample, before learning from it."""

    embeddings: np.ndarray
    predictions: list[Label | None]
    drift: list[bool]
    model_versions: list[int]
    correct: list[bool | None]

    @staticmethod
    def joined(parts: Sequence["BatchResult"]) -> "BatchResult":
        """The results of consecutive parts of one batch as one result, rows in order."""
        rows: tuple[list, ...] = ([], [], [], [])
        for part in parts:
            for into, values in zip(rows, (part.predictions, part.drift, part.model_versions, part.correct)):
                into.extend(values)
        return BatchResult(np.concatenate([part.embeddings for part in parts]), *rows)


class Learner(RepairMixin, FusionMixin):
    """Meta-learned encoder + prototype head, kept up to date by test-then-train on mini-batches.

    Every batch costs one forward pass for its embeddings; every ``meta_every`` labeled samples
    the encoder takes one episodic ProtoNet step on memory, pulled towards a frozen teacher
    (the last good snapshot) by distillation. While the running episode loss stays under
    ``meta_calm_loss`` the episodes are solved already and their gradients are small: the
    spacing doubles, up to ``meta_max_every`` labeled samples (at or below ``meta_every``:
    never spaced), and drops back to ``meta_every`` once the running loss is at ``meta_calm_loss``
    or above again, or a repair changes the model. While the running loss is still falling (10%
    under a slow running average of it that starts after the last repair) the steps are still
    being learned from: a step every ``meta_min_every`` labeled samples then (at or above
    ``meta_every``: never sooner).
    Drift detectors watch the error and the embedding distances; on a rise
    of the error the repair policy keeps the model, re-estimates prototypes from the new data
    (with raised plasticity) or restores a stored concept, whichever does best on the
    post-change window.

    >>> rng = np.random.default_rng(0)
    >>> learner = Learner(seed=0, hidden_dim=32, embedding_dim=8)
    >>> x = rng.normal(size=(4, 3)).astype(np.float32) + np.array([[0], [0], [5], [5]], dtype=np.float32)
    >>> out = learner.process(x, ["a", "a", "b", "b"])
    >>> out.predictions  # nothing known before the first label, "a" only before the first "b"
    [None, 'a', 'a', 'b']
    >>> learner.predict(x)[0]
    ['a', 'a', 'b', 'b']
    """

    def __init__(
        self,
        n_features: int | None = None,
        *,
        embedding_dim: int = 64,
        hidden_dim: int = 128,
        lr: float = 1e-3,
        meta_every: int = 16,
        meta_max_every: int = 64,
        meta_min_every: int = 4,
        meta_calm_loss: float = 0.15,
        episode_ways: int = 10,
        episode_shots: int = 8,
        episode_queries: int = 8,
        memory_per_class: int = 200,
        max_classes: int = 1000,
        prototypes_per_class: int = 1,
        neighbours: int = 5,
        linear_lr: float = 0.01,
        distill_weight: float = 1.0,
        anchor_weight: float = 0.01,
        drift_delta: float = 0.002,
        concept_library_size: int = 8,
        seed: int = 0,
    ):
        for name, value in (("meta_every", meta_every), ("episode_ways", episode_ways), ("episode_shots", episode_shots),
                            ("episode_queries", episode_queries), ("memory_per_class", memory_per_class)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if n_features is not None and n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        if meta_max_every < 1:
            raise ValueError(f"meta_max_every must be >= 1, got {meta_max_every}")
        if meta_min_every < 1:
            raise ValueError(f"meta_min_every must be >= 1, got {meta_min_every}")
        if not meta_calm_loss >= 0:
            raise ValueError(f"meta_calm_loss must be >= 0, got {meta_calm_loss}")
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.lr = lr
        self.meta_every = meta_every
        self.meta_max_every = meta_max_every
        self.meta_min_every = meta_min_every
        self.meta_calm_loss = meta_calm_loss
        self.episode_ways = episode_ways
        self.episode_shots = episode_shots
        self.episode_queries = episode_queries
        self.memory_per_class = memory_per_class
        self.max_classes = max_classes
        self.prototypes_per_class = prototypes_per_class
        self.neighbours = neighbours
        self.linear_lr = linear_lr
        self.distill_weight = distill_weight
        self.anchor_weight = anchor_weight
        self.drift_delta = drift_delta
        self.concept_library_size = concept_library_size
        self.seed = seed
        # Validate the remaining hyperparameters through the parts that own them.
        PrototypeHead(embedding_dim, per_class=prototypes_per_class)
        if neighbours < 0:
            raise ValueError(f"neighbours must be >= 0, got {neighbours}")
        if linear_lr < 0:
            raise ValueError(f"linear_lr must be >= 0, got {linear_lr}")
        DriftMonitor(delta=drift_delta)
        ConceptLibrary(concept_library_size)
        self.model_version = 0
        self._n_features = n_features
        self._reset()

    @classmethod
    def from_settings(cls, settings) -> "Learner":
        """Build from a ``LearnerSettings`` (fields named like the constructor arguments)."""
        names = list(inspect.signature(cls).parameters)
        return cls(**{name: getattr(settings, name) for name in names if hasattr(settings, name)})

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self.samples_seen = 0
        self.labeled_seen = 0
        self.meta_updates = 0
        self.last_loss: float | None = None
        self.last_update: float | None = None
        self.drift_events: deque[DriftEvent] = deque(maxlen=100)
        self.registry = ClassRegistry(self.max_classes)
        self.head = PrototypeHead(self.embedding_dim, per_class=self.prototypes_per_class)
        self.vote = NeighbourVote(self.neighbours) if self.neighbours else None
        self.prior = ClassPrior()  # how often each class is labeled lately: weighs the vote
        self.linear: LinearHead | None = None  # built with the encoder (its input is embedding + features)
        self.choice = HeadChoice()  # how much each of prototypes, vote, linear head and their fusion counts
        self.monitor = DriftMonitor(delta=self.drift_delta)
        self.library = ConceptLibrary(self.concept_library_size)
        self._recent: deque[tuple[np.ndarray, int, bool]] = deque(maxlen=_RECENT)
        self._since_meta = 0
        self._meta_interval = self.meta_every  # labeled samples per meta step now (see _pace)
        self._loss_ema: float | None = None  # running episode loss since the last change of model
        self._loss_steps = 0  # meta steps in that running loss
        self._loss_slow: float | None = None  # a slower running episode loss over the same steps
        self._refresh_cursor = 0  # round robin over classes when memory exceeds the refresh budget
        self._concept_id = 0
        self._next_concept_id = 1
        self._since_drift = 0
        self._since_repair = _RECENT  # labeled samples since the last repair that changed the model
        self._since_snapshot = 0
        self._plastic_left = 0
        self._recheck_in = 0
        self._good: Concept | None = None
        self._unsettled: bool | None = None  # a batch awaits settle(): whether it had labels
        self.teacher: Teacher | None = None
        self.encoder = self.normalizer = self.memory = self.meta = None
        if self._n_features is not None:
            self._build(self._n_features)

    def _build(self, n_features: int) -> None:
        self._n_features = n_features
        gen = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            self.encoder = Encoder(n_features, self.hidden_dim, self.embedding_dim).eval()
        self._initial = {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}
        self.normalizer = OnlineStandardizer(n_features)
        self.memory = ClassMemory(n_features, self.memory_per_class)
        self.meta = self._meta_step()
        self.linear = self._linear_head()

    def _linear_head(self) -> LinearHead | None:
        if self.linear_lr == 0:
            return None
        return LinearHead(linear_width(self.embedding_dim, self._n_features), lr=self.linear_lr)

    def _meta_step(self) -> MetaStep:
        return MetaStep(self.encoder, lr=self.lr, distill_weight=self.distill_weight,
                        anchor_weight=self.anchor_weight, anchor=self._initial)

    @property
    def n_features(self) -> int | None:
        return self._n_features

    @property
    def meta_spacing(self) -> int:
        """Labeled samples per meta step now: ``meta_every``, more while the loss is calm, fewer while it falls."""
        return self._meta_interval

    @property
    def classes(self) -> list[Label]:
        return self.registry.labels()

    def reset(self) -> None:
        """Start from a fresh model (same hyperparameters and input dimension); the version still rises."""
        self._reset()
        self._bump()

    def _bump(self) -> None:
        self.model_version += 1
        self.last_update = time.time()

    # --------------------------------------------------------------- inference
    def _check(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"features must be a 2-d array (n, n_features), got shape {x.shape}")
        if self._n_features is None:
            self._build(x.shape[1])
            # Every later sample must have this many features: say where it came from (learner.n_features pins it).
            logger.info("feature dimension fixed by the first sample", extra={"n_features": x.shape[1]})
        if x.shape[1] != self._n_features:
            raise ValueError(f"expected {self._n_features} features, got {x.shape[1]}")
        if not np.isfinite(x).all():
            raise ValueError("features must be finite")
        return x

    def embed(self, features: np.ndarray) -> np.ndarray:
        """Embeddings (n, embedding_dim) with the current model; learns nothing."""
        return embed_with(self.encoder, self.normalizer, self._check(features))

    def predict(self, features: np.ndarray) -> tuple[list[Label | None], np.ndarray]:
        """Labels from the heads' weighted vote and squared distances to their prototypes; learns nothing."""
        labels = self.registry.slot_labels()
        return predict_with(self.encoder, self.normalizer, self.head, labels, self._check(features), **self._heads())

    def _heads(self) -> dict:
        """The ready heads besides the prototypes, their vote weights and the leading head, for snapshots."""
        vote = self.vote if self.vote is not None and self.vote.ready else None
        linear = self.linear if self.linear is not None and self.linear.ready else None
        available = (True, vote is not None, linear is not None, vote is not None and linear is not None)
        return {"vote": vote, "linear": linear, "weights": self.choice.weights(available),
                "lead": self.choice.best(available)}

    def snapshot(self) -> ModelSnapshot:
        """An immutable copy for concurrent readers (the HTTP API)."""
        if self._n_features is None:
            raise ValueError("no model yet: the learner has not seen a sample")
        return ModelSnapshot.capture(
            self.encoder, self.normalizer, self.head, self.registry.slot_labels(), **self._heads(),
            model_version=self.model_version, n_features=self._n_features, embedding_dim=self.embedding_dim,
            samples_seen=self.samples_seen, last_update=self.last_update,
        )

    # ------------------------------------------------------------ learning
    def process(self, features: np.ndarray, labels: Sequence[Label | None], *, settle: bool = True) -> BatchResult:
        """Test-then-train on one batch: each sample is embedded and predicted before it is learned.

        Within a batch the encoder, the standardiser and the linear head stay as they were;
        only the prototypes, the memory and the vote follow sample by sample. A young learner
        therefore takes a large batch in parts, each at most a sixteenth of the samples seen so
        far (at least 32): a file of a few hundred samples, or the first polls of a backlog,
        are learned from as they go, whatever the batch size (one batch of 150 samples gives the
        predictions of 32, 32, 32, 32 and 22). From 16 x the batch size on, a batch is one part.

        ``settle=False`` returns as soon as the batch is predicted and its samples are stored,
        before the slow part of learning from them (the meta steps, see :meth:`settle`): a
        daemon publishes the results first. The predictions are the same either way.
        """
        x = self._check(features)
        if len(labels) != len(x):
            raise ValueError(f"{len(x)} feature rows but {len(labels)} labels")
        self.settle()
        parts = []
        start = 0
        while len(x) - start > (size := max(_YOUNG_PART, self.samples_seen // _YOUNG_SHARE)):
            parts.append(self._process(x[start : start + size], labels[start : start + size]))
            self.settle()
            start += size
        parts.append(self._process(x[start:], labels[start:]))
        if settle:
            self.settle()
        return parts[0] if len(parts) == 1 else BatchResult.joined(parts)

    def settle(self) -> None:
        """Finish learning from the last batch: its meta steps, the vote's view of memory, the snapshot policy.

        :meth:`process` does this itself unless told ``settle=False``; then the next
        :meth:`process` does it first, and a checkpoint does it before it captures the learner.
        Until then the model is the one that predicted the batch. Nothing to do: returns at once.
        """
        if self._unsettled is None:
            return
        labeled, self._unsettled = self._unsettled, None
        if not self._learn() and self.vote is not None and labeled:
            self._embed_memory()  # the vote must see this batch's samples even without a meta step
        self._maybe_snapshot()

    def _process(self, x: np.ndarray, labels: Sequence[Label | None]) -> BatchResult:
        """:meth:`process` on one part up to :meth:`settle`: checked features ``x``, as many ``labels``."""
        labels = [as_label(label) for label in labels]
        # The standardiser learns from the batch after it was predicted (the first batch excepted: there
        # are no statistics yet), so the batch is seen through the same mapping as the stored samples the
        # vote compares it with, which were embedded at the end of the last batch.
        warm_up = self.normalizer.count == 0
        if warm_up:
            self._update_scales(x)
        xn = self.normalizer.transform(x)
        z = encode(self.encoder, xn)
        # Distances to every class for the whole batch; a learned sample refreshes its own class's column.
        dists = self.head.class_distances(z)
        alt = self._alternatives(z, xn, dists, labels)  # (n, 3): the vote's, the linear head's, fused; -1 = none
        others = alt.tolist()  # the same as plain ints, read once per sample (kept in step with alt below)
        z_sq = (z * z).sum(1)
        learned: list[tuple[int, int]] = []  # (row, slot) of the labeled samples, for the linear head
        labeled: list[int] = []  # slots of the labeled samples, for the class prior
        preds: list[Label | None] = []
        drift: list[bool] = []
        versions: list[int] = []
        correct: list[bool | None] = []
        for i, label in enumerate(labels):
            slot, dist = self.head.pick(dists[i])
            picks = (slot, *others[i])
            chosen = self.choice.pick(picks)
            preds.append(self.registry.label_of(chosen) if chosen >= 0 else None)
            versions.append(self.model_version)
            drifted = slot >= 0 and self.monitor.update_distance(dist)
            if drifted:
                self._record("embedding", "observe")
            if label is None:
                correct.append(None)
                drift.append(drifted)
                continue
            known = self.registry.slot_of(label)
            ok = chosen >= 0 and chosen == known
            self.choice.score(picks, known)
            correct.append(ok)
            y, _, evicted = self.registry.slot_for(label)
            if evicted is not None:
                self._forget_slot(y)
                alt[i + 1 :][alt[i + 1 :] == y] = -1
                others = alt.tolist()
                learned = [(row, s) for row, s in learned if s != y]
                labeled = [s for s in labeled if s != y]
            learned.append((i, y))
            labeled.append(y)
            self.head.update(y, z[i], missed=slot != known)
            if self.head.capacity == dists.shape[1]:
                self.head.refresh(dists[i + 1 :], z[i + 1 :], y, z_sq[i + 1 :])
            else:  # the head grew: a new matrix for the rest of the batch
                dists = self._distances_after(z, i)
            self.memory.add(y, x[i], z[i])
            self._recent.append((x[i].copy(), y, ok))  # a copy: a view would pin the caller's batch
            self.labeled_seen += 1
            self._since_meta += 1
            self._since_drift += 1
            self._since_repair += 1
            self._since_snapshot += 1
            if self._plastic_left > 0:
                self._plastic_left -= 1
                if self._plastic_left == 0:
                    self.meta.set_plasticity(1.0)
            detector = self.monitor.update_error(0.0 if ok else 1.0)
            if detector is None and self._recheck_in > 0:
                self._recheck_in -= 1
                detector = "recheck" if self._recheck_in == 0 else None
            if detector is not None:
                drifted = True
                version = self.model_version
                if self._repair(detector) and i + 1 < len(x):
                    z[i + 1 :] = encode(self.encoder, xn[i + 1 :])
                if self.model_version != version:
                    # A new or restored concept has learned the window already, and any class, the vote and
                    # the linear head may differ for the rest of the batch ("keep" changes nothing of them).
                    learned = []
                    dists = self._distances_after(z, i)
                    z_sq = (z * z).sum(1)
                    alt[i + 1 :] = self._alternatives(z[i + 1 :], xn[i + 1 :], dists[i + 1 :], labels[i + 1 :])
                    others = alt.tolist()
            drift.append(drifted)
        if not warm_up:
            self._update_scales(x)
        self.samples_seen += len(x)
        if learned and self.linear is not None:
            rows, slots = np.array(learned).T
            self.linear.learn(linear_inputs(z[rows], xn[rows]), slots)
        self.prior.update(np.array(labeled, dtype=np.int64))
        self._unsettled = any(label is not None for label in labels)
        return BatchResult(z, preds, drift, versions, correct)

    def _update_scales(self, x: np.ndarray) -> None:
        """The standardiser learns ``x``; a feature whose unit or offset changed for good is logged."""
        self.normalizer.update(x)
        moved, restarted = self.normalizer.moved, self.normalizer.restarted
        if moved.size or restarted.size:
            logger.info("feature scale changed", extra={"moved": moved.tolist(), "restarted": restarted.tolist(),
                                                        "samples_seen": self.samples_seen})

    def _alternatives(
        self, z: np.ndarray, xn: np.ndarray, dists: np.ndarray, labels: Sequence[Label | None]
    ) -> np.ndarray:
        """Slots picked by the vote, the linear head and their fusion (n, 3) for embeddings ``z``, standardised ``xn``.

        The rows are a batch in stream order with their ``labels``: the vote of a row also counts
        the rows before it whose class it knows, as a per-sample learner would have stored them.
        -1 where that head is off or not ready yet.
        """
        alt = np.full((len(z), 3), -1, dtype=np.int64)
        shares = None
        if self.vote is not None:
            known = np.array([-1 if (slot := self.registry.slot_of(label)) is None else slot
                              for label in labels], dtype=np.int64)
            shares = self.vote.shares((z, xn)[: self.vote.n_views], dists, known)
        if shares is not None:
            alt[:, 0] = shares.argmax(1)
        if self.linear is not None and self.linear.ready:
            probabilities = self.linear.probabilities(linear_inputs(z, xn))
            alt[:, 1] = probabilities.argmax(1)
            if shares is not None:
                alt[:, 2] = fuse(shares, probabilities)
        return alt

    def _distances_after(self, z: np.ndarray, i: int) -> np.ndarray:
        """A batch distance matrix recomputed for the rows after ``i`` (rows up to ``i`` are done with)."""
        rest = self.head.class_distances(z[i + 1 :])
        return np.concatenate([np.full((i + 1, rest.shape[1]), np.inf), rest])

    def _learn(self) -> bool:
        """Take the meta steps the labeled samples have earned; True when the encoder changed."""
        if self._since_meta < self._meta_interval:
            return False
        teacher = None if self._plastic_left > 0 else self.teacher
        losses = []
        while self._since_meta >= self._meta_interval:
            self._since_meta -= self._meta_interval
            episode = self.memory.sample_episode(self._rng, self.episode_ways, self.episode_shots, self.episode_queries)
            if episode is None:
                self._since_meta %= self._meta_interval
                return False
            sx, sy, qx, qy = episode
            loss = self.meta.step((self.normalizer.transform(sx), sy, self.normalizer.transform(qx), qy), teacher)
            if loss is None:
                rolled = self._numeric_fault()
                self._repace()  # a fault is no calm: full pace again...
                self._since_meta %= self.meta_every  # ...and the labels of the failed steps are spent
                if rolled:
                    return True  # rolled back (prototypes refitted, version bumped)
                if not losses:
                    return False
                break  # no snapshot to go back to: keep the steps that did succeed, consistently
            losses.append(loss)
            self._pace(loss)
        self.meta_updates += len(losses)
        self.last_loss = float(np.mean(losses))
        self._refit_prototypes()
        self._bump()
        return True

    def _pace(self, loss: float) -> None:
        """Space meta steps out while the episodes are solved already, bring them closer while the loss still falls.

        A low episode loss (ProtoNet plus distillation) means small gradients: steps then change
        little, and the prototype head and memory keep up with the stream on their own. A running
        loss well under its own slower average means each step still teaches the encoder
        something: a stream whose classes take many steps to learn (a boundary across many
        features, say) gets them sooner. A loss that has stopped falling (label noise, or the
        best this encoder does) goes back to a step every ``meta_every`` labels. Never while
        plasticity is raised (those steps, with no teacher, do not count towards the running
        losses), nor before they have seen a few steps (a young memory makes easy episodes).
        """
        if self._plastic_left > 0:
            return  # right after a re-estimate: _repace set the full pace, and it stays until this ends
        ema = _running(self._loss_ema, loss, _LOSS_RATE)
        # The slow average starts at the first loss after the last change of model and forgets it slowly
        # (2% a step): "falling" is measured against where the loss started as much as against its
        # recent past. (A bias-corrected average, their plain mean at first, did worse: 0.8277 vs 0.8297
        # on nine river/sklearn streams.)
        slow = _running(self._loss_slow, loss, _SLOW_RATE)
        self._loss_ema, self._loss_slow = ema, slow
        self._loss_steps += 1
        if ema < self.meta_calm_loss and self._loss_steps >= _LOSS_WARM_UP:
            self._meta_interval = max(self.meta_every, min(2 * self._meta_interval, self.meta_max_every))
        elif self._loss_steps >= _FALLING_WARM_UP and slow - ema > _FALLING * slow:
            self._meta_interval = min(self.meta_min_every, self.meta_every)
        else:
            self._meta_interval = self.meta_every

    def _repace(self) -> None:
        """The model changed under the running losses (repair, rollback, fault): ``meta_every`` until they tell."""
        self._meta_interval = self.meta_every
        self._loss_ema = self._loss_slow = None
        self._loss_steps = 0

    def _embed_memory(self) -> tuple[np.ndarray, np.ndarray]:
        """Embed memory again with the current encoder and refit the neighbour vote.

        Returns the new embeddings and their class slots. Up to ``_REFRESH_BUDGET`` samples this
        is the whole memory. Beyond, it is every class whose samples changed plus the next
        classes in turn up to the budget; the vote keeps the cached embeddings of the others
        (a few batches old), so the cost stops growing with the number of classes.
        """
        held = self.memory.slots()
        sizes = self.memory.counts(held)
        if sizes.sum() <= _REFRESH_BUDGET:
            xs, owner = self.memory.all_samples()
            xn = self.normalizer.transform(xs)
            z = encode(self.encoder, xn) if len(xs) else xs[:, :0]
            if self.vote is not None:
                self.vote.fit((z, xn), owner, self._class_weights(owner))
            return z, owner
        refresh = self._refresh_slots(held, sizes)
        xs, owner = self.memory.all_samples(refresh)
        z = encode(self.encoder, self.normalizer.transform(xs))
        for slot in refresh:
            self.memory.set_embeddings(int(slot), z[owner == slot])
        if self.vote is not None:
            every, slots = self.memory.embeddings()
            self.vote.fit((every, self.normalizer.transform(self.memory.all_samples()[0])), slots,
                          self._class_weights(slots))
        return z, owner

    def _class_weights(self, slots: np.ndarray) -> np.ndarray:
        """The vote's weight of every class up to the largest of ``slots``: its recent labeled count."""
        return self.prior.weights(int(slots.max()) + 1 if len(slots) else 0)

    def _refresh_slots(self, held: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Classes to embed again when memory exceeds the budget: the stale ones, then the next in turn."""
        stale = np.isin(held, self.memory.stale_slots())
        room = _REFRESH_BUDGET - int(sizes[stale].sum())
        fresh, fresh_sizes = held[~stale], sizes[~stale]
        start = self._refresh_cursor % max(1, len(fresh))
        fresh, fresh_sizes = np.roll(fresh, -start), np.roll(fresh_sizes, -start)
        take = int(np.searchsorted(np.cumsum(fresh_sizes), room, side="right"))
        self._refresh_cursor = start + take
        return np.sort(np.concatenate([held[stale], fresh[:take]]))

    def _refit_prototypes(self) -> None:
        """After the encoder moved, prototypes are re-estimated from the (newly embedded) samples in memory."""
        z, slots = self._embed_memory()
        for slot in np.unique(slots):
            self.head.refit(int(slot), z[slots == slot])

    def _numeric_fault(self) -> bool:
        """Roll back after a non-finite loss; False when there was no snapshot to roll back to."""
        logger.error("numeric fault in the meta step: rolling back", extra={"model_version": self.model_version})
        rolled = self.rollback()
        self._record("numeric_fault", "rollback" if rolled else "skip")
        return rolled

    def _forget_slot(self, slot: int) -> None:
        """An evicted class's slot is reused: nothing of the old class may survive under the new label."""
        self.head.clear(slot)
        self.memory.clear(slot)
        self.prior.clear(slot)
        if self.linear is not None:
            self.linear.clear(slot)
        kept = [entry for entry in self._recent if entry[1] != slot]
        self._recent.clear()
        self._recent.extend(kept)
        for concept in [*self.library, *([self._good] if self._good is not None else [])]:
            concept.forget_slot(slot)

    def _record(self, detector: str, action: str) -> None:
        event = DriftEvent(detector, self.samples_seen, self.model_version, time.time(), action)
        self.drift_events.append(event)
        logger.info("drift detected", extra={"detector": detector, "action": action,
                                             "sample": self.samples_seen, "model_version": self.model_version})

    # --------------------------------------------------------------- repair
