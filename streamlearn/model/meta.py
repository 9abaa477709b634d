"""Online meta-learning: small episodic ProtoNet steps on support/query episodes drawn from memory."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from streamlearn.model.distill import Teacher, distillation_loss
from streamlearn.model.optim import FlatAdam

__all__ = ["protonet_loss", "MetaStep"]

logger = logging.getLogger(__name__)


def protonet_loss(
    support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, query_y: torch.Tensor, ways: int
) -> torch.Tensor:
    """Prototypical-network loss: cross-entropy of queries over negative squared distances to class means.

    >>> s = torch.tensor([[0.0], [10.0]]); q = torch.tensor([[0.5], [9.0]])
    >>> y = torch.tensor([0, 1])
    >>> round(float(protonet_loss(s, y, q, y, 2)), 4)
    0.0
    """
    onehot = torch.nn.functional.one_hot(support_y, ways).to(support.dtype)
    protos = (onehot.T @ support) / onehot.sum(0).clamp_min(1.0)[:, None]
    # -|q - p|^2 = 2 q.p - |p|^2 - |q|^2; the last term is the same for every class of a query, so the
    # softmax (and the loss and its gradient) do not depend on it. Two products instead of cdist: the
    # forward, loss and backward of a 160-row episode took 1.24 ms instead of 1.35.
    logits = 2.0 * (query @ protos.T) - (protos * protos).sum(1)
    return torch.nn.functional.cross_entropy(logits, query_y)


class MetaStep:
    """One optimiser over the encoder; ``step`` takes one episodic update and reports the loss.

    The learning rate can be scaled for a while (``plasticity``) after a drift, and a
    distillation term keeps the encoder close to a teacher on the classes it replays.
    """

    def __init__(
        self,
        encoder: nn.Module,
        lr: float = 1e-3,
        distill_weight: float = 1.0,
        anchor_weight: float = 0.0,
        anchor: dict[str, torch.Tensor] | None = None,
        max_grad_norm: float = 5.0,
    ):
        if distill_weight < 0:
            raise ValueError(f"distill_weight must be >= 0, got {distill_weight}")
        self.encoder = encoder
        self.anchor_weight = anchor_weight
        self.lr = lr
        self.distill_weight = distill_weight
        self.max_grad_norm = max_grad_norm
        # L2 towards the initial weights ("L2 Init", Kumar et al. 2023): keeps the encoder plastic
        # and its features general, so embeddings stay useful for classes it has not seen.
        self.optimizer = FlatAdam(encoder, lr=lr, max_grad_norm=max_grad_norm, anchor=anchor,
                                  anchor_weight=anchor_weight)
        self.plasticity = 1.0

    def set_plasticity(self, factor: float) -> None:
        """Scale the learning rate by ``factor`` (1.0 restores the configured rate)."""
        self.plasticity = factor
        self.optimizer.lr = self.lr * factor

    def step(
        self,
        episode: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        teacher: Teacher | None,
    ) -> float | None:
        """One update on a standardised episode; the episode loss (ProtoNet + distillation), ``None`` on a fault."""
        sx, sy, qx, qy = episode
        ways = int(sy.max()) + 1
        x = torch.from_numpy(np.concatenate([sx, qx]))
        z = self.encoder(x)  # no train()/eval() switch: the encoder has no mode-dependent layers
        n_s = len(sx)
        loss = protonet_loss(z[:n_s], torch.from_numpy(sy), z[n_s:], torch.from_numpy(qy), ways)
        if teacher is not None and self.distill_weight > 0:
            loss = loss + self.distill_weight * distillation_loss(z, teacher.embed(x))
        value = float(loss.detach())
        if not np.isfinite(value):
            logger.warning("meta step skipped: non-finite loss", extra={"loss": value})
            return None
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return value
