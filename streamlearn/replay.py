"""Offline driver: run the same Learner the daemon uses over a JSONL file, test-then-train.

Each valid line is embedded and predicted before it is learned from (in
batches of ``settings.learner.batch_size`` valid samples); invalid lines are
reported with their rejection reason and never stop the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import numpy as np

from streamlearn.config import Settings
from streamlearn.dirlock import DirectoryLock
from streamlearn.errors import SchemaError, UsageError
from streamlearn.jsonl import iter_lines
from streamlearn.paths import open_output, write_errors_named
from streamlearn.schema import Sample, decode_sample, peek_id, peek_label

__all__ = ["ReplayReport", "replay"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayReport:
    """Summary of one replay; `to_dict()` is the JSON written by ``--report``."""

    samples: int
    valid: int
    invalid: dict[str, int]
    labeled: int
    accuracy: float | None
    drift_events: dict[str, Any]
    throughput_samples_per_s: float
    wall_time_s: float
    model_version: int
    classes: list[Any]
    n_features: int | None
    seed: int
    correct: int = field(default=0)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data."""
        return asdict(self)


class _Tally:
    """Running counts for the report, updated batch by batch."""

    def __init__(self) -> None:
        self.samples = 0
        self.valid = 0
        self.labeled = 0
        self.correct = 0
        self.invalid: Counter[str] = Counter()
        self.drift_events: list[dict[str, Any]] = []
        self._seen_events: set[str] = set()

    def collect_drift(self, learner: Any) -> None:
        # learner.drift_events is a bounded recent window; keep every event we have not seen yet.
        for event in learner.drift_events:
            data = event.to_dict()
            key = json.dumps(data, sort_keys=True, default=str)
            if key not in self._seen_events:
                self._seen_events.add(key)
                self.drift_events.append(data)


def _make_learner(settings: Settings) -> Any:
    from streamlearn.initial_model import start_learner  # heavy (torch); imported when a replay actually runs

    return start_learner(settings.learner)


