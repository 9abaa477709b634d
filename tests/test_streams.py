"""Built-in stream generators: determinism, recurring concepts, and the Sample contract."""

from __future__ import annotations

import json
import logging
import math
from itertools import islice

import numpy as np
import pytest

from streamlearn.schema import decode_sample
from streamlearn.streams import (
    class_stream,
    demo_stream,
    digits_arrays,
    digits_concepts,
    digits_novel_split,
    digits_permutations,
    led_stream,
    novel_class_split,
    rbf_stream,
    synthetic_classes,
    write_jsonl,
)
from streamlearn.streams.__main__ import main as streams_main

GENERATORS = {
    "digits": (lambda seed, fmt="int": digits_permutations(300, seed, segment=50, label_format=fmt), 64),
    "rbf_abrupt": (lambda seed, fmt="int": rbf_stream(300, seed, "abrupt", segment=100, label_format=fmt), 10),
    "rbf_gradual": (
        lambda seed, fmt="int": rbf_stream(300, seed, "gradual", segment=100, width=20, label_format=fmt),
        10,
    ),
    "rbf_incremental": (lambda seed, fmt="int": rbf_stream(300, seed, "incremental", label_format=fmt), 10),
    "led_abrupt": (lambda seed, fmt="int": led_stream(300, seed, "abrupt", segment=100, label_format=fmt), 24),
    "led_gradual": (
        lambda seed, fmt="int": led_stream(300, seed, "gradual", segment=100, width=20, label_format=fmt),
        24,
    ),
    "fewshot": (
        lambda seed, fmt="int": class_stream(*synthetic_classes(10, 20, seed), 300, seed, label_format=fmt),
        64,
    ),
}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_same_seed_same_samples_other_seed_differs(name: str) -> None:
    make, _ = GENERATORS[name]
    first, again, other = list(make(1)), list(make(1)), list(make(2))
    assert len(first) == 300
    assert first == again
    assert [s["features"] for s in first] != [s["features"] for s in other]


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_samples_satisfy_the_wire_contract(name: str) -> None:
    make, dim = GENERATORS[name]
    samples = list(make(0))
    assert len({s["id"] for s in samples}) == len(samples)
    for i, s in enumerate(samples):
        assert set(s) == {"id", "features", "label", "task"}
        assert len(s["features"]) == dim and all(math.isfinite(v) for v in s["features"])
        assert isinstance(s["label"], int) and not isinstance(s["label"], bool)
        assert s["task"] is None or isinstance(s["task"], str)
        # The real decoder accepts what we write, unchanged.
        decoded = decode_sample(json.dumps(s).encode(), default_id=str(i), n_features=dim, max_bytes=100_000)
        assert decoded.id == s["id"] and decoded.label == s["label"]
        assert np.array_equal(decoded.features, np.asarray(s["features"], dtype=np.float32))


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_string_label_variant_gives_c_prefixed_strings(name: str) -> None:
    make, _ = GENERATORS[name]
    as_int, as_str = list(make(3)), list(make(3, "str"))
    assert [s["label"] for s in as_str] == [f"c{s['label']}" for s in as_int]
    assert [s["features"] for s in as_str] == [s["features"] for s in as_int]


def test_digits_features_stay_raw_pixels() -> None:
    X = np.array([s["features"] for s in digits_permutations(500, 0, segment=100)])
    assert X.min() == 0.0 and X.max() == 16.0
    assert np.array_equal(X, X.round())


def _source_rows() -> dict[bytes, set[int]]:
    X, y = digits_arrays()
    rows: dict[bytes, set[int]] = {}
    for features, label in zip(X, y, strict=True):
        rows.setdefault(features.tobytes(), set()).add(int(label))
    return rows


def test_permutation_concepts_recur_with_the_same_mapping() -> None:
    concepts = digits_concepts(3, seed=4)
    rows = _source_rows()
    samples = list(digits_permutations(1200, 4, n_concepts=3, segment=200))
    tasks = [s["task"] for s in samples]
    # Segments 0..5 cycle c0, c1, c2, c0, c1, c2.
    assert [tasks[k * 200] for k in range(6)] == [c.name for c in concepts] * 2
    for s in samples:
        concept = next(c for c in concepts if c.name == s["task"])
        inverse = np.argsort(concept.pixel_perm)
        original = np.asarray(s["features"], dtype=np.float32)[inverse]
        # Undoing this concept's permutation always lands on a real digit with a consistent label.
        source_labels = rows[original.tobytes()]
        assert s["label"] in {int(concept.label_perm[y]) for y in source_labels}


def test_non_identity_concepts_really_move_pixels_or_labels() -> None:
    identity, pixels, labels, both = digits_concepts(4, seed=0)
    assert np.array_equal(identity.pixel_perm, np.arange(64)) and np.array_equal(identity.label_perm, np.arange(10))
    assert np.all(pixels.pixel_perm != np.arange(64)) and np.array_equal(pixels.label_perm, np.arange(10))
    assert np.array_equal(labels.pixel_perm, np.arange(64)) and np.all(labels.label_perm != np.arange(10))
    assert np.all(both.pixel_perm != np.arange(64)) and np.all(both.label_perm != np.arange(10))


