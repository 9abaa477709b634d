"""Holds the latest immutable model state for readers on other threads (the HTTP API).

The learner thread builds a new :class:`ModelState` and ``publish``\\ es it;
readers call ``current()`` and keep using the object they got, which never
changes underneath them. Swapping one reference is atomic, so readers never
lock against learning.

>>> store = SnapshotStore()
>>> store.current() is None
True
>>> store.publish(ModelState(model_version=2, samples_seen=3))
>>> store.current().samples_seen
3
>>> store.set_checkpoint("/tmp/ckpt-3/model.safetensors")
>>> store.current().checkpoint_path, store.current().samples_seen
('/tmp/ckpt-3/model.safetensors', 3)
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["ModelState", "SnapshotStore"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelState:
    """What the API serves: a model snapshot plus the learner's bookkeeping at the time it was taken.

    ``snapshot`` is None while the learner has no model yet (its feature
    dimension is fixed by the first valid sample); the other fields are still
    meaningful then.
    """

    snapshot: Any = None  # learner.ModelSnapshot: .embed(X), .predict(X), .n_features, ...
    model_version: int = 0
    n_features: int | None = None
    embedding_dim: int = 0
    classes: tuple = ()
    samples_seen: int = 0
    last_update: float | None = None
    drift_events: tuple = ()
    checkpoint_path: str | None = None
    meta_updates: int = 0

    @classmethod
    def from_learner(cls, learner: Any, *, checkpoint_path: str | None = None) -> ModelState:
        """Capture ``learner`` now: an immutable snapshot (if it has a model) and copies of its counters."""
        return cls(
            snapshot=learner.snapshot() if learner.n_features is not None else None,
            model_version=int(learner.model_version),
            n_features=learner.n_features,
            embedding_dim=int(learner.embedding_dim),
            classes=tuple(learner.classes),
            samples_seen=int(learner.samples_seen),
            last_update=learner.last_update,
            drift_events=tuple(learner.drift_events),
            checkpoint_path=checkpoint_path,
            meta_updates=int(learner.meta_updates),
        )


class SnapshotStore:
    """The one place the latest ModelState lives; writers publish, readers take ``current()``."""

    def __init__(self) -> None:
        self._state: ModelState | None = None
        self._write_lock = threading.Lock()  # only writers lock; readers just read the reference

    def current(self) -> ModelState | None:
        """The latest published state (None before the first publish)."""
        return self._state

    def publish(self, state: ModelState) -> None:
        """Make ``state`` the one readers see, keeping the known checkpoint path if it has none."""
        with self._write_lock:
            previous = self._state
            if state.checkpoint_path is None and previous is not None and previous.checkpoint_path is not None:
                state = dataclasses.replace(state, checkpoint_path=previous.checkpoint_path)
            self._state = state

    def set_checkpoint(self, path: str | None) -> None:
        """Record the path of the newest durable checkpoint (``None`` forgets it, e.g. after a reset)."""
        with self._write_lock:
            if self._state is not None:
                self._state = dataclasses.replace(self._state, checkpoint_path=path)
            else:
                self._state = ModelState(snapshot=None, checkpoint_path=path)
