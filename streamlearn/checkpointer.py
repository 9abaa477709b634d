"""Checkpoint cadence of the daemon: save the learner with its offsets, and only then commit them.

Order matters for at-least-once delivery (DESIGN.md §1, step 5): outputs are
flushed by the batch handler, the checkpoint is written atomically with the
next offset of every partition, and only after it is durable are the offsets
committed to Kafka. A crash at any point replays at most what came after the
last checkpoint.

Checkpoints on cadence are captured in the loop (copies, a few milliseconds) and
written by one background thread, so the loop does not wait on the disk; the
loop commits their offsets once the writer reports them durable
(:meth:`Checkpointer.finish`). Shutdown and admin-requested checkpoints are
written in the loop, after any background write has finished.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamlearn.config import CheckpointSettings
from streamlearn.errors import CheckpointError, ConfigError
from streamlearn.initial_model import warn_on_changed_settings
from streamlearn.kafka.protocols import Source
from streamlearn.metrics import Metrics
from streamlearn.paths import ensure_writable_folder
from streamlearn.snapshot_store import SnapshotStore

__all__ = ["Checkpointer", "restore"]

logger = logging.getLogger(__name__)

_MAX_RETRY_PAUSE_S = 60.0  # after a failed write, the next try comes after checkpoint.every_seconds, at most this


def ensure_writable(directory: Path) -> None:
    """Create ``directory`` if needed and make sure files can be written there, or raise ConfigError.

    Checked at start-up: a daemon that could not checkpoint would consume and publish until its
    first checkpoint and die there, with nothing committed.

    >>> ensure_writable(Path("/proc/no-such-dir"))
    Traceback (most recent call last):
    ...
    streamlearn.errors.ConfigError: checkpoint.dir: /proc/no-such-dir is not writable (No such file or directory)
    """
    try:
        ensure_writable_folder(directory)
    except OSError as exc:
        raise ConfigError("checkpoint.dir", f"{directory} is not writable ({exc.strerror or exc})") from None


def restore(settings: CheckpointSettings, fresh: Callable[[], Any],
            learner_settings: Any = None) -> tuple[Any, dict, Path | None]:
    """The learner to start with: the latest checkpoint in ``settings.dir`` if there is one, else ``fresh()``.

    Returns ``(learner, extra, path)``; ``extra["offsets"]`` (``"topic:partition"`` ->
    next offset) says where the restored model stopped, ``path`` is the model file it was read
    from (None for a fresh one; an older one when the newest cannot be read). A checkpoint that
    exists but cannot be read raises CheckpointError rather than silently
    starting over. With ``learner_settings``, a warning names every configured
    hyperparameter that differs from the restored model's (the checkpoint's win).
    """
    from streamlearn import checkpoint  # heavy (torch); imported when the daemon starts

    if Path(settings.dir).is_dir() and (stale := checkpoint.remove_stale_temporaries(Path(settings.dir))):
        logger.info("removed unfinished checkpoint writes", extra={"dir": str(settings.dir), "folders": stale})
    if checkpoint.latest_path(Path(settings.dir)) is None:
        logger.info("no checkpoint found; starting a new model (fresh, or learner.initial_model)",
                    extra={"dir": str(settings.dir)})
        return fresh(), {}, None
    learner, extra, path = checkpoint.load_newest(Path(settings.dir))
    if learner_settings is not None:
        warn_on_changed_settings(learner_settings, learner)
    logger.info("restored checkpoint", extra={"dir": str(settings.dir), "model_version": learner.model_version,
                                              "offsets": extra.get("offsets", {})})
    return learner, dict(extra or {}), path


@dataclass(frozen=True)
class _InFlight:
    """A checkpoint being written in the background, with the offsets to commit once it is durable."""

    future: Future
    offsets: dict[str, int]
    model_version: int


class Checkpointer:
    """Decides when a checkpoint is due, writes it, then commits the offsets it contains."""

    def __init__(self, settings: CheckpointSettings, source: Source, metrics: Metrics, store: SnapshotStore, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = Path(settings.dir)
        self.every_samples = settings.every_samples
        self.every_seconds = settings.every_seconds
        self.keep = settings.keep
        self.source = source
        self.metrics = metrics
        self.store = store
        self.clock = clock
        self.pending = 0  # records consumed since the last checkpoint
        self.last_offsets: dict[str, int] = {}
        self.requested = False  # e.g. after an admin reset/rollback changed the model without new records
        self._last_time = clock()
        self._writer: ThreadPoolExecutor | None = None
        self._in_flight: _InFlight | None = None
        self._retry_at: float | None = None  # after a failed write, no checkpoint is due before this time
        self.failures = 0  # failed writes in a row

    def note(self, n_records: int) -> None:
        """Count ``n_records`` consumed (and fully handled) since the last checkpoint."""
        self.pending += n_records

    def request(self) -> None:
        """Ask for a checkpoint at the next opportunity, whatever the cadence says."""
        self.requested = True

    def due(self) -> bool:
        """True when enough records or enough time have passed since the last checkpoint (or a failed one)."""
        if self._retry_at is not None and self.clock() < self._retry_at:
            return False
        if self.requested:
            return True
        if self.pending == 0 or self._in_flight is not None:
            return False
        return self.pending >= self.every_samples or self.clock() - self._last_time >= self.every_seconds

    def checkpoint(self, learner: Any, *, final: bool = False) -> Path | None:
        """Save ``learner`` with the source's positions, then commit them; return the model file written.

        Waits for a background write first. A learner that has never seen a valid sample has
        nothing to save; the offsets (of records that were all dead-lettered) are committed as is.
        A write that fails is logged and retried later (None, nothing committed); with ``final``
        (the checkpoint before exit) its CheckpointError is raised.
        """
        from streamlearn import checkpoint

        self.finish(wait=True)
        offsets = self.source.positions()
        path: Path | None = None
        if learner.n_features is not None:
            started = time.perf_counter()
            try:
                path = checkpoint.save(self.directory, learner, extra={"offsets": offsets}, keep=self.keep)
            except CheckpointError as exc:
                if final:
                    raise
                self._failed(exc, learner.model_version)
                return None
            self._saved(path, time.perf_counter() - started)
        self._commit(offsets, path, learner.model_version)
        self.pending = 0
        self.requested = False
        self._last_time = self.clock()
        return path

    def start(self, learner: Any) -> None:
        """Capture ``learner`` with the source's positions now and write it in the background.

        The offsets are committed by :meth:`finish` once the files are durable; until then no
        other background checkpoint starts. Everything up to these positions has been handled
        and flushed, so the capture may be taken while learning goes on.
        """
        from streamlearn import checkpoint

        if self._in_flight is not None:
            return
        if learner.n_features is None:
            self.checkpoint(learner)  # nothing to write: just commit
            return
        offsets = self.source.positions()
        prepared = checkpoint.prepare(learner, extra={"offsets": offsets})
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        future = self._writer.submit(_timed_write, self.directory, prepared, self.keep)
        self._in_flight = _InFlight(future, offsets, prepared.model_version)
        self.pending = 0
        self._last_time = self.clock()

    def finish(self, wait: bool = False) -> Path | None:
        """Commit the offsets of a background checkpoint that is on disk; the file written, else None.

        With ``wait`` it blocks until the write ends. A failed write is logged, nothing is
        committed, and a checkpoint is due again after a pause (see :meth:`_failed`).
        """
        flight = self._in_flight
        if flight is None or not (wait or flight.future.done()):
            return None
        self._in_flight = None
        try:
            path, seconds = flight.future.result()
        except CheckpointError as exc:
            self._failed(exc, flight.model_version)
            return None
        self._saved(path, seconds)
        self._commit(flight.offsets, path, flight.model_version)
        return path

    def close(self) -> None:
        """Let a background write end (its offsets stay uncommitted unless :meth:`finish` ran) and stop the writer."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    def _failed(self, exc: CheckpointError, model_version: int) -> None:
        # A full disk, a volume gone read-only, no file descriptors left: the daemon goes on learning
        # and publishing, commits nothing (a restart replays from the last checkpoint that was
        # written), and tries again after a pause. StreamlearnCheckpointStale pages if it lasts.
        self.failures += 1
        pause = min(max(self.every_seconds, 1.0), _MAX_RETRY_PAUSE_S)
        self._retry_at = self.clock() + pause
        self.pending = max(self.pending, 1)
        logger.error("checkpoint failed; offsets stay uncommitted, retrying", extra={
            "error": str(exc), "model_version": model_version, "failures_in_a_row": self.failures,
            "retry_in_s": round(pause, 1), "last_committed": self.last_offsets})

    def _saved(self, path: Path, seconds: float) -> None:
        if self.failures:
            logger.info("checkpoint written again", extra={"path": str(path), "after_failures": self.failures})
        self.failures = 0
        self._retry_at = None
        self.metrics.checkpoint_duration.observe(seconds)
        self.metrics.last_checkpoint_timestamp.set(time.time())
        self.store.set_checkpoint(str(path))

    def _commit(self, offsets: dict[str, int], path: Path | None, model_version: int) -> None:
        # Only now: the checkpoint holding these offsets is durable, so committing cannot skip an unlearned sample.
        committed = self.source.commit(offsets)
        logger.info("checkpoint done", extra={"path": str(path), "model_version": model_version,
                                              "offsets": offsets, "committed": committed})
        self.last_offsets = offsets


def _timed_write(directory: Path, prepared: Any, keep: int) -> tuple[Path, float]:
    from streamlearn import checkpoint

    started = time.perf_counter()
    path = checkpoint.write(directory, prepared, keep)
    return path, time.perf_counter() - started
