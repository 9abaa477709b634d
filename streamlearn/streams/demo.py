"""The demo stream used by `make demo` and `streamlearn produce --demo`."""

from __future__ import annotations

from collections.abc import Iterator

from streamlearn.streams.base import SampleDict
from streamlearn.streams.digits import digits_permutations

__all__ = ["DEMO_SEGMENT", "DEMO_SIZE", "demo_stream"]

DEMO_SIZE = 6000
DEMO_SEGMENT = 1000


def demo_stream(n: int = DEMO_SIZE, seed: int = 0) -> Iterator[SampleDict]:
    """Yield the demo: raw digits alternating every 1000 samples between two recurring concepts.

    Concept 0 is plain digits, concept 1 permutes both pixels and labels; about
    5% of the samples are unlabeled (``label: None``).

    >>> s = list(demo_stream())
    >>> len(s), sorted({x["task"] for x in s}), round(sum(x["label"] is None for x in s) / len(s), 2)
    (6000, ['c0-identity', 'c1-both'], 0.05)
    """
    return digits_permutations(
        n, seed, n_concepts=2, segment=DEMO_SEGMENT, mode="both", unlabeled=0.05, id_prefix="demo"
    )
