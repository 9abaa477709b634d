"""The feature extractor: a small MLP that maps standardised features to an embedding."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Encoder"]


class Encoder(nn.Module):
    """Two hidden layers with LayerNorm; the output is the embedding used by the prototype head.

    LayerNorm keeps activations on one scale whatever the input, which matters when the
    encoder is updated online with few samples and a learning rate raised after a drift.

    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> Encoder(8, hidden_dim=16, embedding_dim=4)(torch.zeros(3, 8)).shape
    torch.Size([3, 4])
    """

    def __init__(self, n_features: int, hidden_dim: int = 256, embedding_dim: int = 64):
        super().__init__()
        for name, value in (("n_features", n_features), ("hidden_dim", hidden_dim), ("embedding_dim", embedding_dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.n_features = n_features
        self.hidden_dim = hidden_dim
        self.embedding_dim = embedding_dim
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, embedding_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
