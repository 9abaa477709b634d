"""Using the model in one's own service: load_model from disk, fetch_model from a daemon's real HTTP API."""

from __future__ import annotations

import copy
import json
import re
import socket
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from streamlearn import checkpoint
from streamlearn.api import create_app
from streamlearn.api_server import ApiServer
from streamlearn.config import Settings
from streamlearn.errors import CheckpointError
from streamlearn.learner import Learner
from streamlearn.metrics import Metrics
from streamlearn.pull import fetch_model, load_model
from streamlearn.snapshot_store import ModelState, SnapshotStore

from .conftest import N_FEATURES, blob_rows


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, list]:
    rows = blob_rows(240)
    return np.array([r["features"] for r in rows], dtype=np.float32), [r.get("label") for r in rows]


@pytest.fixture(scope="module")
def learner(data) -> Learner:
    x, labels = data
    learner = Learner(seed=0, hidden_dim=32, embedding_dim=8, meta_every=16)
    learner.process(x[:200], labels[:200])
    return learner


@pytest.fixture
def saved(learner: Learner, tmp_path: Path) -> Path:
    checkpoint.save(tmp_path / "ckpt", learner)
    return tmp_path / "ckpt"


@pytest.fixture
def daemon(learner: Learner, saved: Path):
    """The daemon's serving half on a real socket, its latest checkpoint the saved one."""
    store = SnapshotStore()
    store.publish(ModelState.from_learner(learner, checkpoint_path=str(checkpoint.latest_path(saved))))
    server = ApiServer(create_app(store, Metrics().registry, Settings()), "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{server.port}", store
    server.stop()


def test_a_loaded_model_embeds_and_predicts_as_the_learner(learner: Learner, saved: Path, data) -> None:
    test = data[0][200:]
    for path in (saved, checkpoint.latest_path(saved), checkpoint.latest_path(saved).with_name("export.safetensors")):
        model = load_model(path)
        assert model.model_version == learner.model_version and model.classes == learner.classes
        np.testing.assert_array_equal(model.embed(test), learner.embed(test))
    assert load_model(saved).predict(test)[0] == learner.predict(test)[0]  # the full model: the same answers


def test_fetch_model_downloads_the_daemons_export(learner: Learner, saved: Path, daemon, data) -> None:
    url, _ = daemon
    test = data[0][200:]
    model = fetch_model(url)
    assert model is not None and model.model_version == learner.model_version
    np.testing.assert_array_equal(model.embed(test), learner.embed(test))
    export = load_model(checkpoint.latest_path(saved).with_name("export.safetensors"))
    assert model.predict(test)[0] == export.predict(test)[0]


def test_newer_than_downloads_only_a_newer_version(learner: Learner, daemon) -> None:
    url, _ = daemon
    assert fetch_model(url, newer_than=learner.model_version) is None
    assert fetch_model(url, newer_than=learner.model_version - 1).model_version == learner.model_version


def test_newer_than_goes_by_the_checkpoints_version_not_the_live_one(learner: Learner, saved: Path, daemon,
                                                                     data) -> None:
    # The daemon learns on between checkpoints: /v1/model's model_version runs ahead of what /weights gives,
    # and a poll that compared with it downloaded the same older model every time.
    url, store = daemon
    ahead = copy.deepcopy(learner)
    ahead.process(data[0][200:], data[1][200:])
    assert ahead.model_version > learner.model_version
    store.publish(ModelState.from_learner(ahead, checkpoint_path=str(checkpoint.latest_path(saved))))
    info = json.loads(urllib.request.urlopen(f"{url}/v1/model").read())
    assert (info["model_version"], info["checkpoint_version"]) == (ahead.model_version, learner.model_version)
    assert fetch_model(url, newer_than=learner.model_version) is None


def test_a_daemon_without_a_checkpoint_gives_its_reason(learner: Learner) -> None:
    store = SnapshotStore()
    store.publish(ModelState.from_learner(learner))  # serving, but nothing written yet
    server = ApiServer(create_app(store, Metrics().registry, Settings()), "127.0.0.1", 0).start()
    try:
        with pytest.raises(CheckpointError, match="HTTP 404: no checkpoint has been written yet"):
            fetch_model(f"http://127.0.0.1:{server.port}")
    finally:
        server.stop()


def test_an_unreachable_daemon_or_a_bad_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CheckpointError, match="cannot fetch"):
        fetch_model(f"http://127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(CheckpointError, match="cannot fetch"):
        fetch_model("not a url")
    with pytest.raises(CheckpointError, match="is it a streamlearn model"):
        checkpoint.load_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ", source="test bytes")
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        load_model(tmp_path)


@pytest.mark.parametrize(("reply", "reason"), [
    (b"SSH-2.0-OpenSSH_9.6\r\n", "BadStatusLine"),  # not an HTTP server
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", "cut short (3 of 100 bytes)"),
])
def test_a_server_that_is_not_a_daemon_or_a_reply_cut_short_is_a_checkpoint_error(reply: bytes, reason: str) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def answer() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(reply)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        with pytest.raises(CheckpointError, match=re.escape(reason)):
            fetch_model(f"http://127.0.0.1:{server.getsockname()[1]}", timeout_s=5)
        thread.join(timeout=5)


def test_a_model_refuses_rows_of_the_wrong_shape_or_non_finite_values(saved: Path) -> None:
    model = load_model(saved)
    with pytest.raises(ValueError, match=f"expected rows of {N_FEATURES} features"):
        model.embed(np.zeros((2, N_FEATURES + 1)))
    with pytest.raises(ValueError, match="expected rows"):
        model.predict(np.zeros(N_FEATURES))  # one row must still be a (1, d) array
    bad = np.zeros((1, N_FEATURES))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        model.embed(bad)
