"""The live summary (`python -m streamlearn.watch`) against the real HTTP API, served in-process by uvicorn.

No broker: the API app from streamlearn/api.py serves a snapshot of a small
trained learner and a Metrics registry the test moves forward, exactly as the
daemon's loop would.
"""

from __future__ import annotations

import io
import socket
import threading
import time

import numpy as np
import pytest

from streamlearn.api import create_app
from streamlearn.api_server import ApiServer
from streamlearn.config import Settings
from streamlearn.drift import DriftEvent
from streamlearn.learner import Learner
from streamlearn.metrics import Metrics
from streamlearn.snapshot_store import ModelState, SnapshotStore
from streamlearn.watch import WatchError, fetch_status, main, watch

from .conftest import blob_rows


@pytest.fixture(scope="module")
def learner() -> Learner:
    rows = blob_rows(120)
    x = np.array([r["features"] for r in rows], dtype=np.float32)
    learner = Learner(seed=0, hidden_dim=32, embedding_dim=8, meta_every=16)
    learner.process(x, [r.get("label") for r in rows])
    return learner


class Daemon:
    """The daemon's serving half: store + metrics behind the real API on a real socket."""

    def __init__(self, learner: Learner | None) -> None:
        self.store = SnapshotStore()
        self.metrics = Metrics()
        if learner is not None:
            self.store.publish(ModelState.from_learner(learner))
        app = create_app(self.store, self.metrics.registry, Settings())
        self.server = ApiServer(app, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.server.port}"

    def consume(self, embedded: int, rejected: int = 0, correct: list[bool] | None = None) -> None:
        self.metrics.samples.labels(outcome="embedded").inc(embedded)
        self.metrics.samples.labels(outcome="learned").inc(embedded)
        self.metrics.samples.labels(outcome="rejected").inc(rejected)
        self.metrics.record_correct(correct or [])


@pytest.fixture
def daemon(learner: Learner):
    d = Daemon(learner)
    yield d
    d.server.stop()


def unused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # closed again: nothing listens there


def test_status_reads_model_metrics_and_drift(daemon: Daemon, learner: Learner) -> None:
    daemon.consume(90, rejected=10, correct=[True, True, True, False])
    daemon.metrics.drift_events.labels(detector="hddm").inc(2)
    daemon.metrics.drift_events.labels(detector="adwin").inc()
    event = DriftEvent("hddm", 77, 5, 1.0, "repair")
    daemon.store.publish(ModelState(model_version=9, classes=("a", "b", 2), drift_events=(event,)))
    status = fetch_status(daemon.url)
    assert (status.consumed, status.rejected, status.drift_events) == (100, 10, 3)
    assert status.accuracy == pytest.approx(0.75)
    assert status.model_version == 9 and status.classes == 3
    assert status.last_drift["detector"] == "hddm" and status.last_drift["action"] == "repair"
    assert status.lag is None  # the daemon has not reported lag yet


def test_accuracy_is_unknown_before_any_labeled_sample(daemon: Daemon) -> None:
    daemon.metrics.samples.labels(outcome="embedded").inc(5)  # unlabeled only
    assert fetch_status(daemon.url).accuracy is None


def test_accuracy_is_unknown_after_a_reset_until_the_next_labeled_sample(daemon: Daemon) -> None:
    daemon.consume(10, correct=[True, False])
    daemon.metrics.reset_accuracy()  # the gauge reads NaN: no measure, not "accuracy nan"
    assert fetch_status(daemon.url).accuracy is None
    daemon.metrics.record_correct([True])
    assert fetch_status(daemon.url).accuracy == 1.0


def test_stops_once_the_daemon_consumed_enough(daemon: Daemon, learner: Learner) -> None:
    daemon.consume(100)

    def learn_more() -> None:
        time.sleep(0.3)
        daemon.consume(60, correct=[True] * 60)

    threading.Thread(target=learn_more, daemon=True).start()
    out = io.StringIO()
    started = time.monotonic()
    assert watch(daemon.url, duration_s=20, interval_s=0.1, until_samples=150, out=out) == 0
    assert time.monotonic() - started < 10  # ended on the count, long before the duration
    lines = out.getvalue().splitlines()
    assert "samples 100" in lines[0] and "rate -" in lines[0]
    assert "samples 160" in lines[-1] and "accuracy 1.000" in lines[-1]
    assert f"model v{learner.model_version}" in lines[-1]
    assert all("samples 160" not in line for line in lines[:-1])  # it stopped at the first reading past 150


def test_ends_after_the_duration_when_the_count_is_never_reached(daemon: Daemon) -> None:
    out = io.StringIO()
    started = time.monotonic()
    assert watch(daemon.url, duration_s=0.5, interval_s=0.1, until_samples=10**9, out=out) == 0
    assert 0.4 < time.monotonic() - started < 5
    assert len(out.getvalue().splitlines()) >= 3


def test_unreachable_daemon_is_one_line_and_exit_status_1() -> None:
    out = io.StringIO()
    started = time.monotonic()
    assert watch(unused_url(), duration_s=0.5, interval_s=0.1, out=out) == 1
    assert time.monotonic() - started < 5
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "cannot reach" in lines[0]  # the same problem is not repeated every poll


def test_a_daemon_without_a_model_is_reported_with_the_api_reason() -> None:
    empty = Daemon(None)
    try:
        with pytest.raises(WatchError, match="409.*model not ready"):
            fetch_status(empty.url)
    finally:
        empty.server.stop()


def test_main_writes_plain_lines_to_a_pipe(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.consume(7)
    out = io.StringIO()  # not a TTY
    code = main(["--url", daemon.url, "--duration", "5", "--interval", "0.1", "--until-samples", "7"], out=out)
    assert code == 0
    text = out.getvalue()
    assert text.count("\n") == 1 and "samples 7" in text
    assert "\x1b" not in text and "\r" not in text  # no colours, no cursor tricks
    assert capsys.readouterr().err == ""


def test_bad_arguments_exit_2_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--duration", "soon"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--duration" in err and "Traceback" not in err
