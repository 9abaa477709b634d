"""Wire formats: decoding input samples, and encoding embedding records and dead letters.

A record that cannot be used raises SchemaError with one of REJECTION_REASONS,
so it can be dead-lettered (or reported) with a machine-readable reason.

>>> s = decode_sample(b'{"features": [1, 2.5], "label": "cat"}', default_id="7", n_features=2, max_bytes=1000)
>>> s.id, s.features.tolist(), s.label, s.task, s.ts
('7', [1.0, 2.5], 'cat', None, None)
>>> decode_sample(b'{"features": [1, 2.5]}', default_id="7", n_features=3, max_bytes=1000)
Traceback (most recent call last):
...
streamlearn.errors.SchemaError: wrong_dimension: expected 3 features, got 2
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from json.encoder import encode_basestring as _json_string  # C speedup; same as json.dumps(s, ensure_ascii=False)
from typing import Any, Sequence, Union

import numpy as np
import orjson

from streamlearn.errors import SchemaError

__all__ = [
    "Label",
    "MAX_FEATURES",
    "MAX_INFERRED_FEATURES",
    "Sample",
    "EmbeddingRecord",
    "DeadLetter",
    "REJECTION_REASONS",
    "decode_sample",
    "encode_floats",
    "peek_id",
    "peek_label",
    "PROCESSING_ERROR",
]

Label = Union[str, int]

#: Most features a model takes (``learner.n_features`` at most this).
MAX_FEATURES = 100_000
#: Most features of a sample that fixes the dimension when ``learner.n_features`` is not configured.
#: The first valid sample sizes the encoder, and the memory behind it, for good: without this bound
#: one stray record of 300,000 zeros took a daemon to 4.5 GB. (100,000 features take a replay of
#: 300 samples to 2.9 GB; 10,000 stay under 1 GB.) Wider data needs the dimension configured.
MAX_INFERRED_FEATURES = 10_000

REJECTION_REASONS: tuple[str, ...] = (
    "too_large",
    "not_json",
    "not_object",
    "missing_features",
    "invalid_features",
    "non_finite",
    "wrong_dimension",
    "invalid_label",
    "invalid_field",
)

#: Dead-letter reason for valid samples of a batch the learner raised on (the daemon's, not a schema rejection).
PROCESSING_ERROR = "processing_error"


@dataclass(frozen=True, eq=False)
class Sample:
    """One validated input sample; `features` is a read-only float32 vector."""

    id: str
    features: np.ndarray
    label: Label | None = None
    task: str | None = None
    ts: float | None = None

    def to_json(self) -> bytes:
        """Encode as the JSON value producers put on the samples topic.

        >>> Sample("a", np.array([0.5, 1], dtype=np.float32), label=3).to_json()
        b'{"id":"a","features":[0.5,1.0],"label":3}'
        """
        body: dict[str, Any] = {"id": self.id, "features": _FloatList(self.features)}
        for key in ("label", "task", "ts"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        return _dumps(body)


@dataclass(frozen=True)
class EmbeddingRecord:
    """One output record on the embeddings topic; `prediction` was made before learning from the sample."""

    id: str
    embedding: Sequence[float] | np.ndarray
    prediction: Label | None
    label: Label | None
    model_version: int
    drift: bool
    ts: float | None

    def to_json(self) -> bytes:
        """Encode as compact JSON with the embedding as plain numbers.

        >>> EmbeddingRecord("a", np.array([0.25, -1], dtype=np.float32), None, "x", 3, False, 1.5).to_json()
        b'{"id":"a","embedding":[0.25,-1.0],"prediction":null,"label":"x","model_version":3,"drift":false,"ts":1.5}'
        """
        # One record per published sample: written in one f-string (no dict, no json.dumps per field).
        return (
            f'{{"id":{_scalar(self.id)},"embedding":{encode_floats(self.embedding)},'
            f'"prediction":{_scalar(self.prediction)},"label":{_scalar(self.label)},'
            f'"model_version":{int(self.model_version)},"drift":{"true" if self.drift else "false"},'
            f'"ts":{_scalar(self.ts)}}}'
        ).encode("utf-8")


@dataclass(frozen=True)
class DeadLetter:
    """A rejected input record with its reason, origin and original bytes (base64 in JSON)."""

    reason: str
    detail: str
    topic: str | None
    partition: int | None
    offset: int | None
    raw: bytes

    def to_json(self) -> bytes:
        """Encode as compact JSON.

        >>> DeadLetter("not_json", "bad", "t", 0, 5, b"{oops").to_json()
        b'{"reason":"not_json","detail":"bad","topic":"t","partition":0,"offset":5,"raw":"e29vcHM="}'
        """
        return _dumps(
            {
                "reason": self.reason,
                "detail": self.detail,
                "topic": self.topic,
                "partition": self.partition,
                "offset": self.offset,
                "raw": base64.b64encode(self.raw).decode("ascii"),
            }
        )


class _FloatList:
    """Marker for a float vector that _dumps writes as the shortest float32 decimal of each value."""

    __slots__ = ("values",)

    def __init__(self, values: Sequence[float] | np.ndarray) -> None:
        self.values = np.asarray(values, dtype=np.float32).reshape(-1)


def encode_floats(values: Sequence[float] | np.ndarray) -> str:
    """Render a float vector as a JSON array, using the shortest decimal that round-trips in float32.

    >>> encode_floats([0.1, 2, -3.5])
    '[0.1,2.0,-3.5]'
    >>> encode_floats([float("nan")])
    Traceback (most recent call last):
    ...
    ValueError: cannot encode non-finite values as JSON
    """
    array = np.asarray(values, dtype=np.float32).reshape(-1)
    if not np.isfinite(array).all():
        raise ValueError("cannot encode non-finite values as JSON")
    # orjson writes each float32 as its shortest round-trip decimal, in a single C call.
    return orjson.dumps(np.ascontiguousarray(array), option=orjson.OPT_SERIALIZE_NUMPY).decode("ascii")


def _scalar(value: Any) -> str:
    """Compact JSON text for one value, as json.dumps would write it, without its per-call cost for scalars.

    Same output and errors as ``json.dumps(value, separators=(",", ":"),
    allow_nan=False, ensure_ascii=False)``.

    >>> [_scalar(v) for v in ("é", None, True, 7, 1.5, [1])]
    ['"é"', 'null', 'true', '7', '1.5', '[1]']
    """
    kind = type(value)
    if kind is str:
        return _json_string(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    # Anything else (NaN, subclasses, containers) gets json's own handling and errors.
    return json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def _dumps(body: dict[str, Any]) -> bytes:
    """Compact JSON for a flat dict whose vector values are _FloatList markers."""
    parts = []
    for key, value in body.items():
        text = encode_floats(value.values) if isinstance(value, _FloatList) else _scalar(value)
        parts.append(f"{_json_string(key)}:{text}")
    return ("{" + ",".join(parts) + "}").encode("utf-8")


def _is_number(value: Any) -> bool:
    # bool is an int subclass in Python, but `true` is not a number in a sample.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# json.loads makes exactly these types for JSON numbers (never bool, which is excluded on purpose).
_NUMBER_TYPES = frozenset((int, float))
# Smallest magnitude that rounds to infinity in float32 (2**128 - 2**103, a tie that rounds to even = inf).
_FLOAT32_OVERFLOW = 2.0**128 - 2.0**103


def decode_sample(raw: bytes, *, default_id: str, n_features: int | None, max_bytes: int) -> Sample:
    """Validate one raw record and return a Sample, or raise SchemaError(reason, detail).

    `default_id` is used when the record has no id; `n_features`, when given,
    is the required dimension. Unknown keys are ignored (forward compatible);
    null `id`, `label`, `task` or `ts` mean absent.

    >>> decode_sample(b'{"features": [1], "label": true}', default_id="1", n_features=None, max_bytes=100)
    Traceback (most recent call last):
    ...
    streamlearn.errors.SchemaError: invalid_label: label must be a string, an integer or null, got bool
    """
    size = getattr(raw, "size", len(raw))  # a line too long to read whole comes as its first bytes and its size
    if size > max_bytes:
        raise SchemaError("too_large", f"record is {size} bytes, the limit is {max_bytes}")
    try:
        obj = orjson.loads(raw)  # strict RFC 8259 JSON in UTF-8: the fast path for good records
    except orjson.JSONDecodeError:
        obj = _loads_lenient(raw)
    else:
        if isinstance(obj, dict) and type(obj.get("label")) is float:
            obj = _loads_lenient(raw)  # orjson reads integers beyond 64 bits as floats; labels keep exact ints
    if not isinstance(obj, dict):
        raise SchemaError("not_object", f"expected a JSON object, got {_json_type(obj)}")
    features = _decode_features(obj, n_features)
    label = _decode_label(obj.get("label"))
    sample_id = obj.get("id")
    if sample_id is None:
        sample_id = default_id
    elif not isinstance(sample_id, str):
        raise SchemaError("invalid_field", f"id must be a string, got {_json_type(sample_id)}")
    _check_text(sample_id, "id", "invalid_field")
    task = obj.get("task")
    if task is not None and not isinstance(task, str):
        raise SchemaError("invalid_field", f"task must be a string, got {_json_type(task)}")
    if task is not None:
        _check_text(task, "task", "invalid_field")
    ts = obj.get("ts")
    if ts is not None:
        if not _is_number(ts):
            raise SchemaError("invalid_field", f"ts must be a number (epoch seconds), got {_json_type(ts)}")
        ts = float(ts)
        if not math.isfinite(ts):
            raise SchemaError("invalid_field", "ts must be a finite number")
    return Sample(id=sample_id, features=features, label=label, task=task, ts=ts)


def _loads_lenient(raw: bytes) -> Any:
    """Python's json for what orjson refuses, so that such a record is classified as before.

    It accepts NaN/Infinity (rejected as ``non_finite``, not ``not_json``), integers beyond 64 bits,
    lone surrogates and UTF-16/32 input, and its errors name the position of a syntax error.
    """
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        detail = "empty record" if not raw.strip() else f"{exc.__class__.__name__}: {exc}"
        raise SchemaError("not_json", detail) from exc


def peek_id(raw: bytes, max_bytes: int) -> str | None:
    """The string id of a raw record, if it is a JSON object (within `max_bytes`) that has one.

    Used to label a rejected record with the caller's own id where possible.

    >>> peek_id(b'{"id": "a-1", "features": "oops"}', 100), peek_id(b'{oops', 100)
    ('a-1', None)
    """
    value = _peek_object(raw, max_bytes).get("id")
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None  # not text: the record is named by its position instead
    return value


def peek_label(raw: bytes, max_bytes: int) -> Label | None:
    """The valid label of a rejected raw record (None if it has none, or the label is what is wrong).

    >>> peek_label(b'{"features": [1, NaN], "label": "cat"}', 100), peek_label(b'{"label": true}', 100)
    ('cat', None)
    """
    try:
        return _decode_label(_peek_object(raw, max_bytes).get("label"))
    except SchemaError:
        return None


def _peek_object(raw: bytes, max_bytes: int) -> dict[str, Any]:
    """A raw record read leniently as a JSON object (empty if it is none, or over `max_bytes`)."""
    if len(raw) > max_bytes:
        return {}
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _decode_features(obj: dict[str, Any], n_features: int | None) -> np.ndarray:
    """Check the `features` field and return it as a read-only float32 vector."""
    values = obj.get("features")
    if values is None:
        raise SchemaError("missing_features", "the record has no 'features' field")
    if not isinstance(values, list):
        raise SchemaError("invalid_features", f"features must be an array of numbers, got {_json_type(values)}")
    if not values:
        raise SchemaError("invalid_features", "features must not be empty")
    if n_features is None and len(values) > MAX_INFERRED_FEATURES:
        raise SchemaError("too_large", f"{len(values)} features would fix the model's dimension, more than the "
                                       f"{MAX_INFERRED_FEATURES} allowed when learner.n_features is not set: set it "
                                       f"(at most {MAX_FEATURES}) to take wider samples")
    # Whole-vector checks first (one pass in C each); the element loops below run only to name a bad value.
    if not _NUMBER_TYPES.issuperset(map(type, values)):
        for index, value in enumerate(values):
            if not _is_number(value):
                raise SchemaError("invalid_features", f"features[{index}] is {_json_type(value)}, not a number")
    try:
        exact = np.array(values, dtype=np.float64)  # exact for JSON floats; ints round as float32 would
    except OverflowError as exc:  # an integer too large for a float
        raise SchemaError("non_finite", f"features contain a value too large to represent: {exc}") from exc
    if not np.abs(exact).max() < _FLOAT32_OVERFLOW:  # also False for NaN
        with np.errstate(over="ignore"):  # overflow becomes inf: that is what we report
            finite = np.isfinite(exact.astype(np.float32))
        index = int(np.argmin(finite))
        raise SchemaError("non_finite", f"features[{index}] is {values[index]!r}, not a finite float32")
    if n_features is not None and exact.shape[0] != n_features:
        raise SchemaError("wrong_dimension", f"expected {n_features} features, got {exact.shape[0]}")
    array = exact.astype(np.float32)
    array.flags.writeable = False
    return array


def _decode_label(label: Any) -> Label | None:
    """Accept a string, an integer or null as a label."""
    if label is None:
        return None
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise SchemaError("invalid_label", f"label must be a string, an integer or null, got {_json_type(label)}")
    if isinstance(label, str) and not label:
        raise SchemaError("invalid_label", "label must not be an empty string")
    if isinstance(label, str):
        _check_text(label, "label", "invalid_label")
    return label


def _check_text(value: str, field: str, reason: str) -> None:
    """Refuse a string that cannot be written as UTF-8: JSON's \\u escapes can spell half a surrogate pair.

    >>> _check_text(chr(0xD800), "label", "invalid_label")
    Traceback (most recent call last):
    ...
    streamlearn.errors.SchemaError: invalid_label: label contains a lone UTF-16 surrogate (\\ud800), which is not text
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        detail = f"{field} contains a lone UTF-16 surrogate (\\u{ord(value[exc.start]):04x}), which is not text"
        raise SchemaError(reason, detail) from None


def _json_type(value: Any) -> str:
    """Name a decoded JSON value's type the way a user of JSON would."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    return type(value).__name__
