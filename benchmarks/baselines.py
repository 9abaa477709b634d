"""Online classifiers that streamlearn's Learner is compared against, behind one tiny protocol.

Every baseline has ``name`` and ``process(X, labels) -> predictions``: test-then-
train on one batch. River models work per sample inside the batch
(``predict_one`` then ``learn_one``, their native mode); the torch MLP
(deep-river style) also steps once per sample; the fine-tuning models predict
the whole mini-batch, then take one gradient step on it. Unlabeled samples
(label None) are predicted and never learned from. Labels may be any hashable
(str or int); torch models map them to indices as they appear.

All settings are the libraries' standard ones (river defaults; Adam lr=1e-3),
not tuned for or against any stream.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

import numpy as np
import torch
from river import compose, drift, forest, linear_model, neighbors, preprocessing, tree
from torch import nn

from streamlearn.learner import Learner
from streamlearn.model import Encoder

__all__ = [
    "FineTune",
    "LabelIndex",
    "OnlineClassifier",
    "OnlineMLP",
    "ResetOnDrift",
    "RiverModel",
    "RunningStandardizer",
    "default_baselines",
    "encoder_mlp",
]

logger = logging.getLogger(__name__)

Label = Hashable


class OnlineClassifier(Protocol):
    """Test-then-train on a batch: predict every sample, then learn from the labeled ones."""

    name: str

    def process(self, X: np.ndarray, labels: Sequence[Label | None]) -> list[Label | None]: ...


class LabelIndex:
    """Grows a label <-> index mapping in order of first appearance (labels may be str or int)."""

    def __init__(self) -> None:
        self.labels: list[Label] = []
        self._index: dict[Label, int] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def add(self, label: Label) -> int:
        """Index of ``label``, registering it if new."""
        if label not in self._index:
            self._index[label] = len(self.labels)
            self.labels.append(label)
        return self._index[label]


class RunningStandardizer:
    """Per-feature running mean/variance (Chan's batch update); maps x to (x - mean) / std."""

    def __init__(self, n_features: int) -> None:
        self.count = 0
        self.mean = np.zeros(n_features)
        self.m2 = np.zeros(n_features)

    def update(self, X: np.ndarray) -> None:
        """Fold a batch (rows = samples) into the statistics."""
        n = len(X)
        if n == 0:
            return
        batch_mean = X.mean(axis=0)
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + ((X - batch_mean) ** 2).sum(axis=0) + delta**2 * self.count * n / total
        self.count = total

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Standardize with the current statistics (constant features map to 0)."""
        std = np.sqrt(self.m2 / max(self.count, 1))
        return ((X - self.mean) / np.where(std > 1e-8, std, 1.0)).astype(np.float32)


class RiverModel:
    """A river classifier driven per sample: predict_one, then learn_one if labeled."""

    def __init__(self, name: str, model: object) -> None:
        self.name = name
        self.model = model

    def process(self, X: np.ndarray, labels: Sequence[Label | None]) -> list[Label | None]:
        out: list[Label | None] = []
        for row, label in zip(X.tolist(), labels, strict=True):
            x = dict(enumerate(row))
            out.append(self.model.predict_one(x))
            if label is not None:
                self.model.learn_one(x, label)
        return out


def encoder_mlp(n_features: int) -> nn.Module:
    """The learner's own encoder (``streamlearn.model.Encoder`` at the Learner's default sizes), freshly initialised.

    The same module, not a look-alike: "same encoder" baselines differ from the learner only in how they train it.
    """
    defaults = inspect.signature(Learner).parameters
    return Encoder(n_features, defaults["hidden_dim"].default, defaults["embedding_dim"].default)


class _GrowingHead(nn.Module):
    """Linear softmax head whose output size doubles when new classes arrive."""

    def __init__(self, in_dim: int, seed: int, capacity: int = 16) -> None:
        super().__init__()
        self.seed = seed
        self.linear = nn.Linear(in_dim, capacity)

    def ensure(self, n_classes: int) -> bool:
        """Grow to hold ``n_classes`` outputs; True if the parameters were replaced."""
        old = self.linear
        if n_classes <= old.out_features:
            return False
        with torch.random.fork_rng(devices=[]):  # new rows must not depend on (or disturb) the global RNG
            torch.manual_seed(self.seed + old.out_features)
            new = nn.Linear(old.in_features, max(n_classes, 2 * old.out_features))
        with torch.no_grad():
            new.weight[: old.out_features] = old.weight
            new.bias[: old.out_features] = old.bias
        self.linear = new
        return True

    def forward(self, h: torch.Tensor, n_classes: int) -> torch.Tensor:
        return self.linear(h)[:, :n_classes]


class _TorchClassifier:
    """Shared plumbing: online standardization, label mapping, a body and a growing head."""

    def __init__(self, name: str, body: Callable[[int], nn.Module], body_out: int, lr: float, seed: int) -> None:
        self.name = name
        self._make_body = body
        self.body_out = body_out
        self.lr = lr
        self.seed = seed
        self.labels = LabelIndex()
        self.n_features: int | None = None
        self._resets = 0

    def _reset(self, n_features: int) -> None:
        # All mutable model state lives here, so reset-on-drift can start over.
        self.n_features = n_features
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 1000 * self._resets)
            self.body = self._make_body(n_features)
            self.head = _GrowingHead(self.body_out, seed=self.seed + 1000 * self._resets)
        self.scaler = RunningStandardizer(n_features)
        self.opt_body = torch.optim.Adam(self.body.parameters(), lr=self.lr)
        self.opt_head = torch.optim.Adam(self.head.parameters(), lr=self.lr)
        self._resets += 1

    def _targets(self, labels: Sequence[Label | None]) -> tuple[np.ndarray, torch.Tensor]:
        mask = np.array([y is not None for y in labels], dtype=bool)
        idx = torch.tensor([self.labels.add(y) for y in labels if y is not None], dtype=torch.long)
        if self.head.ensure(len(self.labels)):
            self.opt_head = torch.optim.Adam(self.head.parameters(), lr=self.lr)
        return mask, idx

    def _predict(self, Z: np.ndarray) -> list[Label | None]:
        if len(self.labels) == 0:
            return [None] * len(Z)
        with torch.no_grad():
            logits = self.head(self.body(torch.from_numpy(Z)), len(self.labels))
        return [self.labels.labels[i] for i in logits.argmax(dim=1).tolist()]

    def _step(self, Z: np.ndarray, idx: torch.Tensor) -> None:
        logits = self.head(self.body(torch.from_numpy(Z)), len(self.labels))
        loss = nn.functional.cross_entropy(logits, idx)
        self.opt_body.zero_grad()
        self.opt_head.zero_grad()
        loss.backward()
        self.opt_body.step()
        self.opt_head.step()


class OnlineMLP(_TorchClassifier):
    """deep-river-style online MLP: standardize, predict, then one Adam step per labeled sample."""

    def __init__(self, hidden: int = 128, lr: float = 1e-3, seed: int = 0, name: str = "online-mlp") -> None:
        super().__init__(
            name, lambda d: nn.Sequential(nn.Linear(d, hidden), nn.ReLU()), hidden, lr, seed
        )

    def process(self, X: np.ndarray, labels: Sequence[Label | None]) -> list[Label | None]:
        if self.n_features is None:
            self._reset(X.shape[1])
        out: list[Label | None] = []
        for i, label in enumerate(labels):
            row = X[i : i + 1]
            self.scaler.update(row)
            z = self.scaler.transform(row)
            out.extend(self._predict(z))
            if label is not None:
                _, idx = self._targets([label])
                self._step(z, idx)
        return out


class FineTune(_TorchClassifier):
    """Plain online fine-tuning: the learner's encoder + a linear softmax head, one Adam step per mini-batch."""

    def __init__(self, lr: float = 1e-3, seed: int = 0, name: str = "fine-tune") -> None:
        super().__init__(name, encoder_mlp, 64, lr, seed)

    def process(self, X: np.ndarray, labels: Sequence[Label | None]) -> list[Label | None]:
        if self.n_features is None:
            self._reset(X.shape[1])
        self.scaler.update(X)
        Z = self.scaler.transform(X)
        out = self._predict(Z)
        mask, idx = self._targets(labels)
        if mask.any():
            self._step(Z[mask], idx)
        self._after_batch(out, labels)
        return out

    def _after_batch(self, predictions: list, labels: Sequence[Label | None]) -> None:
        """Hook for subclasses that watch the prequential error."""

    def embed(self, X: np.ndarray) -> np.ndarray:
        """The encoder's 64-d output for X (standardized with the running statistics)."""
        with torch.no_grad():
            return self.body(torch.from_numpy(self.scaler.transform(X))).numpy()


