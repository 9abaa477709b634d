"""Checkpoints: the whole learner in one portable safetensors file, written atomically, never pickled."""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load as _arrays_from_bytes
from safetensors.numpy import load_file, save_file

from streamlearn.drift import DriftEvent
from streamlearn.errors import CheckpointError
from streamlearn.learner import Learner
from streamlearn.model import ClassMemory, PrototypeHead, Teacher
from streamlearn.concepts import Concept

__all__ = ["EXPORT_FILE", "FORMAT", "MODEL_FILE", "READABLE_FORMATS", "Prepared", "latest_path", "load", "load_bytes", "load_newest", "version_of",
           "prepare", "save", "write"]

logger = logging.getLogger(__name__)

# 2: the encoder's linear path (`encoder.skip.weight`), which a reader of format 1 cannot load.
FORMAT = "streamlearn/2"
#: Formats this version reads (a format-1 model loads with a zero linear path and predicts as it did).
READABLE_FORMATS = ("streamlearn/1", FORMAT)
MODEL_FILE = "model.safetensors"
#: The inference-only copy written beside each checkpoint: no raw samples, no optimiser, no concepts.
EXPORT_FILE = "export.safetensors"
# The export leaves out every stored input: the vote keeps its embedding view (view0) and its slots.
_EXPORT_PREFIXES = ("encoder.", "normalizer.", "head.", "vote.view0", "vote.slots", "vote.weights", "linear.",
                    "head_accuracy")
LATEST = "LATEST"
# A checkpoint without one of these (written before it existed) leaves the fresh learner's value.
_COUNTERS = ("since_meta", "since_drift", "since_repair", "since_snapshot", "plastic_left", "recheck_in", "concept_id",
             "next_concept_id", "meta_interval", "loss_ema", "loss_steps", "loss_slow")



