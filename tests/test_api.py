"""The HTTP API over a snapshot of a small learner (no broker): answers, 4xx reasons, admin auth."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from streamlearn.api import MAX_ROWS, MAX_VALUES, create_app, row_limit
from streamlearn.config import Settings
from streamlearn.learner import Learner
from streamlearn.metrics import Metrics
from streamlearn.snapshot_store import ModelState, SnapshotStore

from .conftest import N_FEATURES, blob_rows

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def trained() -> tuple[Learner, np.ndarray, list]:
    rows = blob_rows(200)
    x = np.array([r["features"] for r in rows], dtype=np.float32)
    labels = [r.get("label") for r in rows]
    learner = Learner(seed=0, hidden_dim=32, embedding_dim=8, meta_every=16)
    learner.process(x, labels)
    return learner, x, labels


@pytest.fixture
def store(trained) -> SnapshotStore:
    store = SnapshotStore()
    store.publish(ModelState.from_learner(trained[0]))
    return store


def make_client(store: SnapshotStore, *, token: str | None = TOKEN, admin=None, ready=lambda: True,
                registry: CollectorRegistry | None = None, max_rows: int = 100) -> TestClient:
    settings = Settings(api={"admin_token": token} if token else {})
    registry = registry if registry is not None else Metrics().registry
    return TestClient(create_app(store, registry, settings, admin, ready=ready, max_rows=max_rows))


@pytest.fixture
def client(store) -> TestClient:
    return make_client(store)


def test_health_and_readiness(store):
    assert make_client(store).get("/healthz").json() == {"status": "ok"}
    assert make_client(store).get("/readyz").status_code == 200
    not_assigned = make_client(store, ready=lambda: False).get("/readyz")
    assert not_assigned.status_code == 503 and "partitions" in not_assigned.json()["detail"]
    empty = make_client(SnapshotStore()).get("/readyz")
    assert empty.status_code == 503 and "model" in empty.json()["detail"]


def test_model_info_describes_the_snapshot(client, trained):
    learner = trained[0]
    info = client.get("/v1/model").json()
    assert info["model_version"] == learner.model_version
    assert info["n_features"] == N_FEATURES
    assert info["embedding_dim"] == 8
    assert info["samples_seen"] == 200
    assert sorted(map(str, info["classes"])) == ["2", "a", "b"]
    assert info["checkpoint"] is None
    assert set(info) >= {"last_update", "last_drift"}
    assert info["predictor"] == learner.snapshot().predictor in ("prototypes", "vote", "linear", "fused")


def test_embed_matches_the_learner_it_was_taken_from(client, trained):
    learner, x, _ = trained
    body = client.post("/v1/embed", json={"features": x[:5].tolist()}).json()
    assert body["model_version"] == learner.model_version
    np.testing.assert_allclose(np.array(body["embeddings"]), learner.embed(x[:5]), rtol=1e-5, atol=1e-6)


def test_predict_matches_the_learner_and_separates_the_blobs(client, trained):
    learner, x, labels = trained
    body = client.post("/v1/predict", json={"features": x[:50].tolist()}).json()
    expected, distances = learner.predict(x[:50])
    assert body["predictions"] == expected
    np.testing.assert_allclose(body["distances"], distances, rtol=1e-4)
    known = [(p, y) for p, y in zip(body["predictions"], labels[:50]) if y is not None]
    assert sum(p == y for p, y in known) / len(known) > 0.9


def test_the_served_snapshot_does_not_change_while_the_learner_keeps_learning(trained):
    rows = blob_rows(100, seed=1)
    x = np.array([r["features"] for r in rows], dtype=np.float32)
    learner = Learner(seed=0, hidden_dim=32, embedding_dim=8, meta_every=8)
    learner.process(x, [r.get("label") for r in rows])
    store = SnapshotStore()
    store.publish(ModelState.from_learner(learner))
    client = make_client(store)
    before = client.post("/v1/embed", json={"features": x[:3].tolist()}).json()
    for _ in range(3):
        learner.process(x, [r.get("label") for r in rows])
    assert not np.allclose(learner.embed(x[:3]), np.array(before["embeddings"]), atol=1e-6)
    assert client.post("/v1/embed", json={"features": x[:3].tolist()}).json() == before


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"features": [[1.0, 2.0]]}, 422, "expected 8 values"),
        ({"features": [[1.0] * 8, [1.0] * 7]}, 422, "features[1]"),
        ({"features": "not a list"}, 422, "features"),
        ({"features": [1.0] * 8}, 422, "features[0]: expected a row (a list of numbers): features is a list of rows"),
        ({"features": [["1.0"] * 8]}, 422, "valid number"),
        ({"features": [[True] * 8]}, 422, "valid number"),
        ({"features": []}, 422, "at least one row"),
        ({"rows": [[1.0] * 8]}, 422, "features"),
        ({"features": [[1.0] * 8] * 101}, 413, "at most 100"),
        ({"features": [[1e39] + [1.0] * 7]}, 422, "finite float32"),
    ],
)
@pytest.mark.parametrize("endpoint", ["/v1/embed", "/v1/predict"])
def test_bad_requests_get_4xx_with_a_reason(client, endpoint, body, status, fragment):
    response = client.post(endpoint, json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]


@pytest.mark.parametrize("raw", [b'{"features": [[NaN, 1, 1, 1, 1, 1, 1, 1]]}',
                                 b'{"features": [[Infinity, 1, 1, 1, 1, 1, 1, 1]]}'])
def test_non_finite_values_are_rejected(client, raw):
    response = client.post("/v1/embed", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "not a finite" in response.json()["detail"]


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_a_body_not_sent_as_json_is_a_415_that_names_the_content_type(client, content_type):
    # curl -d sends a form: it read "body: Input should be a valid dictionary", about a body that is a JSON object.
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/v1/predict", content=b'{"features": [[1, 1, 1, 1, 1, 1, 1, 1]]}', headers=headers)
    assert response.status_code == 415
    assert response.json()["detail"].startswith("the body must be JSON sent with Content-Type: application/json")


def test_json_with_parameters_or_a_json_suffix_is_json(client):
    for content_type in ("application/json; charset=utf-8", "application/vnd.example+json"):
        response = client.post("/v1/predict", content=b'{"features": [[1, 1, 1, 1, 1, 1, 1, 1]]}',
                               headers={"content-type": content_type})
        assert response.status_code == 200, (content_type, response.text)


def test_malformed_json_is_a_422_with_a_reason(client):
    response = client.post("/v1/embed", content=b"{oops", headers={"content-type": "application/json"})
    assert response.status_code == 422
    # Said as such, with where: it was "1: JSON decode error", the position looking like a field name.
    assert response.json()["detail"].startswith("body is not valid JSON: ")
    assert response.json()["detail"].endswith(" at character 1")


def test_a_model_without_dimension_yet_is_not_ready_to_serve():
    store = SnapshotStore()
    store.publish(ModelState.from_learner(Learner(hidden_dim=16, embedding_dim=4)))
    client = make_client(store)
    response = client.post("/v1/embed", json={"features": [[1.0, 2.0]]})
    assert response.status_code == 409 and "first valid sample" in response.json()["detail"]
    assert client.get("/v1/model").json()["n_features"] is None
    assert client.get("/v1/model").json()["predictor"] is None
    assert make_client(SnapshotStore()).post("/v1/predict", json={"features": [[1.0]]}).status_code == 409


def test_weights_are_the_latest_checkpoint_file(store, tmp_path):
    client = make_client(store)
    missing = client.get("/v1/model/weights")
    assert missing.status_code == 404 and "no checkpoint" in missing.json()["detail"]
    path = tmp_path / "ckpt-3" / "model.safetensors"
    path.parent.mkdir()
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    store.set_checkpoint(str(path))
    response = client.get("/v1/model/weights")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == path.read_bytes()
    assert client.get("/v1/model").json()["checkpoint"] == str(path)
    path.unlink()  # pruned between checkpoints: a 404 with a reason, not a 500
    assert client.get("/v1/model/weights").status_code == 404


def test_weights_serve_the_inference_export_when_the_checkpoint_has_one(store, tmp_path):
    path = tmp_path / "ckpt-4" / "model.safetensors"
    path.parent.mkdir()
    path.write_bytes(b"full checkpoint with replay memory")
    path.with_name("export.safetensors").write_bytes(b"inference-only export")
    store.set_checkpoint(str(path))
    response = make_client(store).get("/v1/model/weights")
    assert response.content == b"inference-only export"
    # Named as what it is: it was offered as "model.safetensors", the name of the full checkpoint file.
    assert response.headers["content-disposition"] == 'attachment; filename="export.safetensors"'


def test_drift_lists_recent_events(client, trained):
    body = client.get("/v1/drift").json()
    assert body["events"] == [e.to_dict() for e in trained[0].drift_events]


def test_a_reset_model_names_no_predictor_until_it_knows_a_class(trained):
    learner = Learner(seed=0, hidden_dim=32, embedding_dim=8, meta_every=16)
    x = trained[1]
    learner.process(x[:40], trained[2][:40])
    learner.reset()  # the dimension stays, the classes go: it read "prototypes" with nothing to predict
    store = SnapshotStore()
    store.publish(ModelState.from_learner(learner))
    info = make_client(store).get("/v1/model").json()
    assert (info["n_features"], info["classes"], info["predictor"]) == (N_FEATURES, [], None)


def test_admin_is_off_without_a_token(store):
    called = []
    client = make_client(store, token=None, admin={"reset": lambda: called.append(1) or {}})
    response = client.post("/v1/model/reset", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404 and "admin_token" in response.json()["detail"]
    assert called == []


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN, "Bearer "])
def test_admin_needs_the_right_bearer_token(store, header):
    called = []
    client = make_client(store, admin={"reset": lambda: called.append(1) or {"reset": True}})
    headers = {} if header is None else {"Authorization": header}
    response = client.post("/v1/model/reset", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert called == []


def test_admin_actions_run_their_hooks(store):
    calls = []
    hooks = {
        "reset": lambda: calls.append("reset") or {"reset": True, "model_version": 9},
        "rollback": lambda: calls.append("rollback") or {"rolled_back": False, "model_version": 9},
    }
    client = make_client(store, admin=hooks)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/v1/model/reset", headers=auth).json() == {"reset": True, "model_version": 9}
    nothing = client.post("/v1/model/rollback", headers=auth)
    assert nothing.status_code == 409 and "roll back" in nothing.json()["detail"]
    assert calls == ["reset", "rollback"]


def test_admin_timeout_is_reported_not_raised(store):
    def slow() -> dict:
        raise TimeoutError

    response = make_client(store, admin={"reset": slow}).post(
        "/v1/model/reset", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 503 and "retry" in response.json()["detail"]


def test_a_failing_admin_action_is_a_503_with_its_reason_not_a_500(store):
    def broken() -> dict:
        raise RuntimeError("disk full")

    response = make_client(store, admin={"reset": broken}).post(
        "/v1/model/reset", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 503 and "disk full" in response.json()["detail"]


def test_metrics_endpoint_serves_the_given_registry(store):
    metrics = Metrics()
    metrics.samples.labels(outcome="embedded").inc(42)
    response = make_client(store, registry=metrics.registry).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'streamlearn_samples_total{outcome="embedded"} 42.0' in response.text


def test_openapi_documents_every_endpoint(client):
    paths = set(client.get("/openapi.json").json()["paths"])
    assert paths >= {"/healthz", "/readyz", "/v1/model", "/v1/model/weights", "/v1/embed", "/v1/predict",
                     "/v1/drift", "/v1/model/rollback", "/v1/model/reset", "/metrics"}
    assert json.dumps(client.get("/openapi.json").json())  # serialisable as served


def test_a_body_larger_than_any_valid_request_is_refused_before_it_is_parsed(client: TestClient) -> None:
    # 100 rows of 8 features need far less than this one 300 kB row: 413 from its length alone.
    body = b'{"features": [[' + b"1.0," * 75_000 + b'1.0]]}'
    response = client.post("/v1/embed", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "request body is" in response.json()["detail"] and "100 rows of 8 features" in response.json()["detail"]


def test_a_chunked_body_is_limited_too_and_a_small_one_is_served(client: TestClient) -> None:
    # No Content-Length (chunked transfer): the body is read up to the limit, then refused.
    big = iter([b'{"features": [['] + [b"1.0," * 1_000] * 75 + [b'1.0]]}'])
    response = client.post("/v1/embed", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "over" in response.json()["detail"]
    small = iter([b'{"features": [[', b"1.0, " * 7, b"1.0]]}"])
    response = client.post("/v1/embed", content=small, headers={"content-type": "application/json"})
    assert response.status_code == 200 and len(response.json()["embeddings"]) == 1


def test_a_pretty_printed_request_of_the_most_rows_is_not_refused_for_its_size(store) -> None:
    import json

    rows = [[-1.2345678901234567e-05] * 8 for _ in range(100)]
    body = json.dumps({"features": rows}, indent=2).encode()
    response = make_client(store).post("/v1/embed", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200 and len(response.json()["embeddings"]) == 100


def test_many_short_values_are_refused_by_their_commas_before_they_are_parsed(client: TestClient) -> None:
    # Within the byte limit of 100 rows of 8 features, but 40,000 values: parsing them is what costs.
    body = b'{"features": [[' + b"0," * 40_000 + b'0]]}'
    assert len(body) < 100 * (8 * 40 + 32) + 65_536
    response = client.post("/v1/embed", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "commas" in response.json()["detail"] and "100 rows of 8 features" in response.json()["detail"]
    # A valid request at the row limit, written as compactly as it can be, still passes.
    full = json.dumps({"features": [[0] * 8] * 100}, separators=(",", ":")).encode()
    ok = client.post("/v1/embed", content=full, headers={"content-type": "application/json"})
    assert ok.status_code == 200 and len(ok.json()["embeddings"]) == 100


@pytest.mark.parametrize("body, detail", [
    (b'{"features": [[1, 2]], "note": "\xff"}', "body is not valid JSON: it is not UTF-8 text (byte 0xff at position 32)"),
    (b'{"features": [[1' + b"0" * 5_000 + b']]}', "body is not valid JSON a request can be: a number has more than "),
    (b'{"features": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", "body is not valid JSON a request can be: it nests too deeply"),
])
def test_a_body_the_json_decoder_cannot_read_gets_the_reason(client: TestClient, body: bytes, detail: str) -> None:
    # FastAPI answered each of these "There was an error parsing the body".
    response = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["detail"].startswith(detail)


def test_a_compressed_body_is_refused_with_415_and_the_encoding_named(client: TestClient) -> None:
    import gzip

    body = gzip.compress(b'{"features": [[1, 2, 3, 4, 5, 6, 7, 8]]}')
    response = client.post("/v1/embed", content=body,
                           headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert response.status_code == 415
    assert response.json()["detail"] == "Content-Encoding 'gzip' is not supported: send the JSON body uncompressed"
    plain = client.post("/v1/embed", content=b'{"features": [[1, 2, 3, 4, 5, 6, 7, 8]]}',
                        headers={"content-type": "application/json", "content-encoding": "identity"})
    assert plain.status_code == 200
    # Every Content-Encoding header counts, not only the last one.
    both = client.post("/v1/embed", content=body, headers=[("content-type", "application/json"),
                                                           ("content-encoding", "gzip"),
                                                           ("content-encoding", "identity")])
    assert both.status_code == 415 and "'gzip'" in both.json()["detail"]
    # Without a body there is nothing to decode: the request is answered as without the header.
    admin = client.post("/v1/model/rollback", headers={"content-encoding": "gzip"})
    assert admin.status_code == 401


def test_a_wide_model_takes_fewer_rows_per_request():
    assert row_limit(8) == MAX_ROWS and row_limit(MAX_VALUES // 10) == 10 and row_limit(10 * MAX_VALUES) == 1


def test_head_answers_like_get_without_a_body(client: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/v1/model", "/v1/drift", "/metrics"):
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"], path
    assert client.head("/v1/model/weights").status_code == 404  # as GET: no checkpoint in this store