@pytest.mark.parametrize("make", [rbf_stream, led_stream])
def test_river_concepts_recur_abruptly(make) -> None:
    tasks = [s["task"] for s in make(500, 0, "abrupt", n_concepts=2, segment=100)]
    expected = [f"{tasks[0][:3]}-{(i // 100) % 2}" for i in range(500)]
    assert tasks == expected


def test_gradual_drift_mixes_concepts_only_near_the_switch() -> None:
    tasks = [s["task"] for s in rbf_stream(2000, 0, "gradual", n_concepts=2, segment=1000, width=200)]
    assert set(tasks[:500]) == {"rbf-0"} and set(tasks[1500:]) == {"rbf-1"}
    assert set(tasks[900:1100]) == {"rbf-0", "rbf-1"}


def test_unlabeled_fraction_is_respected() -> None:
    labels = [s["label"] for s in digits_permutations(2000, 0, unlabeled=0.1)]
    assert 0.07 < sum(label is None for label in labels) / len(labels) < 0.13


def test_novel_split_keeps_unseen_classes_out_of_training() -> None:
    split = digits_novel_split()
    assert not set(split.seen_classes) & set(split.unseen_classes)
    assert split.seen_classes == [0, 1, 2, 3, 4]
    seen = {s["label"] for s in class_stream(split.seen_X, split.seen_y, 500, 0)}
    assert seen <= set(split.seen_classes)


def test_synthetic_classes_are_learnable_and_split_cleanly() -> None:
    X, y = synthetic_classes(20, 30, seed=3)
    assert X.shape == (600, 64) and sorted(set(y.tolist())) == list(range(20))
    assert np.isfinite(X).all()
    # Classes carry signal: nearest class mean (standardized) is far above chance (5%).
    Z = (X - X.mean(0)) / X.std(0)
    means = np.stack([Z[y == c].mean(0) for c in range(20)])
    predicted = ((Z[:, None, :] - means[None]) ** 2).sum(2).argmin(1)
    assert (predicted == y).mean() > 0.3
    split = novel_class_split(X, y, unseen=range(15, 20))
    assert split.seen_classes == list(range(15)) and split.unseen_classes == list(range(15, 20))
    assert len(split.seen_X) + len(split.unseen_X) == len(X)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: list(digits_permutations(-1)), "n must be"),
        (lambda: list(digits_permutations(10, segment=0)), "segment must be"),
        (lambda: list(digits_permutations(10, unlabeled=2.0)), "unlabeled must be"),
        (lambda: list(digits_permutations(10, mode="rotate")), "mode must be"),
        (lambda: list(rbf_stream(10, drift="sideways")), "drift must be"),
        (lambda: list(led_stream(10, drift="incremental")), "drift must be"),
        (lambda: list(rbf_stream(10, label_format="float")), "label_format must be"),
    ],
)
def test_bad_arguments_name_the_problem(call, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        call()


def test_demo_stream_is_a_recurring_digits_stream() -> None:
    samples = list(islice(demo_stream(), 2500))
    assert [samples[i]["task"] for i in (0, 1000, 2000)] == ["c0-identity", "c1-both", "c0-identity"]
    assert any(s["label"] is None for s in samples)


def test_cli_writes_the_demo_stream(tmp_path) -> None:
    out = tmp_path / "demo.jsonl"
    assert streams_main([str(out), "--n", "25", "--seed", "1"]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 25
    assert [json.loads(line) for line in lines] == list(demo_stream(25, 1))


def test_cli_bad_usage_exits_2_with_one_line(tmp_path, caplog) -> None:
    with caplog.at_level(logging.ERROR):
        assert streams_main([str(tmp_path / "x.jsonl"), "--n", "-3"]) == 2
    assert len(caplog.records) == 1 and "non-negative" in caplog.records[0].getMessage()
    assert not (tmp_path / "x.jsonl").exists()


def test_cli_unwritable_path_exits_1(tmp_path) -> None:
    (tmp_path / "a-file").write_text("")
    assert streams_main([str(tmp_path / "a-file" / "x.jsonl"), "--n", "2"]) == 1


def test_cli_creates_a_missing_folder_as_the_readme_example_needs(tmp_path) -> None:
    """The README's first offline command writes build/demo.jsonl, and a fresh clone has no build/."""
    assert streams_main([str(tmp_path / "build" / "demo.jsonl"), "--n", "3"]) == 0
    assert len((tmp_path / "build" / "demo.jsonl").read_text().splitlines()) == 3


def test_write_jsonl_counts_and_round_trips(tmp_path) -> None:
    samples = list(led_stream(5, 0, label_format="str"))
    path = tmp_path / "s.jsonl"
    assert write_jsonl(iter(samples), path) == 5
    assert [json.loads(line) for line in path.read_text().splitlines()] == samples
