"""Shared fixtures: a clean STREAMLEARN_* environment, one torch thread, small synthetic JSONL streams."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from streamlearn.config import Settings

N_FEATURES = 8
CLASSES = ("a", "b", 2)  # labels keep their JSON type: two strings and an integer


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the STREAMLEARN_* variables they set themselves."""
    for name in list(os.environ):
        if name.startswith("STREAMLEARN_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """The test machine's cores are shared; torch must not grab them all."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)


def blob_rows(n: int = 300, seed: int = 0, unlabeled_every: int = 10) -> list[dict[str, Any]]:
    """Well-separated Gaussian blobs, one per class, as Sample dicts (every k-th unlabeled)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(len(CLASSES), N_FEATURES))
    rows = []
    for i in range(n):
        k = int(rng.integers(len(CLASSES)))
        features = (centers[k] + rng.normal(size=N_FEATURES)).round(4).tolist()
        row: dict[str, Any] = {"features": features}
        if i % unlabeled_every != unlabeled_every - 1:
            row["label"] = CLASSES[k]
        if i % 3 == 0:
            row["id"] = f"s{i}"
        rows.append(row)
    return rows


# Invalid lines mixed into the stream: (raw line, expected rejection reason).
INVALID_LINES: tuple[tuple[str, str], ...] = (
    ("this is not json", "not_json"),
    ("[1, 2, 3]", "not_object"),
    ('{"label": "a"}', "missing_features"),
    ('{"id": "bad-dim", "features": [1, 2, 3]}', "wrong_dimension"),
    ('{"features": [1, 2, 3, 4, 5, 6, 7, NaN]}', "non_finite"),
    ('{"features": [1, 2, 3, 4, 5, 6, 7, 8], "label": true}', "invalid_label"),
    ("", "not_json"),
)


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[[list[str], str], Path]:
    """Write raw lines to a JSONL file under tmp_path and return its path."""

    def write(lines: list[str], name: str = "input.jsonl") -> Path:
        path = tmp_path / name
        path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        return path

    return write


@pytest.fixture
def stream_lines() -> list[str]:
    """300 valid blob samples with the INVALID_LINES spread through them (from line 20 on)."""
    lines = [json.dumps(row) for row in blob_rows()]
    for k, (raw, _) in enumerate(INVALID_LINES):
        lines.insert(20 + 37 * k, raw)
    return lines


@pytest.fixture
def small_settings() -> Settings:
    """Settings with a small, fast learner (the test data has 8 features)."""
    return Settings(learner={"hidden_dim": 32, "embedding_dim": 8, "batch_size": 32, "meta_every": 16})


@pytest.fixture
def small_config(tmp_path: Path) -> Path:
    """The same small learner as a YAML config file, for the command line."""
    path = tmp_path / "small.yaml"
    path.write_text("learner:\n  hidden_dim: 32\n  embedding_dim: 8\n  batch_size: 32\n  meta_every: 16\n")
    return path