@contextlib.contextmanager
def _progress(path: Path, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar over the file's bytes on stderr (no total for a pipe), or nothing."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("replay"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("replay", total=path.stat().st_size if path.is_file() else None)
        yield lambda n: bar.advance(task, n)


def _open_output(path: Path | None) -> contextlib.AbstractContextManager[IO[str] | None]:
    return contextlib.nullcontext(None) if path is None else open_output(path)


def replay(
    path: Path,
    settings: Settings,
    predictions: Path | None = None,
    report: Path | None = None,
    save_model: Path | None = None,
    *,
    progress: bool | None = None,
    learner: Any = None,
) -> ReplayReport:
    """Replay a JSONL file through a Learner, optionally writing predictions, a report and the model.

    `progress=None` shows a progress bar only when stderr is a terminal.
    `learner` lets a caller continue from an existing Learner; by default a
    fresh one is built from ``settings.learner``.
    """
    path = Path(path)
    learner = learner if learner is not None else _make_learner(settings)
    n_features = settings.learner.n_features or learner.n_features
    max_bytes = settings.kafka.max_message_bytes
    batch_size = settings.learner.batch_size
    show = sys.stderr.isatty() if progress is None else progress
    tally = _Tally()
    # Output rows waiting for their batch to be processed, in input order; valid rows
    # hold their Sample until the learner has predicted it.
    pending: list[dict[str, Any] | Sample] = []
    batch: list[Sample] = []

    logger.debug("replay started", extra={"path": str(path), "batch_size": batch_size, "seed": settings.learner.seed})
    started = time.perf_counter()
    with _open_output(predictions) as out, _progress(path, show) as advance:

        def flush() -> None:
            rows = _process(learner, batch, pending, tally)
            tally.collect_drift(learner)
            if out is not None:
                with write_errors_named(out.name):
                    out.writelines(json.dumps(row, separators=(",", ":"), default=_plain) + "\n" for row in rows)
            batch.clear()
            pending.clear()

        for number, raw in iter_lines(path, advance, max_bytes=max_bytes):
            tally.samples += 1
            try:
                sample = decode_sample(raw, default_id=str(number), n_features=n_features, max_bytes=max_bytes)
            except SchemaError as exc:
                tally.invalid[exc.reason] += 1
                logger.debug("invalid line", extra={"line": number, "reason": exc.reason, "detail": exc.detail})
                pending.append(_rejected_row(raw, number, exc, max_bytes))
                continue
            if n_features is None:
                n_features = int(sample.features.shape[0])  # the first valid sample fixes the dimension
            batch.append(sample)
            pending.append(sample)
            if len(batch) >= batch_size:
                flush()
        flush()
    wall = time.perf_counter() - started

    result = ReplayReport(
        samples=tally.samples,
        valid=tally.valid,
        invalid=dict(sorted(tally.invalid.items())),
        labeled=tally.labeled,
        accuracy=(tally.correct / tally.labeled) if tally.labeled else None,
        drift_events={"count": len(tally.drift_events), "events": tally.drift_events},
        throughput_samples_per_s=(tally.valid / wall) if wall > 0 else 0.0,
        wall_time_s=wall,
        model_version=int(learner.model_version),
        classes=list(learner.classes),
        n_features=learner.n_features if learner.n_features is not None else n_features,
        seed=settings.learner.seed,
        correct=tally.correct,
    )
    logger.debug(
        "replay finished",
        extra={"samples": result.samples, "valid": result.valid, "accuracy": result.accuracy,
               "model_version": result.model_version, "wall_time_s": round(wall, 3)},
    )
    if report is not None:
        report = Path(report)
        report.parent.mkdir(parents=True, exist_ok=True)
        with write_errors_named(report):
            report.write_text(json.dumps(result.to_dict(), indent=2, default=_plain) + "\n", encoding="utf-8")
    if save_model is not None:
        from streamlearn import checkpoint

        if learner.n_features is None:  # the predictions and the report (with the reasons) are written
            raise UsageError(f"no valid sample in {path}: no model to save to --save-model {save_model}")
        Path(save_model).mkdir(parents=True, exist_ok=True)
        with DirectoryLock(Path(save_model), "--save-model"):  # not into the directory of a running daemon
            saved = checkpoint.save(Path(save_model), learner,
                                    extra={"source": str(path), "replay_samples": result.valid})
        logger.debug("model saved", extra={"path": str(saved), "model_version": result.model_version})
    return result


def _rejected_row(raw: bytes, number: int, exc: SchemaError, max_bytes: int) -> dict[str, Any]:
    """The predictions line for an invalid input line (its own id and label when they can be read).

    Its ``model_version`` is filled in by :func:`_process`, once the batch it was read in is learned from.
    """
    return {
        "id": peek_id(raw, max_bytes) or str(number),
        "prediction": None,
        "label": peek_label(raw, max_bytes),
        "model_version": None,
        "error": exc.reason,
        "detail": exc.detail,
    }


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays that a learner may hand back."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)


def _process(
    learner: Any, batch: list[Sample], pending: list[dict[str, Any] | Sample], tally: _Tally
) -> list[dict[str, Any]]:
    """Run test-then-train on the batch and return the finished output rows for `pending`, in order.

    A rejected line gets the model version that was current when it was read: that of the next
    valid sample of the batch (the model that would have predicted it), or the version after the
    batch when it came after the last one.
    """
    outcomes: dict[int, dict[str, Any]] = {}
    if batch:
        features = np.stack([s.features for s in batch])
        labels = [s.label for s in batch]
        result = learner.process(features, labels)
        for i, sample in enumerate(batch):
            correct = result.correct[i]
            tally.valid += 1
            if sample.label is not None:
                tally.labeled += 1
                tally.correct += int(bool(correct))
            outcomes[id(sample)] = {
                "id": sample.id,
                "prediction": result.predictions[i],
                "label": sample.label,
                "model_version": int(result.model_versions[i]),
            }
    version = int(learner.model_version)
    for row in reversed(pending):
        if isinstance(row, Sample):
            version = outcomes[id(row)]["model_version"]
        else:
            row["model_version"] = version
    return [outcomes[id(row)] if isinstance(row, Sample) else row for row in pending]
