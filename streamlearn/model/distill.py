"""Distillation: a frozen teacher encoder whose embeddings the learning encoder is pulled towards."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["Teacher", "distillation_loss"]


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared embedding difference, relative to the teacher's mean squared norm.

    Relative, so the weight of the term does not depend on the scale the embedding happens to have.

    >>> t = torch.ones(4, 3)
    >>> float(distillation_loss(t, t)), float(distillation_loss(2 * t, t))
    (0.0, 1.0)
    """
    # The ratio of the two means is the ratio of the two sums: one fused squared-error sum, one dot product.
    scale = (teacher * teacher).sum().clamp_min(1e-8 * len(teacher))
    return torch.nn.functional.mse_loss(student, teacher, reduction="sum") / scale


class Teacher:
    """A frozen copy of an encoder at a moment it was known to be good."""

    def __init__(self, encoder: nn.Module, model_version: int):
        self.encoder = copy.deepcopy(encoder).eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.model_version = model_version

    @torch.no_grad()
    def refresh(self, encoder: nn.Module, model_version: int) -> None:
        """Become a copy of ``encoder`` as it is now, reusing this teacher's tensors (no module deep copy)."""
        for mine, theirs in zip(self.encoder.state_dict().values(), encoder.state_dict().values()):
            mine.copy_(theirs)
        self.model_version = model_version

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher embeddings of standardised inputs ``x``."""
        return self.encoder(x)
