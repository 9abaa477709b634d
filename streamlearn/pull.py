"""Use the model in your own service: load a saved model, or fetch the latest one from a running daemon.

Both return a :class:`~streamlearn.snapshot.ModelSnapshot`, the read-only model the API
itself serves: ``embed(rows)``, ``predict(rows)``, ``model_version``, ``classes``,
``n_features``, ``embedding_dim``. It never changes, so threads may share it; to follow the
stream, fetch again (``newer_than`` makes the poll cheap) and swap the reference.

>>> import numpy as np, tempfile
>>> from streamlearn.learner import Learner
>>> from streamlearn import checkpoint
>>> learner = Learner(seed=0, hidden_dim=16, embedding_dim=4)
>>> _ = learner.process(np.eye(3, dtype=np.float32), ["a", "b", "c"])
>>> folder = tempfile.mkdtemp()
>>> _ = checkpoint.save(folder, learner)
>>> model = load_model(folder)
>>> model.classes, model.embed(np.eye(3)).shape
(['a', 'b', 'c'], (3, 4))
>>> model.predict(np.eye(3))[0] == learner.predict(np.eye(3))[0]
True
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from streamlearn.errors import CheckpointError

if TYPE_CHECKING:
    from streamlearn.snapshot import ModelSnapshot

__all__ = ["fetch_model", "load_model"]

#: Largest model file fetched (the export holds no raw samples: a 64-d model with 10 classes is ~0.3 MB).
MAX_MODEL_BYTES = 1 << 30


def load_model(path: str | Path) -> ModelSnapshot:
    """The model saved at ``path``: a checkpoint directory, a ``replay --save-model`` folder, a
    ``model.safetensors`` file, or the ``export.safetensors`` that ``GET /v1/model/weights`` serves.

    Raises CheckpointError when there is no model there or it cannot be read.
    """
    from streamlearn import checkpoint  # torch: imported only when a model is loaded

    learner, _ = checkpoint.load(Path(path))
    return _served(learner, str(path))


def fetch_model(base_url: str, *, newer_than: int | None = None, timeout_s: float = 10.0) -> ModelSnapshot | None:
    """The latest model of the daemon at ``base_url`` (e.g. ``http://127.0.0.1:8080``), from ``GET /v1/model/weights``.

    With ``newer_than``, returns None unless the model it would download is newer than that
    version: it first asks ``GET /v1/model`` for ``checkpoint_version``, so a poll downloads only
    what changed. The file is the latest checkpoint's inference export, so it can be up to one
    checkpoint interval behind what ``/v1/predict`` serves. Raises CheckpointError, with the
    daemon's reason, when it cannot be reached or has no model to give yet.
    """
    from streamlearn import checkpoint  # torch: imported only when a model is loaded

    base = base_url.rstrip("/")
    if newer_than is not None:
        url = f"{base}/v1/model"
        try:
            version = json.loads(_get(url, timeout_s)).get("checkpoint_version")
        except (ValueError, AttributeError) as exc:
            raise CheckpointError(f"cannot read the model version from {url}: {exc}") from exc
        if isinstance(version, int) and version <= newer_than:
            return None
    url = f"{base}/v1/model/weights"
    learner, _ = checkpoint.load_bytes(_get(url, timeout_s), source=url)
    if newer_than is not None and learner.model_version <= newer_than:
        return None  # a daemon that does not say its checkpoint's version
    return _served(learner, url)


def _served(learner, source: str) -> ModelSnapshot:
    if learner.n_features is None:
        raise CheckpointError(f"{source} holds a model that has not seen a sample yet (no feature dimension)")
    return learner.snapshot()


def _get(url: str, timeout_s: float) -> bytes:
    """The body of a GET, or CheckpointError naming the URL and the reason (the API's own ``detail`` for a 4xx)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (the user's own daemon)
            length = response.headers.get("Content-Length")
            body = response.read(MAX_MODEL_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise CheckpointError(f"cannot fetch {url}: HTTP {exc.code}: {_detail(exc)}") from exc
    # Refused, timed out, not a URL, not HTTP at all, or a reply cut short.
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot fetch {url}: {getattr(exc, 'reason', None) or exc!r}") from exc
    if len(body) > MAX_MODEL_BYTES:
        raise CheckpointError(f"cannot fetch {url}: larger than {MAX_MODEL_BYTES} bytes")
    if length is not None and length.isdigit() and int(length) != len(body):
        raise CheckpointError(f"cannot fetch {url}: the reply was cut short ({len(body)} of {length} bytes)")
    return body


def _detail(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read())["detail"])
    except (ValueError, KeyError, TypeError, OSError):
        return str(error.reason)
