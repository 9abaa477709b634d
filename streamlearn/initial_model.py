"""The model a run starts from when it has none of its own: a supplied one (``learner.initial_model``) or a fresh one.

A supplied model is one trained elsewhere: a ``streamlearn replay --save-model DIR`` folder, a
checkpoint directory or folder of another deployment, or the ``export.safetensors`` its
``GET /v1/model/weights`` serves. ``replay`` and the daemon (when ``checkpoint.dir`` holds no
checkpoint; its own checkpoint always wins) then start with what it learned: its encoder, classes,
prototypes, standardiser and heads, so predictions are right from the first sample. What belongs to
the stream it came from is left behind: its Kafka offsets (the consumer starts where its group's
committed offsets say) and its distillation teacher. The supplied model itself becomes the teacher
(DESIGN §4: "the last good snapshot, or a supplied model"), so the first steps on the new stream
keep what it knew until the learner has a good snapshot of its own. Its hyperparameters are its own,
as a restored checkpoint's are; configured ones that differ are named in a warning.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

from streamlearn.errors import CheckpointError, ConfigError

__all__ = ["start_learner", "warn_on_changed_settings"]

logger = logging.getLogger(__name__)

_FIELD = "learner.initial_model"


def start_learner(settings: Any) -> Any:
    """A learner from ``settings`` (a ``LearnerSettings``): the supplied initial model if one is set, else a fresh one.

    Raises ConfigError naming ``learner.initial_model`` when that model is missing, unreadable, or
    takes another number of features than ``learner.n_features``.
    """
    from streamlearn.learner import Learner  # heavy (torch): imported when a run starts

    if settings.initial_model is None:
        return Learner.from_settings(settings)
    return _supplied(Path(settings.initial_model), settings)


def _supplied(path: Path, settings: Any) -> Any:
    from streamlearn import checkpoint
    from streamlearn.model import Teacher

    if not path.exists():
        raise ConfigError(_FIELD, f"{path} does not exist")
    try:
        learner, _stream_position = checkpoint.load(path)  # offsets of another stream: not ours to resume from
    except CheckpointError as exc:
        raise ConfigError(_FIELD, str(exc)) from None
    if settings.n_features is not None and learner.n_features != settings.n_features:
        raise ConfigError(_FIELD, f"the model at {path} takes {learner.n_features} features, "
                                  f"learner.n_features is {settings.n_features}")
    warn_on_changed_settings(settings, learner, "initial_model")
    # Its drift events happened on the stream it was trained on: this deployment's (the daemon's
    # /v1/drift, replay's report) start empty. Its counters stay, so model versions keep rising.
    learner.drift_events.clear()
    if learner.distill_weight > 0:
        learner.teacher = Teacher(learner.encoder, learner.model_version)
    logger.info("starting from the supplied model", extra={
        "path": str(path), "model_version": learner.model_version, "classes": len(learner.classes),
        "n_features": learner.n_features, "samples_seen": learner.samples_seen})
    return learner


def warn_on_changed_settings(configured: Any, loaded: Any, source: str = "checkpoint") -> dict:
    """A loaded model keeps the hyperparameters it was trained with; warn when the configured ones differ.

    ``source`` names where the model came from (``checkpoint`` or ``initial_model``); returns the
    differences, setting -> ``{"configured": ..., source: ...}``.
    """
    changed = {
        name: {"configured": getattr(configured, name), source: getattr(loaded, name)}
        for name in inspect.signature(type(loaded)).parameters
        if getattr(configured, name, None) is not None and getattr(configured, name) != getattr(loaded, name)
    }
    if changed:
        remedy = ("unset learner.initial_model to start a fresh model with them" if source == "initial_model" else
                  "move or delete the checkpoint directory to start a model with the new ones")
        logger.warning(f"learner settings differ from the {source}'s; the {source}'s are used ({remedy})",
                       extra={"differences": changed})
    return changed
