"""Crash and restart: ``python -m streamlearn run`` stopped mid-stream (SIGTERM, SIGKILL), then restarted.

At-least-once must hold (every valid sample id reaches the embeddings topic),
a restart must never serve a model older than the last checkpoint, and a
graceful stop must leave the committed offsets equal to the checkpoint's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streamlearn import checkpoint
from tests.integration.support import free_port, wait_for
from streamlearn.config import KafkaSettings
from streamlearn.kafka import ensure_topics

pytestmark = pytest.mark.integration

N_FEATURES = 8
N_SAMPLES = 2500
RATE = 200.0  # samples/s: the stream is still flowing when the daemon is stopped
WAIT_S = 120.0




def produce_paced(bootstrap: str, topic: str, errors: list) -> None:
    """Send N_SAMPLES labeled samples with ids r0, r1, ... at RATE per second."""
    try:
        rng = np.random.default_rng(0)
        centers = rng.normal(scale=4.0, size=(3, N_FEATURES))
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        started = time.monotonic()
        for i in range(N_SAMPLES):
            delay = started + i / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            k = i % 3
            row = {"id": f"r{i}", "features": (centers[k] + rng.normal(size=N_FEATURES)).round(4).tolist(),
                   "label": ["a", "b", "c"][k]}
            producer.send(topic, key=row["id"].encode(), value=json.dumps(row).encode())
        producer.flush(60)
        producer.close()
    except BaseException as exc:  # surfaced by the test
        errors.append(exc)


class Daemon:
    """One ``python -m streamlearn run`` subprocess with its log in a file."""

    def __init__(self, env: dict[str, str], log: Path, cwd: Path) -> None:
        self.log = log
        self._log_handle = log.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "streamlearn", "run"], env=env, cwd=cwd,
                                     stdout=self._log_handle, stderr=subprocess.STDOUT)

    def stop(self, sig: int, timeout_s: float = 60.0) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            pytest.fail(f"daemon did not exit within {timeout_s:.0f}s of {signal.Signals(sig).name}\n{self.tail()}")
        finally:
            self._log_handle.close()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def ensure_alive(self) -> None:
        assert self.proc.poll() is None, f"daemon exited with {self.proc.returncode}\n{self.tail()}"


def model_info(port: int) -> dict | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/v1/model", timeout=2)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def embedded_ids(bootstrap: str, topic: str, want: set[str], timeout_s: float = WAIT_S) -> Counter:
    """Ids on the embeddings topic (with their counts), read until every id in ``want`` is there."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    seen: Counter = Counter()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        while not want <= set(seen) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300).values():
                seen.update(json.loads(r.value)["id"] for r in records)
        end = consumer.end_offsets([TopicPartition(topic, 0)])[TopicPartition(topic, 0)]
        while consumer.position(TopicPartition(topic, 0)) < end and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300).values():
                seen.update(json.loads(r.value)["id"] for r in records)
    finally:
        consumer.close()
    return seen