def _encoder_arrays(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {f"{prefix}.{k}": v.detach().cpu().numpy().copy() for k, v in state.items()}


def _part(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in arrays.items() if k.startswith(prefix + ".")}


def _concept_arrays(prefix: str, c: Concept) -> dict[str, np.ndarray]:
    out = _encoder_arrays(f"{prefix}.encoder", c.encoder_state)
    out.update({f"{prefix}.head.{k}": v for k, v in c.head_state.items()})
    out.update({f"{prefix}.memory.{k}": v for k, v in c.memory_state.items()})
    out.update({f"{prefix}.linear.{k}": v for k, v in (c.linear_state or {}).items()})
    return out


def _concept_from(arrays: dict[str, np.ndarray], prefix: str, info: dict) -> Concept:
    encoder = {k: torch.from_numpy(v.copy()) for k, v in _part(arrays, f"{prefix}.encoder").items()}
    return Concept(info["id"], encoder, _part(arrays, f"{prefix}.head"), _part(arrays, f"{prefix}.memory"),
                   info["accuracy"], info["model_version"], _part(arrays, f"{prefix}.linear") or None)


def to_state(learner: Learner) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays and JSON metadata that describe ``learner`` completely enough to predict identically."""
    if learner.n_features is None:
        raise CheckpointError("nothing to save: the learner has not seen a sample yet")
    learner.settle()  # a batch it has not finished learning from: the checkpoint holds it as replay leaves it
    arrays = _encoder_arrays("encoder", learner.encoder.state_dict())
    arrays.update(_encoder_arrays("initial", learner._initial))
    arrays.update({f"normalizer.{k}": v for k, v in learner.normalizer.state().items()})
    arrays.update({f"head.{k}": v for k, v in learner.head.state().items()})
    arrays.update({f"memory.{k}": v for k, v in learner.memory.state().items()})
    if learner.vote is not None:
        arrays.update({f"vote.{k}": v for k, v in learner.vote.state().items()})
    if learner.linear is not None:
        arrays.update({f"linear.{k}": v for k, v in learner.linear.state().items()})
    arrays["head_accuracy"] = learner.choice.accuracy.copy()
    arrays.update({f"prior.{k}": v for k, v in learner.prior.state().items()})
    if learner.teacher is not None:
        arrays.update(_encoder_arrays("teacher", learner.teacher.encoder.state_dict()))
    optim = learner.meta.optimizer.state_dict()
    for idx, slots in optim["state"].items():
        arrays.update({f"optim.{idx}.{k}": torch.as_tensor(v).numpy().copy() for k, v in slots.items()})
    library = []
    for concept in learner.library:
        arrays.update(_concept_arrays(f"library.{concept.concept_id}", concept))
        library.append({"id": concept.concept_id, "accuracy": concept.accuracy, "model_version": concept.model_version})
    good = None
    if learner._good is not None:
        arrays.update(_concept_arrays("good", learner._good))
        good = {"id": learner._good.concept_id, "accuracy": learner._good.accuracy,
                "model_version": learner._good.model_version}
    hyper = {name: getattr(learner, name) for name in inspect.signature(Learner).parameters if name != "n_features"}
    meta = {
        "format": FORMAT,
        "hyperparameters": hyper,
        "n_features": learner.n_features,
        "embedding_dim": learner.embedding_dim,
        "model_version": learner.model_version,
        "samples_seen": learner.samples_seen,
        "labeled_seen": learner.labeled_seen,
        "meta_updates": learner.meta_updates,
        "last_loss": learner.last_loss,
        "last_update": learner.last_update,
        "classes": learner.classes,
        "registry": learner.registry.state(),
        "teacher_version": learner.teacher.model_version if learner.teacher is not None else None,
        "library": library,
        "good": good,
        "drift_events": [e.to_dict() for e in learner.drift_events],
        "rng": learner._rng.bit_generator.state,
        "optimizer_groups": optim["param_groups"],
        "plasticity": learner.meta.plasticity,
        "counters": {name: getattr(learner, f"_{name}") for name in _COUNTERS},
    }
    recent = list(learner._recent)
    if recent:
        arrays["recent.x"] = np.stack([x for x, _, _ in recent])
        arrays["recent.slot"] = np.array([y for _, y, _ in recent], dtype=np.int64)
        arrays["recent.ok"] = np.array([ok for _, _, ok in recent], dtype=np.uint8)
    return arrays, meta


def from_state(arrays: dict[str, np.ndarray], meta: dict) -> Learner:
    """Rebuild a learner from :func:`to_state` output (drift detectors restart empty)."""
    if meta.get("format") not in READABLE_FORMATS:
        raise CheckpointError(f"unsupported checkpoint format {meta.get('format')!r}, expected one of "
                              f"{', '.join(READABLE_FORMATS)} (a newer streamlearn wrote it?)")
    # A 0.1 checkpoint has no linear_lr: its model had no linear head, and a restored model keeps its own.
    # One from before the paced meta steps took a step every meta_every labels, and goes on so; one from
    # before steps came sooner on a falling loss never took them sooner, and does not now.
    hyper = meta["hyperparameters"]
    learner = Learner(meta["n_features"], **{"linear_lr": 0.0, "meta_max_every": hyper["meta_every"],
                                             "meta_min_every": hyper["meta_every"], **hyper})
    saved = _part(arrays, "encoder")
    learner.encoder.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in saved.items()})
    if _part(arrays, "initial"):  # absent from an export: the seed rebuilds the same initial weights
        learner._initial = {k: torch.from_numpy(v.copy()) for k, v in _part(arrays, "initial").items()}
    # Weights the saved model did not have (the linear path, before it existed) start, and stay anchored, as loaded.
    for name, value in learner.encoder.state_dict().items():
        if name not in saved:
            learner._initial[name] = value.detach().clone()
    learner.meta = learner._meta_step()
    learner.normalizer.load_state(_part(arrays, "normalizer"))
    learner.head = PrototypeHead(learner.embedding_dim, per_class=learner.prototypes_per_class)
    learner.head.load_state(_part(arrays, "head"))
    learner.memory = ClassMemory(learner.n_features, learner.memory_per_class)
    if _part(arrays, "memory"):
        learner.memory.load_state(_part(arrays, "memory"))
    learner.registry.load_state(meta["registry"])
    if learner.vote is not None:
        learner.vote.load_state(_part(arrays, "vote"))
    if learner.linear is not None and _part(arrays, "linear"):  # absent from a 0.1 checkpoint: starts untrained
        learner.linear.load_state(_part(arrays, "linear"))
    learner.choice.load(arrays["head_accuracy"])
    if _part(arrays, "prior"):  # absent from checkpoints before the class prior: every class counts alike
        learner.prior.load_state(_part(arrays, "prior"))
    if meta.get("teacher_version") is not None and _part(arrays, "teacher"):
        learner.teacher = Teacher(learner.encoder, meta["teacher_version"])
        learner.teacher.encoder.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in _part(arrays, "teacher").items()})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in _part(arrays, "optim").items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = torch.from_numpy(value.copy())
    # A parameter the saved model did not have (the linear path, before it existed) starts with zero moments.
    learner.meta.optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_groups"]})
    for name, value in meta["counters"].items():
        setattr(learner, f"_{name}", value)
    learner.meta.set_plasticity(meta["plasticity"])
    if "recent.x" in arrays:
        learner._recent.extend(zip(arrays["recent.x"], arrays["recent.slot"].tolist(), arrays["recent.ok"].astype(bool).tolist()))
    for info in meta["library"]:
        learner.library.put(_concept_from(arrays, f"library.{info['id']}", info))
    if meta.get("good") is not None:
        learner._good = _concept_from(arrays, "good", meta["good"])
    for name in ("model_version", "samples_seen", "labeled_seen", "meta_updates", "last_loss", "last_update"):
        setattr(learner, name, meta[name])
    learner._rng.bit_generator.state = meta["rng"]
    learner.drift_events.extend(DriftEvent(**event) for event in meta["drift_events"])
    return learner


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Prepared:
    """A checkpoint captured in memory (copies, independent of the live learner), ready for :func:`write`."""

    name: str
    arrays: dict[str, np.ndarray]
    meta: dict
    model_version: int


def prepare(learner: Learner, extra: dict | None = None) -> Prepared:
    """Capture ``learner`` now; learning may go on while :func:`write` puts the capture on disk."""
    arrays, meta = to_state(learner)
    meta["extra"] = extra or {}
    meta["saved_at"] = time.time()
    # Unique even when nothing was learned since the last save (e.g. a batch of rejects), so the
    # checkpoint LATEST points to is never replaced in place.
    name = f"ckpt-{learner.model_version:010d}-{learner.samples_seen:012d}-{time.time_ns():020d}"
    return Prepared(name, arrays, meta, learner.model_version)


def save(directory: Path, learner: Learner, extra: dict | None = None, keep: int = 3) -> Path:
    """Write a checkpoint of ``learner`` under ``directory`` and point ``LATEST`` at it; returns the file."""
    return write(directory, prepare(learner, extra), keep)


def write(directory: Path, prepared: Prepared, keep: int = 3) -> Path:
    """Write a prepared checkpoint atomically and point ``LATEST`` at it; returns the model file.

    The files are written into a temporary folder, fsynced, and renamed into place; ``LATEST``
    is replaced by rename too, so a crash leaves either the old or the new checkpoint, never half.
    """
    directory = Path(directory)
    started = time.perf_counter()
    name, arrays, meta = prepared.name, prepared.arrays, prepared.meta
    tmp = directory / f".{name}.tmp-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        # Never a raw input: the standardiser's latest rows stay out too.
        export = {k: v for k, v in arrays.items() if k.startswith(_EXPORT_PREFIXES) and k != "normalizer.recent_rows"}
        export_meta = dict(meta, library=[], good=None, teacher_version=None, portable=True)
        for filename, tensors, header in ((MODEL_FILE, arrays, meta), (EXPORT_FILE, export, export_meta)):
            save_file(tensors, str(tmp / filename), metadata={"streamlearn": json.dumps(header)})
            with open(tmp / filename, "rb") as fh:
                os.fsync(fh.fileno())
        final = directory / name
        _fsync_dir(tmp)
        os.replace(tmp, final)
        pointer = directory / f".{LATEST}.tmp-{os.getpid()}"
        with open(pointer, "w") as fh:
            fh.write(name + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(pointer, directory / LATEST)
        _fsync_dir(directory)
    except (OSError, SafetensorError) as exc:  # safetensors reports its own I/O errors (EMFILE, ENOSPC) so
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written folder stays
        raise CheckpointError(f"cannot write checkpoint in {directory}: {exc}") from exc
    _prune(directory, keep, final)
    logger.info("checkpoint saved", extra={"path": str(final), "model_version": prepared.model_version,
                                           "seconds": round(time.perf_counter() - started, 3)})
    return final / MODEL_FILE


# The name :func:`prepare` gives a checkpoint folder (the widths are minimums: a version may outgrow
# ten digits). Only such folders are read or pruned: a user's own "ckpt-backup" is left alone.
_CHECKPOINT_NAME = re.compile(r"ckpt-\d{10,}-\d{12,}-\d{20,}")


def version_of(path: str | Path) -> int | None:
    """The model version of the checkpoint at ``path`` (its folder or a file in it), from the folder's name.

    >>> version_of("/data/ckpt/ckpt-0000000042-000000001000-00000000000000000001/model.safetensors")
    42
    >>> version_of("/data/my-model/model.safetensors") is None
    True
    """
    for part in (Path(path).name, Path(path).parent.name):
        if _CHECKPOINT_NAME.fullmatch(part):
            return int(part.split("-")[1])
    return None


def _checkpoint_folders(directory: Path) -> list[Path]:
    """The checkpoint folders :func:`write` made in ``directory``, oldest first (by the clock in their name)."""
    folders = [p for p in directory.glob("ckpt-*") if _CHECKPOINT_NAME.fullmatch(p.name) and p.is_dir()]
    return sorted(folders, key=lambda p: (int(p.name.rsplit("-", 1)[-1]), p.name))


def remove_stale_temporaries(directory: Path) -> list[str]:
    """Delete the temporary folders of writes that never finished (a process killed mid-write); their names.

    Called before this process writes: a temporary folder of this process id (a container's daemon
    is often pid 1 on every start) or of a process that no longer runs is left over. One of a
    running process is another daemon's write in progress, and stays.
    """
    removed = []
    for tmp in Path(directory).glob(".ckpt-*.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or (int(pid) != os.getpid() and _running(int(pid))):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp.name)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _prune(directory: Path, keep: int, newest: Path) -> None:
    """Delete all but the ``keep`` most recently written checkpoints; never ``newest``, the one just written.

    By time written, not by model version: a second run saving into the same folder starts again
    at a low version, and its model must not be the one deleted.
    """
    checkpoints = [p for p in _checkpoint_folders(directory) if p != newest]
    for old in checkpoints[: max(0, len(checkpoints) - (keep - 1))] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def _complete(directory: Path) -> list[Path]:
    """The model files of the complete checkpoint folders in ``directory``, oldest first."""
    return [p / MODEL_FILE for p in _checkpoint_folders(directory) if (p / MODEL_FILE).is_file()]


_told_dangling: set[Path] = set()  # checkpoints latest_path has warned about


def latest_path(directory: Path) -> Path | None:
    """The model file a checkpoint directory, a saved model, or a file path refers to (None if absent).

    If ``LATEST`` is missing or dangling (a crash at the wrong moment, a hand edit) the newest
    complete ``ckpt-*`` folder is used, so a restart never silently starts from scratch.
    """
    directory = Path(directory)
    if directory.is_file():
        return directory
    if (directory / MODEL_FILE).is_file():
        return directory / MODEL_FILE
    pointer = directory / LATEST
    if pointer.is_file():
        candidate = directory / pointer.read_text().strip() / MODEL_FILE
        if candidate.is_file():
            return candidate
    complete = _complete(directory)
    if complete:
        if complete[-1] not in _told_dangling:  # once per checkpoint, not at every look-up (start-up looks three times)
            _told_dangling.add(complete[-1])
            logger.warning("LATEST is missing or dangling; using the newest complete checkpoint",
                           extra={"path": str(complete[-1])})
        return complete[-1]
    return None


def load(directory: Path) -> tuple[Learner, dict]:
    """Load the learner (and the ``extra`` dict saved with it) from a checkpoint or saved model.

    In a checkpoint directory, a newest checkpoint that cannot be read (a disk fault, a hand edit)
    gives way to the newest older one that can, with a warning: its offsets are older, so the
    records since are learned again, and nothing is skipped. Only when none can be read is it an error.
    """
    learner, extra, _ = load_newest(directory)
    return learner, extra


def load_newest(directory: Path) -> tuple[Learner, dict, Path]:
    """:func:`load`, and the model file it was read from (an older one when the newest cannot be read)."""
    directory = Path(directory)
    path = latest_path(directory)
    if path is None:
        raise CheckpointError(f"no checkpoint found at {directory}")
    try:
        return (*_read(path), path)
    except CheckpointError as newest:
        older = [p for p in reversed(_complete(directory)) if p != path] if directory.is_dir() else []
        for candidate in older:
            try:
                learner, extra = _read(candidate)
            except CheckpointError as exc:
                logger.warning("checkpoint cannot be read either", extra={"path": str(candidate), "error": str(exc)})
                continue
            logger.warning("newest checkpoint cannot be read; restoring the newest older one (the records since "
                           "are learned again)", extra={"unreadable": str(path), "error": str(newest),
                                                        "path": str(candidate)})
            return learner, extra, candidate
        raise


def _read(path: Path) -> tuple[Learner, dict]:
    """The learner and ``extra`` of one model file; CheckpointError if it cannot be read."""
    try:
        arrays = load_file(str(path))
        with open(path, "rb") as fh:
            meta = _metadata(fh.read(int.from_bytes(fh.read(8), "little")))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path} (is it a streamlearn checkpoint?): {exc}") from exc
    return _restore(arrays, meta, str(path))


def load_bytes(data: bytes, source: str = "the model") -> tuple[Learner, dict]:
    """:func:`load` for the bytes of one model file (``export.safetensors`` from ``GET /v1/model/weights``).

    ``source`` names where the bytes came from in errors; CheckpointError if they are not a model.
    """
    try:
        arrays = _arrays_from_bytes(data)
        meta = _metadata(data[8 : 8 + int.from_bytes(data[:8], "little")])
    except (ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise CheckpointError(f"cannot read {source} (is it a streamlearn model?): {exc}") from exc
    return _restore(arrays, meta, source)


def _metadata(header: bytes) -> dict:
    """streamlearn's JSON metadata from a safetensors header (the JSON after the file's 8-byte length)."""
    return json.loads(json.loads(header)["__metadata__"]["streamlearn"])


def _restore(arrays: dict[str, np.ndarray], meta: dict, source: str) -> tuple[Learner, dict]:
    # A model whose weights are not finite would serve null embeddings and dead-letter what it is fed.
    broken = [k for k, v in arrays.items()
              if k.startswith("encoder.") and v.dtype.kind == "f" and not np.isfinite(v).all()]
    if broken:
        raise CheckpointError(f"cannot restore a model from checkpoint {source}: non-finite weights in {broken[0]}")
    try:
        learner = from_state(arrays, meta)
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:  # readable, but not what this version writes
        # (TypeError: hyperparameters this version does not know, e.g. after a downgrade)
        raise CheckpointError(f"cannot restore a model from checkpoint {source}: {exc.__class__.__name__}: {exc}") from exc
    return learner, meta.get("extra", {})
