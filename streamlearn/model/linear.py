"""An online softmax regression over the embedding and the standardised input: the linear alternative."""

from __future__ import annotations

import numpy as np

__all__ = ["LinearHead", "linear_inputs", "linear_width"]


def linear_inputs(z: np.ndarray, standardised: np.ndarray) -> np.ndarray:
    """What the linear head looks at: each sample's embedding beside its standardised input."""
    return np.hstack([z, standardised])


def linear_width(embedding_dim: int, n_features: int) -> int:
    """Width of :func:`linear_inputs` rows."""
    return embedding_dim + n_features


class LinearHead:
    """Multinomial logistic regression learned by SGD, one step per batch, classes added on the fly.

    Prototypes and neighbours judge a sample by its distance to what was stored; a class
    boundary that is a hyperplane in feature space (common in tabular streams) is found
    faster by a linear model. The learner keeps all three and follows whichever has been
    most accurate lately. Each step sums the gradients of the batch's samples (as many
    per-sample steps would), with an L2 pull towards zero that keeps the weights bounded.

    >>> head = LinearHead(n_inputs=1, lr=0.5)
    >>> x = np.array([[-1.0], [1.0]] * 20)
    >>> for _ in range(20):
    ...     head.learn(x, np.array([0, 1] * 20))
    >>> head.predict(np.array([[-2.0], [0.5]])).tolist()
    [0, 1]
    """

    def __init__(self, n_inputs: int, lr: float = 0.01, l2: float = 1e-4):
        if n_inputs < 1:
            raise ValueError(f"n_inputs must be >= 1, got {n_inputs}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.n_inputs = n_inputs
        self.lr = lr
        self.l2 = l2
        self.weight = np.zeros((0, n_inputs), dtype=np.float32)
        self.bias = np.zeros(0, dtype=np.float32)
        self._trained = np.zeros(0, dtype=bool)  # slots that have had a labeled sample

    @property
    def ready(self) -> bool:
        """At least two classes learned: before that the head has nothing to tell apart."""
        return int(self._trained.sum()) >= 2

    def _ensure(self, n_slots: int) -> None:
        grow = n_slots - len(self.bias)
        if grow > 0:
            self.weight = np.concatenate([self.weight, np.zeros((grow, self.n_inputs), np.float32)])
            self.bias = np.concatenate([self.bias, np.zeros(grow, np.float32)])
            self._trained = np.concatenate([self._trained, np.zeros(grow, bool)])

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Class scores (n, slots); slots never learned score ``-inf``."""
        out = np.asarray(x, dtype=np.float32) @ self.weight.T + self.bias
        out[:, ~self._trained] = -np.inf
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Most likely slot per row (-1 while the head is not :attr:`ready`)."""
        if not self.ready:
            return np.full(len(x), -1)
        return self.logits(x).argmax(1)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (n, slots); slots never learned get 0. Call only when :attr:`ready`."""
        z = self.logits(x)
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        return p

    def learn(self, x: np.ndarray, slots: np.ndarray) -> None:
        """One SGD step on the summed log-loss of rows ``x`` (n, n_inputs) labeled ``slots`` (n,)."""
        x = np.asarray(x, dtype=np.float32)
        slots = np.asarray(slots, dtype=np.int64)
        if len(slots) == 0:
            return
        self._ensure(int(slots.max()) + 1)
        self._trained[slots] = True
        p = self.probabilities(x)
        p[np.arange(len(slots)), slots] -= 1.0  # gradient of the log-loss w.r.t. the logits
        self.weight *= 1.0 - self.lr * self.l2 * len(slots)
        self.weight -= self.lr * (p.T @ x)
        self.bias -= self.lr * p.sum(0)

    def clear(self, slot: int) -> None:
        """Forget ``slot`` (its class was evicted; the slot will be reused)."""
        if slot < len(self.bias):
            self.weight[slot] = 0.0
            self.bias[slot] = 0.0
            self._trained[slot] = False

    def state(self) -> dict[str, np.ndarray]:
        """Arrays for checkpoints."""
        return {"weight": self.weight.copy(), "bias": self.bias.copy(), "trained": self._trained.astype(np.uint8)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore from :meth:`state`."""
        self.weight = np.asarray(state["weight"], dtype=np.float32).copy()
        self.bias = np.asarray(state["bias"], dtype=np.float32).copy()
        self._trained = np.asarray(state["trained"]).astype(bool).copy()
