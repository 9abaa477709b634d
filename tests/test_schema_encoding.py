"""Oracle tests for the fast paths of streamlearn.schema: same bytes and same errors as the plain-json reference."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from streamlearn.errors import SchemaError
from streamlearn.schema import DeadLetter, EmbeddingRecord, Sample, decode_sample


def reference_record_json(r: EmbeddingRecord) -> bytes:
    """The obvious encoding: one json.dumps per field, embedding as float32 shortest decimals."""
    def dumps(value: object) -> str:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)

    floats = "[" + ",".join(map(str, np.asarray(r.embedding, dtype=np.float32).reshape(-1))) + "]"
    fields = [("id", dumps(r.id)), ("embedding", floats), ("prediction", dumps(r.prediction)),
              ("label", dumps(r.label)), ("model_version", dumps(int(r.model_version))),
              ("drift", dumps(bool(r.drift))), ("ts", dumps(r.ts))]
    return ("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields) + "}").encode("utf-8")


def reference_features(values: object) -> tuple[str, np.ndarray | None]:
    """Element-by-element validation (the definition of a valid features array): ('ok', array) or (reason, None)."""
    if not isinstance(values, list) or not values:
        return "invalid_features", None
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        return "invalid_features", None
    try:
        with np.errstate(over="ignore"):
            array = np.array([float(v) for v in values], dtype=np.float64).astype(np.float32)
    except OverflowError:
        return "non_finite", None
    if not np.isfinite(array).all():
        return "non_finite", None
    return "ok", array


labels = st.one_of(st.none(), st.integers(-(2**70), 2**70), st.text(min_size=1, max_size=8))
records = st.builds(
    EmbeddingRecord,
    id=st.text(max_size=12),  # any unicode, control characters and quotes included
    embedding=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), max_size=24)
    .map(lambda v: np.array(v, dtype=np.float32)),
    prediction=labels,
    label=labels,
    model_version=st.integers(0, 2**40),
    drift=st.booleans(),
    ts=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers(0, 2**40)),
)


@settings(max_examples=200, deadline=None)
@given(records)
def test_embedding_record_equals_the_reference(record: EmbeddingRecord) -> None:
    # Same JSON document, keys in the same order (float spelling may differ: 1e-08 vs 1e-8).
    fast, reference = json.loads(record.to_json()), json.loads(reference_record_json(record))
    assert list(fast.items()) == list(reference.items())
    # Every embedding value reads back as exactly the float32 that was written.
    assert np.array_equal(np.array(fast["embedding"], dtype=np.float32), np.asarray(record.embedding, np.float32))


def test_embedding_record_errors_match_json() -> None:
    with pytest.raises(ValueError):  # json.dumps(allow_nan=False) raises ValueError for NaN
        EmbeddingRecord("a", np.zeros(2, np.float32), None, None, 1, False, math.nan).to_json()
    with pytest.raises(TypeError):  # and TypeError for what JSON cannot hold
        EmbeddingRecord("a", np.zeros(2, np.float32), object(), None, 1, False, None).to_json()


def test_sample_and_dead_letter_encodings_are_unchanged() -> None:
    sample = Sample("ü\"x", np.array([1, 0.1], np.float32), label="é", task="t\n", ts=2.5)
    assert sample.to_json() == '{"id":"ü\\"x","features":[1.0,0.1],"label":"é","task":"t\\n","ts":2.5}'.encode()
    letter = DeadLetter("not_json", "bad \"quote\"", None, None, None, b"\x00")
    assert json.loads(letter.to_json()) == {"reason": "not_json", "detail": 'bad "quote"', "topic": None,
                                            "partition": None, "offset": None, "raw": "AA=="}


feature_values = st.one_of(
    st.integers(-(2**200), 2**200), st.floats(width=64), st.floats(width=32), st.booleans(), st.none(),
    st.text(max_size=3), st.lists(st.integers(), max_size=2), st.just(10**400),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(feature_values, min_size=1, max_size=12))
def test_decoded_features_agree_with_elementwise_validation(values: list) -> None:
    raw = json.dumps({"features": values}).encode()  # NaN/Infinity go through as json writes them
    expected_reason, expected = reference_features(json.loads(raw)["features"])
    try:
        sample = decode_sample(raw, default_id="x", n_features=None, max_bytes=10**6)
    except SchemaError as exc:
        assert exc.reason == expected_reason
        assert exc.detail.startswith(("features[", "features contain"))
        return
    assert expected_reason == "ok"
    assert sample.features.dtype == np.float32 and not sample.features.flags.writeable
    assert np.array_equal(sample.features, expected)


def test_first_bad_feature_is_named() -> None:
    for raw, detail in [(b'{"features": [1, 2, true, "x"]}', "features[2] is bool, not a number"),
                        (b'{"features": [1, 1e39, NaN]}', "features[1] is 1e+39, not a finite float32"),
                        (b'{"features": [1, 2, -Infinity]}', "features[2] is -inf, not a finite float32")]:
        with pytest.raises(SchemaError) as info:
            decode_sample(raw, default_id="x", n_features=None, max_bytes=1000)
        assert info.value.detail == detail


samples = st.fixed_dictionaries(
    {"features": st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=4)},
    optional={"id": st.text(max_size=6), "label": labels, "task": st.text(max_size=4),
              "ts": st.floats(0, 2e9), "extra": st.lists(st.integers(-(2**80), 2**80), max_size=2)},
)


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(samples, st.booleans())
@example({"features": [0.0], "label": -(2**63) - 1}, False)  # orjson would read it as a float
@example({"features": [0.0], "id": "\ud800", "label": 2**64}, False)
@example({"features": [0.0], "id": "a", "label": 2**64}, False)
def test_decoded_sample_agrees_with_python_json(body: dict, ascii_only: bool) -> None:
    # The fast parser (orjson) and Python's json, which takes what orjson refuses (lone surrogates,
    # integers beyond 64 bits), must make the same Sample of the same bytes; a string holding half
    # a surrogate pair is no text and is refused, whichever parser read it.
    raw = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if any(isinstance(body.get(k), str) and not _is_text(body[k]) for k in ("id", "label", "task")):
        with pytest.raises(SchemaError) as info:
            decode_sample(raw, default_id="d", n_features=None, max_bytes=10**6)
        assert info.value.reason in ("invalid_field", "invalid_label") and "surrogate" in info.value.detail
        return
    sample = decode_sample(raw, default_id="d", n_features=None, max_bytes=10**6)
    parsed = json.loads(raw)
    assert (sample.id, sample.label, sample.task) == (parsed.get("id", "d"), parsed.get("label"), parsed.get("task"))
    assert sample.ts == (None if "ts" not in parsed else float(parsed["ts"]))
    assert np.array_equal(sample.features, np.array(parsed["features"], dtype=np.float32))