def dead_letter_reasons(bootstrap: str, topic: str) -> Counter:
    """Reasons on the dead-letter topic (to explain missing embeddings)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        return Counter(json.loads(m.value)["reason"] for m in consumer)
    finally:
        consumer.close()


def committed_offset(bootstrap: str, group: str, topic: str) -> int | None:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return consumer.committed(TopicPartition(topic, 0))
    finally:
        consumer.close(autocommit=False)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_restart_keeps_every_sample_and_the_model(kafka_bootstrap: str, tmp_path: Path, stop_signal: int) -> None:
    suffix = uuid.uuid4().hex[:10]
    samples, embeddings, group = f"rs-{suffix}.samples", f"rs-{suffix}.embeddings", f"rs-{suffix}"
    ckpt_dir, port = tmp_path / "ckpt", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN_")}
    env.update({
        "STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "STREAMLEARN_KAFKA__SAMPLES_TOPIC": samples,
        "STREAMLEARN_KAFKA__EMBEDDINGS_TOPIC": embeddings,
        "STREAMLEARN_KAFKA__DEAD_LETTER_TOPIC": f"rs-{suffix}.dead-letter",
        "STREAMLEARN_KAFKA__GROUP_ID": group,
        "STREAMLEARN_KAFKA__POLL_MAX_RECORDS": "50",
        "STREAMLEARN_API__PORT": str(port),
        "STREAMLEARN_CHECKPOINT__DIR": str(ckpt_dir),
        "STREAMLEARN_CHECKPOINT__EVERY_SAMPLES": "100",
        "STREAMLEARN_LEARNER__HIDDEN_DIM": "32",
        "STREAMLEARN_LEARNER__EMBEDDING_DIM": "8",
        "STREAMLEARN_LEARNER__BATCH_SIZE": "32",
        "STREAMLEARN_LEARNER__META_EVERY": "16",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    })
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap, samples_topic=samples,
                                embeddings_topic=embeddings, dead_letter_topic=f"rs-{suffix}.dead-letter"))
    errors: list = []
    producer = threading.Thread(target=produce_paced, args=(kafka_bootstrap, samples, errors), daemon=True)

    first = Daemon(env, tmp_path / "daemon-1.log", tmp_path)
    try:
        def ready() -> bool:
            first.ensure_alive()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, "the first daemon to be ready")
        producer.start()  # the stream starts flowing only now, so the stop below lands mid-stream

        def learned_enough() -> bool:
            first.ensure_alive()
            info = model_info(port)
            return bool(info and info["samples_seen"] >= 400 and checkpoint.latest_path(ckpt_dir))

        wait_for(learned_enough, "the first daemon to learn from 400 samples and checkpoint")
    except BaseException:
        first.proc.kill()
        raise
    code = first.stop(stop_signal)
    assert not errors, errors
    assert producer.is_alive(), "the stream ended before the daemon was stopped; the test proves nothing"
    if stop_signal == signal.SIGTERM:
        assert code == 0, first.tail()
    else:
        assert code == -signal.SIGKILL

    saved, extra = checkpoint.load(ckpt_dir)
    saved_version = saved.model_version
    saved_offset = extra["offsets"][f"{samples}:0"]
    committed = committed_offset(kafka_bootstrap, group, samples)
    if stop_signal == signal.SIGTERM:
        assert committed == saved_offset, "a graceful stop commits exactly the final checkpoint's offsets"
    else:
        assert committed is not None and committed <= saved_offset  # committed only after checkpoints

    second = Daemon(env, tmp_path / "daemon-2.log", tmp_path)
    try:
        served: list[int] = []

        def caught_up() -> bool:
            second.ensure_alive()
            info = model_info(port)
            if info is not None:
                served.append(info["model_version"])
                return info["samples_seen"] >= saved.samples_seen + (N_SAMPLES - saved_offset)
            return False

        wait_for(caught_up, "the restarted daemon to learn the rest of the stream")
        producer.join(WAIT_S)
        assert not errors, errors
        seen = embedded_ids(kafka_bootstrap, embeddings, {f"r{i}" for i in range(N_SAMPLES)})
    finally:
        code = second.stop(signal.SIGTERM)
    assert code == 0, second.tail()

    assert served and min(served) >= saved_version, (served[:5], saved_version)
    missing = {f"r{i}" for i in range(N_SAMPLES)} - set(seen)
    assert not missing, (f"{len(missing)} samples never embedded, e.g. {sorted(missing)[:5]}; dead letters: "
                         f"{dead_letter_reasons(kafka_bootstrap, f'rs-{suffix}.dead-letter')}")
    assert set(seen) == {f"r{i}" for i in range(N_SAMPLES)}
    if stop_signal == signal.SIGTERM:
        # The final checkpoint covered everything consumed, so nothing was replayed.
        assert max(seen.values()) == 1, [k for k, n in seen.items() if n > 1][:5]
    final, extra = checkpoint.load(ckpt_dir)
    assert extra["offsets"][f"{samples}:0"] == N_SAMPLES
    assert committed_offset(kafka_bootstrap, group, samples) == N_SAMPLES
    assert final.model_version >= saved_version
