"""Drifting streams from river's synthetic generators (RandomRBF, LED), as Sample dicts.

Concepts cycle ``0, 1, ..., n_concepts-1, 0, ...`` one per ``segment``
samples, so they recur; a recurring concept continues its own generator, so
it brings fresh samples of the same concept. Drift kinds:

- ``"abrupt"``: the concept changes exactly at multiples of ``segment``.
  (Switched here rather than by ``ConceptDriftStream(width=1)``, whose sigmoid
  overflows ``math.exp`` for small widths far from the drift position.)
- ``"gradual"``: river's ``ConceptDriftStream`` chained once per switch; around
  each switch point samples come from the old or new concept with a sigmoid
  probability over ``width`` samples.
- ``"incremental"`` (RBF only): one ``RandomRBFDrift`` whose centroids move
  continuously; there are no switch points.

Features become a list in sorted key order; labels are river's ints, or
``"c<int>"`` with ``label_format="str"``. ``task`` names the concept that
actually produced the sample.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from river.datasets import base as river_base
from river.datasets import synth as river_synth

from streamlearn.streams.base import SampleDict, check_positive, format_label

__all__ = ["DRIFT_KINDS", "led_stream", "rbf_stream", "river_switch_points"]

DRIFT_KINDS = ("abrupt", "gradual", "incremental")


class _Concept(river_base.SyntheticDataset):
    """One concept's generator, iterated once: a recurring concept continues where it stopped.

    ``y`` carries ``(label, concept name)`` through ``ConceptDriftStream``, so
    each sample knows which concept produced it.
    """

    def __init__(self, dataset: river_base.SyntheticDataset, name: str) -> None:
        super().__init__(
            task=dataset.task, n_features=dataset.n_features, n_classes=dataset.n_classes, n_outputs=dataset.n_outputs
        )
        self.name = name
        self._iterator = ((x, (y, name)) for x, y in dataset)

    def __iter__(self) -> Iterator:
        return self._iterator


def river_switch_points(n: int, segment: int, drift: str) -> list[int]:
    """Sample indices of the (centres of the) concept switches of a river stream.

    >>> river_switch_points(10000, 2500, "gradual"), river_switch_points(10000, 2500, "incremental")
    ([2500, 5000, 7500], [])
    """
    return [] if drift == "incremental" else list(range(segment, n, segment))


def _switching(concepts: list[_Concept], n: int, segment: int, drift: str, width: int, seed: int) -> Iterator:
    n_segments = max(1, -(-n // segment))
    order = [concepts[j % len(concepts)] for j in range(n_segments)]
    if drift == "abrupt":
        return itertools.chain.from_iterable(itertools.islice(it, segment) for it in order)
    # Nested ConceptDriftStream: the inner stream starts being drawn around the
    # outer switch, so a relative position of `segment` lands at the next multiple.
    stream: river_base.SyntheticDataset = order[-1]
    for j in range(n_segments - 2, -1, -1):
        stream = river_synth.ConceptDriftStream(
            stream=order[j], drift_stream=stream, position=segment, width=width, seed=seed * 1000 + j
        )
    return iter(stream)


def _emit(pairs: Iterator, n: int, label_format: str, id_prefix: str) -> Iterator[SampleDict]:
    keys: list | None = None
    for i, (x, (y, name)) in enumerate(itertools.islice(pairs, n)):
        if keys is None:
            keys = sorted(x)
        yield {
            "id": f"{id_prefix}-{i:06d}",
            "features": [float(x[k]) for k in keys],
            "label": format_label(int(y), label_format),
            "task": name,
        }


def _check(n: int, segment: int, width: int, n_concepts: int, drift: str, allowed: tuple[str, ...]) -> None:
    check_positive("n", n, allow_zero=True)
    check_positive("segment", segment)
    check_positive("width", width)
    check_positive("n_concepts", n_concepts)
    if drift not in allowed:
        raise ValueError(f"drift must be one of {allowed}, got {drift!r}")
    if drift == "gradual" and 4 * segment / width > 700:
        raise ValueError(f"width must be at least segment/175 for river's sigmoid, got {width}")


def rbf_stream(
    n: int = 10000,
    seed: int = 0,
    drift: str = "abrupt",
    *,
    n_concepts: int = 3,
    segment: int = 2500,
    width: int = 1000,
    n_classes: int = 5,
    n_features: int = 10,
    n_centroids: int = 50,
    change_speed: float = 0.001,
    label_format: str = "int",
) -> Iterator[SampleDict]:
    """Yield a RandomRBF stream whose concept (set of centroids) drifts; see the module doc.

    >>> s = list(rbf_stream(6, seed=1, segment=3, label_format="str"))
    >>> [(x["label"], x["task"]) for x in s]
    [('c3', 'rbf-0'), ('c2', 'rbf-0'), ('c3', 'rbf-0'), ('c1', 'rbf-1'), ('c4', 'rbf-1'), ('c3', 'rbf-1')]
    >>> len(s[0]["features"])
    10
    """
    _check(n, segment, width, n_concepts, drift, DRIFT_KINDS)
    base = 10_000 * seed
    kw = {"n_classes": n_classes, "n_features": n_features, "n_centroids": n_centroids}
    if drift == "incremental":
        gen = river_synth.RandomRBFDrift(
            seed_model=base, seed_sample=base + 1, change_speed=change_speed, n_drift_centroids=n_centroids, **kw
        )
        return _emit(iter(_Concept(gen, "rbf-incremental")), n, label_format, "rbf")
    concepts = [
        _Concept(river_synth.RandomRBF(seed_model=base + k, seed_sample=base + 5000 + k, **kw), f"rbf-{k}")
        for k in range(n_concepts)
    ]
    return _emit(_switching(concepts, n, segment, drift, width, seed), n, label_format, "rbf")


def led_stream(
    n: int = 10000,
    seed: int = 0,
    drift: str = "abrupt",
    *,
    n_concepts: int = 3,
    segment: int = 2500,
    width: int = 1000,
    noise: float = 0.1,
    label_format: str = "int",
) -> Iterator[SampleDict]:
    """Yield an LED stream (24 binary features, 10 digits) whose relevant segments move.

    Concept 0 is plain LED; concept k > 0 is ``LEDDrift`` with all 7 relevant
    attributes swapped into seeded positions among the 17 irrelevant ones.

    >>> s = list(led_stream(4, seed=0, segment=2))
    >>> [(x["label"], x["task"]) for x in s], len(s[0]["features"])
    ([(6, 'led-0'), (5, 'led-0'), (4, 'led-1'), (7, 'led-1')], 24)
    """
    _check(n, segment, width, n_concepts, drift, ("abrupt", "gradual"))
    concepts = [
        _Concept(
            river_synth.LEDDrift(
                seed=10_000 * seed + k,
                noise_percentage=noise,
                irrelevant_features=True,
                n_drift_features=0 if k == 0 else 7,
            ),
            f"led-{k}",
        )
        for k in range(n_concepts)
    ]
    return _emit(_switching(concepts, n, segment, drift, width, seed), n, label_format, "led")
