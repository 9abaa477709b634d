"""The feature extractor: a small MLP that maps standardised features to an embedding."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Encoder"]


class Encoder(nn.Module):
    """Two hidden layers with LayerNorm, plus a linear path from the input straight to the embedding.

    LayerNorm keeps activations on one scale whatever the input, which matters when the
    encoder is updated online with few samples and a learning rate raised after a drift.

    The linear path starts as a random orthogonal map: at first the embedding keeps the
    geometry of the standardised input (distances are not scrambled by the random hidden
    layers), so a class the encoder has never been trained on is still told apart from one
    example, and the MLP learns what to add to it. It is trained with the rest.

    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> Encoder(8, hidden_dim=16, embedding_dim=4)(torch.zeros(3, 8)).shape
    torch.Size([3, 4])
    """

    def __init__(self, n_features: int, hidden_dim: int = 256, embedding_dim: int = 64, skip_scale: float = 1.0):
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
        self.skip = nn.Linear(n_features, embedding_dim, bias=False)
        with torch.no_grad():
            nn.init.orthogonal_(self.skip.weight)
            self.skip.weight.mul_(skip_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + self.skip(x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # A model saved before the linear path had none: a zero map makes it predict as it did.
        key = prefix + "skip.weight"
        if prefix + "net.0.weight" in state_dict and key not in state_dict:
            state_dict[key] = torch.zeros_like(self.skip.weight)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
