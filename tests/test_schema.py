"""Sample decoding (every rejection reason, accepted shapes) and output encodings."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlearn.errors import SchemaError
from streamlearn.schema import (
    MAX_FEATURES,
    MAX_INFERRED_FEATURES,
    REJECTION_REASONS,
    DeadLetter,
    EmbeddingRecord,
    Sample,
    decode_sample,
    encode_floats,
    peek_id,
)


def decode(raw: bytes | str, n_features: int | None = 3, max_bytes: int = 10_000) -> Sample:
    data = raw.encode() if isinstance(raw, str) else raw
    return decode_sample(data, default_id="line-1", n_features=n_features, max_bytes=max_bytes)


REJECTED = [
    (b'{"features": [1, 2, 3]}' + b" " * 1000, "too_large"),
    ("{not json", "not_json"),
    ("", "not_json"),
    (b"\xff\xfe\x00", "not_json"),
    ("[1, 2, 3]", "not_object"),
    ('"features"', "not_object"),
    ("null", "not_object"),
    ('{"label": "a"}', "missing_features"),
    ('{"features": null}', "missing_features"),
    ('{"features": "1,2,3"}', "invalid_features"),
    ('{"features": {"x": 1}}', "invalid_features"),
    ('{"features": []}', "invalid_features"),
    ('{"features": [1, "2", 3]}', "invalid_features"),
    ('{"features": [1, true, 3]}', "invalid_features"),
    ('{"features": [1, null, 3]}', "invalid_features"),
    ('{"features": [1, [2], 3]}', "invalid_features"),
    ('{"features": [1, NaN, 3]}', "non_finite"),
    ('{"features": [1, Infinity, 3]}', "non_finite"),
    ('{"features": [1, -Infinity, 3]}', "non_finite"),
    ('{"features": [1, 1e400, 3]}', "non_finite"),
    ('{"features": [1, 1e39, 3]}', "non_finite"),  # finite in float64, not in float32
    ('{"features": [1, 1' + "0" * 400 + ", 3]}", "non_finite"),
    ('{"features": [1, 2]}', "wrong_dimension"),
    ('{"features": [1, 2, 3, 4]}', "wrong_dimension"),
    ('{"features": [1, 2, 3], "label": true}', "invalid_label"),
    ('{"features": [1, 2, 3], "label": 1.5}', "invalid_label"),
    ('{"features": [1, 2, 3], "label": ["a"]}', "invalid_label"),
    ('{"features": [1, 2, 3], "label": {}}', "invalid_label"),
    ('{"features": [1, 2, 3], "label": ""}', "invalid_label"),
    ('{"features": [1, 2, 3], "id": 7}', "invalid_field"),
    ('{"features": [1, 2, 3], "task": 1}', "invalid_field"),
    ('{"features": [1, 2, 3], "ts": "2024-01-01"}', "invalid_field"),
    ('{"features": [1, 2, 3], "ts": true}', "invalid_field"),
    ('{"features": [1, 2, 3], "ts": NaN}', "invalid_field"),
    # Valid JSON, but half a surrogate pair is not text: it cannot be written out as UTF-8 again.
    ('{"features": [1, 2, 3], "label": "\\ud800"}', "invalid_label"),
    ('{"features": [1, 2, 3], "id": "x\\udc00"}', "invalid_field"),
    ('{"features": [1, 2, 3], "task": "\\ud83d"}', "invalid_field"),
]


def test_a_whole_surrogate_pair_is_text_and_round_trips() -> None:
    sample = decode('{"features": [1, 2, 3], "label": "smile \\ud83d\\ude00", "id": "\\u00e9"}')
    assert sample.label == "smile \U0001f600" and sample.id == "\u00e9"
    assert decode(sample.to_json()).label == sample.label


@pytest.mark.parametrize(("raw", "reason"), REJECTED)
def test_rejections_carry_the_machine_readable_reason(raw: bytes | str, reason: str) -> None:
    with pytest.raises(SchemaError) as info:
        decode(raw, max_bytes=1000)
    assert info.value.reason == reason
    assert info.value.detail  # a human-readable explanation comes with it


def test_every_declared_reason_is_exercised() -> None:
    assert set(REJECTION_REASONS) == {reason for _, reason in REJECTED}
    assert len(REJECTION_REASONS) == 9


def test_size_is_checked_before_parsing() -> None:
    # Over the limit *and* not JSON: the size wins, so huge garbage is never parsed.
    with pytest.raises(SchemaError) as info:
        decode(b"x" * 101, max_bytes=100)
    assert info.value.reason == "too_large"
    assert decode(b'{"features":[1,2,3]}', max_bytes=20).features.shape == (3,)  # exactly at the limit


def test_minimal_sample_uses_defaults() -> None:
    sample = decode('{"features": [1, 2.5, -3]}')
    assert sample.id == "line-1"
    assert sample.features.dtype == np.float32
    assert sample.features.tolist() == [1.0, 2.5, -3.0]
    assert (sample.label, sample.task, sample.ts) == (None, None, None)


def test_full_sample_keeps_label_types_and_ignores_unknown_keys() -> None:
    s = decode('{"id": "x1", "features": [0, 0, 1], "label": 4, "task": "t", "ts": 1700000000, "extra": [1]}')
    assert (s.id, s.label, s.task, s.ts) == ("x1", 4, "t", 1700000000.0)
    assert isinstance(s.label, int)
    assert decode('{"features": [0, 0, 1], "label": "4"}').label == "4"


def test_nulls_mean_absent() -> None:
    s = decode('{"id": null, "features": [1, 2, 3], "label": null, "task": null, "ts": null}')
    assert (s.id, s.label, s.task, s.ts) == ("line-1", None, None, None)


def test_dimension_is_free_when_not_fixed() -> None:
    assert decode('{"features": [1]}', n_features=None).features.shape == (1,)
    assert decode('{"features": [1, 2, 3, 4, 5]}', n_features=None).features.shape == (5,)


def test_a_free_dimension_is_bounded_and_a_configured_one_may_be_wider() -> None:
    # With no configured dimension the first valid sample sizes the model: one huge record must not.
    def row(n: int) -> bytes:
        return json.dumps({"features": [0] * n}).encode()

    assert decode(row(MAX_INFERRED_FEATURES), n_features=None, max_bytes=10**7).features.shape == (MAX_INFERRED_FEATURES,)
    with pytest.raises(SchemaError) as info:
        decode(row(MAX_INFERRED_FEATURES + 1), n_features=None, max_bytes=10**7)
    assert info.value.reason == "too_large" and "learner.n_features" in info.value.detail
    assert decode(row(MAX_FEATURES), n_features=MAX_FEATURES, max_bytes=10**7).features.shape == (MAX_FEATURES,)
    # A known dimension is the only check then: a model fixed wider before these bounds still takes its samples.
    assert decode(row(MAX_FEATURES + 1), n_features=MAX_FEATURES + 1, max_bytes=10**7).features.shape[0] > MAX_FEATURES


def test_features_are_read_only() -> None:
    with pytest.raises(ValueError):
        decode('{"features": [1, 2, 3]}').features[0] = 5.0


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_finite_float32_features_round_trip(data: st.DataObject) -> None:
    dim = data.draw(st.integers(min_value=1, max_value=32), label="dim")
    values = data.draw(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32),
                                min_size=dim, max_size=dim), label="values")
    raw = json.dumps({"features": values, "label": "k"}).encode()
    sample = decode_sample(raw, default_id="1", n_features=dim, max_bytes=1_000_000)
    assert sample.features.tolist() == values
    # And through our own encoder, which writes float32's shortest decimals.
    again = decode_sample(sample.to_json(), default_id="2", n_features=dim, max_bytes=1_000_000)
    assert again.features.tolist() == values and again.id == "1" and again.label == "k"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=64))
def test_encode_floats_round_trips_float32_exactly(values: list[float]) -> None:
    decoded = json.loads(encode_floats(values))
    assert np.array(decoded, dtype=np.float32).tolist() == np.array(values, dtype=np.float32).tolist()


def test_embedding_record_json() -> None:
    record = EmbeddingRecord("id-1", np.array([0.1, -2, 3.5], dtype=np.float32), 2, "b", 7, True, None)
    raw = record.to_json()
    assert b" " not in raw  # compact
    body = json.loads(raw)
    assert body == {"id": "id-1", "embedding": [0.1, -2.0, 3.5], "prediction": 2, "label": "b",
                    "model_version": 7, "drift": True, "ts": None}
    assert list(body) == ["id", "embedding", "prediction", "label", "model_version", "drift", "ts"]


def test_embedding_record_refuses_non_finite_embeddings() -> None:
    with pytest.raises(ValueError):
        EmbeddingRecord("x", np.array([np.nan], dtype=np.float32), None, None, 1, False, None).to_json()


def test_dead_letter_json_keeps_the_original_bytes() -> None:
    raw = b'{"features": [1, \xff'
    body = json.loads(DeadLetter("not_json", "bad byte", "streamlearn.samples", 3, 41, raw).to_json())
    assert base64.b64decode(body.pop("raw")) == raw
    assert body == {"reason": "not_json", "detail": "bad byte", "topic": "streamlearn.samples",
                    "partition": 3, "offset": 41}


def test_peek_id_finds_the_callers_id_in_rejected_records() -> None:
    assert peek_id(b'{"id": "mine", "features": "nope"}', 1000) == "mine"
    assert peek_id(b'{"id": 5}', 1000) is None
    assert peek_id(b'{"id": "mine"}', 5) is None  # too large to look into
    assert peek_id(b"not json", 1000) is None
