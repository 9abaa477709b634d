"""The HTTP server itself (uvicorn on a real socket): connections that never finish a request are closed."""

from __future__ import annotations

import socket
import time

import httpx

from streamlearn.api import create_app
from streamlearn.api_server import ApiServer
from streamlearn.config import Settings
from streamlearn.metrics import Metrics
from streamlearn.snapshot_store import SnapshotStore


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (an empty read), or None if it stayed open."""
    sock.settimeout(seconds)
    started = time.monotonic()
    try:
        while sock.recv(4096):
            pass  # a response (e.g. 408) may come before the close
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def test_a_connection_that_never_finishes_its_request_is_closed():
    # Left open, such connections (half a request head, a body that stops) exhaust the process's file
    # descriptors, and with them the daemon's checkpoint writes and Kafka sockets.
    server = ApiServer(create_app(SnapshotStore(), Metrics().registry, Settings()), "127.0.0.1", 0,
                       request_timeout_s=1.0).start()
    try:
        half_head = socket.create_connection(("127.0.0.1", server.port))
        half_head.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never the blank line that ends it
        half_body = socket.create_connection(("127.0.0.1", server.port))
        half_body.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100\r\n\r\n{\"features\": ")
        silent = socket.create_connection(("127.0.0.1", server.port))
        for sock in (half_head, half_body, silent):
            assert _closed_within(sock, 10.0) is not None
            sock.close()
        # A client that keeps its connection and sends whole requests is served as before.
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as client:
            for _ in range(3):
                assert client.get("/healthz").json() == {"status": "ok"}
                time.sleep(0.6)  # 1.8 s on one connection, each request within the timeout
    finally:
        server.stop()


def test_probes_answer_while_embeds_are_busy_and_a_full_queue_gets_503(monkeypatch):
    import threading

    import numpy as np

    from streamlearn import api
    from streamlearn.learner import Learner
    from streamlearn.snapshot_store import ModelState

    from .conftest import blob_rows

    rows = blob_rows(60)
    learner = Learner(seed=0, hidden_dim=16, embedding_dim=4)
    learner.process(np.array([r["features"] for r in rows], dtype=np.float32), [r.get("label") for r in rows])
    state = ModelState.from_learner(learner)
    release, entered = threading.Event(), threading.Semaphore(0)
    embed = type(state.snapshot).embed

    def slow_embed(snapshot, x):  # an expensive request, held until the test lets it go
        entered.release()
        release.wait(30)
        return embed(snapshot, x)

    monkeypatch.setattr(type(state.snapshot), "embed", slow_embed)
    monkeypatch.setattr(api, "_QUEUE_WAIT_S", 1.0)
    store = SnapshotStore()
    store.publish(state)
    server = ApiServer(create_app(store, Metrics().registry, Settings()), "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{server.port}"
    body = {"features": [rows[0]["features"]]}
    answers: list[int] = []
    try:
        busy = [threading.Thread(target=lambda: answers.append(httpx.post(f"{url}/v1/embed", json=body,
                                                                           timeout=30).status_code))
                for _ in range(api._PARALLEL_BODIES)]
        for thread in busy:
            thread.start()
        for _ in busy:
            assert entered.acquire(timeout=10)
        started = time.monotonic()
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200  # not queued behind the embeds
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        assert time.monotonic() - started < 2.0
        queued = httpx.post(f"{url}/v1/embed", json=body, timeout=10)  # waits its second, then is told to retry
        assert queued.status_code == 503 and queued.headers["retry-after"] == "1"
        assert "busy" in queued.json()["detail"]
        release.set()
        for thread in busy:
            thread.join(30)
        assert answers == [200] * api._PARALLEL_BODIES
        assert httpx.post(f"{url}/v1/embed", json=body, timeout=10).status_code == 200
    finally:
        release.set()
        server.stop()
