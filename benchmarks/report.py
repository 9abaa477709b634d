"""Rendering benchmark results: markdown tables, the JSON record, and rolling-accuracy plots."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.evaluation import RunResult, rolling_accuracy

__all__ = ["markdown_table", "plot_stream", "write_json"]


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table (floats < 10 with 3 decimals, larger ones as integers).

    >>> print(markdown_table(["model", "acc"], [["knn", 0.91234], ["x", float("nan")]]))
    | model | acc |
    |---|---|
    | knn | 0.912 |
    | x | – |
    """
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(record: dict, path: Path) -> None:
    """Write ``record`` as indented JSON (NaN/inf become null, numpy scalars plain numbers)."""
    path.write_text(json.dumps(_jsonable(record), indent=2) + "\n", encoding="utf-8")


def plot_stream(
    title: str,
    runs: Sequence[RunResult],
    switches: Sequence[int],
    path: Path,
    *,
    window: int = 200,
    transition: int = 0,
    highlight: str = "streamlearn",
) -> None:
    """Rolling accuracy of every model over time, with true switches and the highlighted model's drifts.

    True switches are grey dashed lines (shaded over ``transition`` samples for
    gradual drift); the highlighted model's detections are red ticks along the top.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=110)
    for run in runs:
        strong = run.model == highlight
        ax.plot(
            rolling_accuracy(run.correct, window),
            label=run.model,
            linewidth=2.2 if strong else 1.0,
            color="black" if strong else None,
            alpha=1.0 if strong else 0.8,
            zorder=3 if strong else 2,
        )
    for i, s in enumerate(switches):
        ax.axvline(s, color="grey", linestyle="--", linewidth=1, label="true switch" if i == 0 else None)
        if transition:
            ax.axvspan(s - transition / 2, s + transition / 2, color="grey", alpha=0.08, linewidth=0)
    detected = next((r.drifts for r in runs if r.model == highlight), [])
    for i, s in enumerate(detected):
        ax.axvline(s, ymin=0.9, ymax=1.0, color="red", linewidth=1.5, label=f"{highlight} drift" if i == 0 else None)
    ax.set_xlabel("sample")
    ax.set_ylabel(f"accuracy (rolling {window})")
    ax.set_ylim(0, 1.1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
