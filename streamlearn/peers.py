"""Encoders shared between replicas: the message a replica publishes, and the newest one heard from each peer.

A model message is a safetensors file (the encoder's weights) whose metadata says
whose it is and what it fits: the replica, its model version and labeled samples, when it
was made, and the architecture and seed (encoders are averaged only with encoders that
started from the same weights). It is keyed by the replica in ``kafka.models_topic``.

>>> from streamlearn.model import Encoder
>>> enc = Encoder(4, hidden_dim=8, embedding_dim=2)
>>> arch = {"n_features": 4, "hidden_dim": 8, "embedding_dim": 2, "seed": 0}
>>> peer = decode_model(encode_model(enc.state_dict(), "a", arch, model_version=3, labeled_seen=50, created_at=1.0))
>>> peer.replica, peer.model_version, peer.architecture == arch
('a', 3, True)
>>> decode_model(b"nope")
Traceback (most recent call last):
...
streamlearn.peers.PeerModelError: not_safetensors: too short for a safetensors header (4 bytes)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where tensors are made: the metrics import this module's reasons only
    import torch

__all__ = ["ARCHITECTURE", "MODEL_FORMAT", "PEER_MODEL_REASONS", "PeerBook", "PeerModel", "PeerModelError",
           "decode_model", "encode_model", "incompatibility"]

MODEL_FORMAT = "streamlearn.encoder/1"
ARCHITECTURE = ("n_features", "hidden_dim", "embedding_dim", "seed")
#: Why a model message was not used: unreadable, or made for another encoder than ours.
PEER_MODEL_REASONS = ("not_safetensors", "bad_metadata", "non_finite", "incompatible")
_HEADER_BYTES = 8  # safetensors: little-endian u64 length of the JSON header, then the header


class PeerModelError(ValueError):
    """A model message that cannot be used; ``reason`` is one of :data:`PEER_MODEL_REASONS`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class PeerModel:
    """One replica's encoder as it published it."""

    replica: str
    model_version: int
    labeled_seen: int
    created_at: float  # the publishing replica's clock (Unix seconds)
    architecture: dict[str, int]
    state: dict[str, torch.Tensor]


def encode_model(state: Mapping[str, torch.Tensor], replica: str, architecture: Mapping[str, int], *,
                 model_version: int, labeled_seen: int, created_at: float) -> bytes:
    """The message for an encoder ``state`` (its ``state_dict``) of ``replica``."""
    from safetensors.torch import save as save_tensors

    metadata = {"format": MODEL_FORMAT, "replica": replica, "model_version": str(int(model_version)),
                "labeled_seen": str(int(labeled_seen)), "created_at": repr(float(created_at)),
                **{key: str(int(architecture[key])) for key in ARCHITECTURE}}
    return save_tensors({name: tensor.detach().contiguous() for name, tensor in state.items()}, metadata=metadata)


def _metadata(value: bytes) -> dict:
    if len(value) < _HEADER_BYTES:
        raise PeerModelError("not_safetensors", f"too short for a safetensors header ({len(value)} bytes)")
    size = int.from_bytes(value[:_HEADER_BYTES], "little")
    if size > len(value) - _HEADER_BYTES:
        raise PeerModelError("not_safetensors", f"header of {size} bytes in a {len(value)}-byte message")
    try:
        header = json.loads(value[_HEADER_BYTES:_HEADER_BYTES + size])
    except (UnicodeDecodeError, ValueError) as exc:
        raise PeerModelError("not_safetensors", f"header is not JSON ({exc})") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        raise PeerModelError("bad_metadata", "no metadata in the safetensors header")
    return metadata