class ResetOnDrift(FineTune):
    """Fine-tuning that starts from scratch when ADWIN sees its 0/1 error rise."""

    def __init__(self, lr: float = 1e-3, seed: int = 0, delta: float = 0.002, name: str = "reset-on-drift") -> None:
        super().__init__(lr=lr, seed=seed, name=name)
        self.delta = delta
        self.detector = drift.ADWIN(delta=delta)
        self.resets: list[int] = []
        self._seen = 0

    def _after_batch(self, predictions: list, labels: Sequence[Label | None]) -> None:
        for pred, label in zip(predictions, labels, strict=True):
            self._seen += 1
            if label is None:
                continue
            before = self.detector.estimation
            self.detector.update(float(pred != label))
            # ADWIN flags any change; only a rise in error means the model went stale
            # (a fall after a reset is the model recovering).
            if self.detector.drift_detected and self.detector.estimation > before:
                logger.debug("reset name=%s sample=%d", self.name, self._seen)
                self.resets.append(self._seen)
                self._reset(self.n_features)
                self.detector = drift.ADWIN(delta=self.delta)


def default_baselines(seed: int = 0) -> list[OnlineClassifier]:
    """The standard comparison set, each with its library's usual settings."""
    return [
        RiverModel("softmax", compose.Pipeline(preprocessing.StandardScaler(), linear_model.SoftmaxRegression())),
        RiverModel(
            "knn-w1000",
            compose.Pipeline(
                preprocessing.StandardScaler(),
                neighbors.KNNClassifier(n_neighbors=5, engine=neighbors.LazySearch(window_size=1000)),
            ),
        ),
        RiverModel("arf", forest.ARFClassifier(seed=seed)),
        RiverModel("hat", tree.HoeffdingAdaptiveTreeClassifier(seed=seed)),
        OnlineMLP(seed=seed),
        FineTune(seed=seed),
        ResetOnDrift(seed=seed),
    ]
