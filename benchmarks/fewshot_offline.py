"""How far training on digits 0-4 can carry few-shot accuracy on digits 5-9, with no stream at all.

Run by hand (never by the tests; ~1 min)::

    python -m benchmarks.fewshot_offline [--steps N] [--seed S]

A context figure for the B2 digits target of ``benchmarks/quality.py``: an
encoder trained offline, as long as we like, with the ProtoNet loss on 5-way
episodes of the seen digits, scored with the same paired 5-way episodes on
the unseen digits as B2. Two encoders: an MLP (64 -> 256 -> 256 -> 64, ReLU)
and a linear map (64 -> 64), both on pixels / 16. The untrained encoder is
step 0. If training on five classes made the embedding better for the other
five, the accuracy would rise with the steps.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # also allow `python benchmarks/fewshot_offline.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from benchmarks.evaluation import few_shot_accuracy
from streamlearn import streams
from streamlearn.model import protonet_loss

CHECKPOINTS = (0, 300, 1000, 3000)
WAYS, SHOTS, QUERIES = 5, 5, 5  # training episodes: all five seen digits, 5 support + 5 query each


def _encoders(n_features: int) -> dict[str, nn.Module]:
    return {
        "MLP 64-256-256-64": nn.Sequential(nn.Linear(n_features, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                           nn.Linear(256, 64)),
        "linear 64-64": nn.Linear(n_features, 64),
    }


def _episode(rng: np.random.Generator, by_class: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of one training episode (support rows first) and their episode labels."""
    picks = [rng.choice(rows, SHOTS + QUERIES, replace=False) for rows in by_class]
    support = np.concatenate([p[:SHOTS] for p in picks])
    query = np.concatenate([p[SHOTS:] for p in picks])
    labels = np.repeat(np.arange(len(by_class)), SHOTS)
    return np.concatenate([support, query]), np.concatenate([labels, np.repeat(np.arange(len(by_class)), QUERIES)])


def run(steps: int, seed: int, episodes: int = 300) -> dict[str, dict[int, tuple[float, float]]]:
    """1- and 5-shot accuracy (%) on the unseen digits after each of ``CHECKPOINTS`` up to ``steps``, per encoder."""
    split = streams.digits_novel_split()
    seen_X = torch.from_numpy((split.seen_X / 16.0).astype(np.float32))
    by_class = [np.flatnonzero(split.seen_y == c) for c in np.unique(split.seen_y)]
    unseen_X = (split.unseen_X / 16.0).astype(np.float32)
    results: dict[str, dict[int, tuple[float, float]]] = {}
    for name, encoder in _encoders(seen_X.shape[1]).items():
        torch.manual_seed(seed)
        for module in encoder.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        rng = np.random.default_rng(seed)
        optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-3)
        scores: dict[int, tuple[float, float]] = {}

        def embed(A: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return encoder(torch.from_numpy(A)).numpy()

        for step in range(steps + 1):
            if step in CHECKPOINTS or step == steps:
                scores[step] = tuple(  # type: ignore[assignment]
                    100 * few_shot_accuracy(embed, unseen_X, split.unseen_y, ways=5, shots=k, queries=15,
                                            episodes=episodes, seed=seed).mean
                    for k in (1, 5)
                )
            if step == steps:
                break
            rows, labels = _episode(rng, by_class)
            z = encoder(seen_X[rows])
            n_support = WAYS * SHOTS
            loss = protonet_loss(z[:n_support], torch.from_numpy(labels[:n_support]), z[n_support:],
                                 torch.from_numpy(labels[n_support:]), WAYS)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        results[name] = scores
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=CHECKPOINTS[-1], help="training steps (default 3000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = run(args.steps, args.seed)
    table = Table(title="Offline ProtoNet on digits 0-4, 5-way accuracy % on digits 5-9 (1-shot / 5-shot)")
    table.add_column("steps", justify="right")
    for name in results:
        table.add_column(name, justify="right")
    for step in sorted(next(iter(results.values()))):
        table.add_row(f"{step:,}", *(f"{s[step][0]:.1f} / {s[step][1]:.1f}" for s in results.values()))
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