def decode_model(value: bytes) -> PeerModel:
    """The peer model in a message; :class:`PeerModelError` saying why when it cannot be used."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    metadata = _metadata(bytes(value))
    if metadata.get("format") != MODEL_FORMAT:
        raise PeerModelError("bad_metadata", f"format {metadata.get('format')!r}, expected {MODEL_FORMAT!r}")
    try:
        replica = str(metadata["replica"])
        numbers = {key: int(metadata[key]) for key in ("model_version", "labeled_seen", *ARCHITECTURE)}
        created_at = float(metadata["created_at"])
    except (KeyError, ValueError) as exc:
        raise PeerModelError("bad_metadata", f"missing or malformed field {exc}") from None
    if not replica or not math.isfinite(created_at):
        raise PeerModelError("bad_metadata", "empty replica or non-finite created_at")
    try:
        state = load_tensors(bytes(value))
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise PeerModelError("not_safetensors", str(exc)) from None
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            raise PeerModelError("bad_metadata", f"tensor {name} is {tensor.dtype}, not floating point")
        if not bool(torch.isfinite(tensor).all()):
            raise PeerModelError("non_finite", f"tensor {name} has NaN or infinite weights")
    return PeerModel(replica, numbers["model_version"], numbers["labeled_seen"], created_at,
                     {key: numbers[key] for key in ARCHITECTURE}, state)


def incompatibility(peer: PeerModel, architecture: Mapping[str, int],
                    shapes: Mapping[str, torch.Size]) -> str | None:
    """Why ``peer`` cannot be averaged with an encoder of ``architecture`` and tensor ``shapes``; None if it can.

    >>> arch = {"n_features": 4, "hidden_dim": 8, "embedding_dim": 2, "seed": 0}
    >>> peer = PeerModel("b", 1, 1, 0.0, {**arch, "seed": 7}, {})
    >>> incompatibility(peer, arch, {})
    'seed 7, ours 0 (encoders from other initial weights do not average)'
    """
    for key in ARCHITECTURE:
        if peer.architecture.get(key) != architecture.get(key):
            why = " (encoders from other initial weights do not average)" if key == "seed" else ""
            return f"{key} {peer.architecture.get(key)}, ours {architecture.get(key)}{why}"
    if set(peer.state) != set(shapes):
        return f"tensors {sorted(set(peer.state) ^ set(shapes))} differ from ours"
    for name, shape in shapes.items():
        if peer.state[name].shape != shape:
            return f"tensor {name} has shape {tuple(peer.state[name].shape)}, ours {tuple(shape)}"
    return None


class PeerBook:
    """The newest model heard from each peer, and which of them have been used already.

    A model counts as new until it is marked used; a later one from the
    same replica replaces it (older versions are dropped), and this replica's own are ignored.

    >>> book = PeerBook("me", max_age_s=60)
    >>> for replica, version in (("b", 1), ("b", 3), ("b", 2), ("me", 9)):
    ...     _ = book.offer(PeerModel(replica, version, 0, 100.0, {}, {}))
    >>> new = book.take(now=110.0)
    >>> [(p.replica, p.model_version) for p in new]
    [('b', 3)]
    >>> book.mark_used(new)
    >>> book.take(now=110.0), book.peers(now=110.0), book.peers(now=200.0)
    ([], 1, 0)
    """

    def __init__(self, own: str, max_age_s: float):
        self.own = own
        self.max_age_s = max_age_s
        self._newest: dict[str, PeerModel] = {}
        self._used: dict[str, tuple[int, float]] = {}

    def offer(self, peer: PeerModel) -> bool:
        """Keep ``peer`` if it is newer than what this book has of its replica; True when kept."""
        if peer.replica == self.own:
            return False
        known = self._newest.get(peer.replica)
        if known is not None and (known.model_version, known.created_at) >= (peer.model_version, peer.created_at):
            return False
        self._newest[peer.replica] = peer
        return True

    def _fresh(self, now: float) -> Iterable[PeerModel]:
        return (p for p in self._newest.values() if now - p.created_at <= self.max_age_s)

    def take(self, now: float) -> list[PeerModel]:
        """The peers' newest models not marked used and not older than ``max_age_s``, by replica."""
        return sorted((p for p in self._fresh(now) if self._used.get(p.replica) != (p.model_version, p.created_at)),
                      key=lambda p: p.replica)

    def mark_used(self, peers: Iterable[PeerModel]) -> None:
        """``peers`` were judged: :meth:`take` leaves them out until their replica sends a newer model."""
        for p in peers:
            self._used[p.replica] = (p.model_version, p.created_at)

    def peers(self, now: float) -> int:
        """Replicas whose newest model is not older than ``max_age_s``."""
        return sum(1 for _ in self._fresh(now))
