"""Throughput benchmark of the daemon on a real Kafka broker: raw ceiling, daemon rate, latency, memory.

One run, on one broker (``deploy/kafka/kafka-local`` on its own port, stopped
at the end, unless ``KAFKA_BOOTSTRAP`` names a broker to use):

1. pre-produce ``--samples`` 64-dim demo digits samples to a fresh topic;
2. **raw ceiling**: kafka-python consumes them and republishes the same bytes
   (same client settings as the daemon, one flush per poll, no decoding, no learning);
3. **daemon**: ``python -m streamlearn run`` (the code path of ``streamlearn run``)
   consumes the same messages; its rate and resident memory (RSS, every
   ~100k samples) are read from its ``/metrics`` and ``/proc``;
4. **latency**: the warm daemon gets a paced stream (``--rate``/s for
   ``--latency-seconds``) whose ``ts`` is set at produce time; a consumer of the
   embeddings topic measures event time -> embedding visible to it; the
   daemon's own ``end_to_end_latency_seconds`` histogram is reported beside it;
5. **latency floor**: the same paced stream through a raw republisher (another
   process, the daemon's consumer and producer settings, one flush per poll,
   no decoding, no learning): what the broker, kafka-python and this machine
   cost before streamlearn does anything.

Prints a table and writes ``benchmarks/results/throughput.{md,json}``.
Targets are reported, never asserted. ``make bench-throughput`` runs it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from streamlearn.config import KafkaSettings
from streamlearn.kafka import client_options, ensure_topics
from streamlearn.kafka.limits import MAX_REQUEST_BYTES

__all__ = ["main"]

logger = logging.getLogger("benchmarks.throughput")

ROOT = Path(__file__).resolve().parents[1]
KAFKA_LOCAL = ROOT / "deploy" / "kafka" / "kafka-local"
RESULTS = ROOT / "benchmarks" / "results"
TARGETS = {"ratio": 0.5, "samples_per_s": 5000.0, "p99_s": 0.100}
_FLUSH_EVERY = 20_000


# -- broker and topics --------------------------------------------------------------------------
@contextmanager
def broker(port: int) -> Iterator[str]:
    """KAFKA_BOOTSTRAP if set (left running), else a kafka-local broker on ``port``, stopped at the end."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    env = {**os.environ, "KAFKA_PORT": str(port)}
    env.pop("KAFKA_STATE_DIR", None)
    env.pop("KAFKA_CONTROLLER_PORT", None)
    started = subprocess.run([str(KAFKA_LOCAL), "start"], check=False, env=env, capture_output=True, text=True,
                             timeout=900)
    if started.returncode != 0:
        raise SystemExit(f"kafka-local start failed (exit {started.returncode}):\n{started.stderr.strip()}")
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(KAFKA_LOCAL), "stop"], check=False, env=env, capture_output=True, text=True, timeout=120)


def delete_topics(bootstrap: str, topics: list[str]) -> None:
    """Remove the run's topics (they hold ~1 GB per million samples)."""
    admin = KafkaAdminClient(**client_options(KafkaSettings(bootstrap_servers=bootstrap)))
    try:
        admin.delete_topics(topics)
    except KafkaError as exc:  # cleanup only: report and go on
        logger.warning("could not delete topics %s: %s", topics, exc)
    finally:
        admin.close()


# -- messages ------------------------------------------------------------------------------------
def templates(n: int = 6000) -> list[bytes]:
    """The demo stream's samples as JSON bytes without their id (``b'"features":...}'``), cycled by callers."""
    from streamlearn.streams import demo_stream

    out = []
    for sample in demo_stream(n):
        body = {k: v for k, v in sample.items() if k != "id"}
        out.append(json.dumps(body, separators=(",", ":")).encode()[1:])
    return out


def producer(bootstrap: str, *, linger_ms: int) -> KafkaProducer:
    """A producer with the daemon's delivery settings (acks=all, idempotent)."""
    return KafkaProducer(acks="all", enable_idempotence=True, linger_ms=linger_ms, batch_size=262_144,
                         max_request_size=MAX_REQUEST_BYTES,
                         **client_options(KafkaSettings(bootstrap_servers=bootstrap)))


def preproduce(bootstrap: str, topic: str, n: int, bodies: list[bytes]) -> float:
    """Send ``n`` samples (ids bench-0000000...) as fast as possible; return the rate."""
    prod = producer(bootstrap, linger_ms=20)
    started = time.perf_counter()
    for i in range(n):
        key = b"bench-%07d" % i
        prod.send(topic, key=key, value=b'{"id":"' + key + b'",' + bodies[i % len(bodies)])
        if (i + 1) % _FLUSH_EVERY == 0:
            prod.flush()
    prod.flush()
    rate = n / (time.perf_counter() - started)
    prod.close()
    return rate


# -- where the time goes, without Kafka -----------------------------------------------------------
def codec_and_learner(bodies: list[bytes], torch_threads: int, n: int = 12_000) -> dict:
    """Per-record decode/encode cost and the learner's own rate (``Learner.process`` in batch_size chunks)."""
    import torch

    from streamlearn.config import Settings
    from streamlearn.learner import Learner
    from streamlearn.schema import EmbeddingRecord, decode_sample

    torch.set_num_threads(torch_threads)
    raws = [b'{"id":"c-%07d",' % i + bodies[i % len(bodies)] for i in range(n)]
    t = time.perf_counter()
    samples = [decode_sample(r, default_id="x", n_features=None, max_bytes=1_000_000) for r in raws]
    decode_us = (time.perf_counter() - t) / n * 1e6
    settings = Settings().learner
    learner = Learner.from_settings(settings)
    x = np.stack([s.features for s in samples])
    labels = [s.label for s in samples]
    step = settings.batch_size
    results = [learner.process(x[:step], labels[:step])]  # warm-up: lazy imports, first model build
    t = time.perf_counter()
    results += [learner.process(x[i:i + step], labels[i:i + step]) for i in range(step, n, step)]
    learner_s = time.perf_counter() - t
    z = np.concatenate([r.embeddings for r in results])
    t = time.perf_counter()
    for i, s in enumerate(samples):
        EmbeddingRecord(s.id, z[i], s.label, s.label, 1, False, s.ts).to_json()
    encode_us = (time.perf_counter() - t) / n * 1e6
    return {"decode_us_per_record": decode_us, "encode_us_per_record": encode_us,
            "learner_alone_samples_per_s": (n - step) / learner_s, "learner_samples": n - step}


# -- (a) raw ceiling ------------------------------------------------------------------------------
def _send_and_flush(batch: dict, prod: KafkaProducer, topic_out: str) -> int:
    """Send one poll's records (``consumer.poll`` output) to ``topic_out`` and flush, as the daemon flushes a
    batch; how many were sent."""
    count = 0
    for records in batch.values():
        for r in records:
            prod.send(topic_out, key=r.key, value=r.value)
        count += len(records)
    if batch:
        prod.flush()
    return count


def raw_ceiling(bootstrap: str, topic_in: str, topic_out: str, n: int, timeout_s: float) -> dict:
    """Consume ``n`` records and republish their bytes, one flush per poll like the daemon; time it.

    The consumer reads the one partition directly, from offset 0, without a consumer group: a
    group join that never completes (seen once with kafka-python 3.0.12: the whole 600-s budget
    with no record) would otherwise leave no ceiling to compare the daemon with. A run that still
    reads nothing fails loudly instead of reporting 0 samples/s.
    """
    options = client_options(KafkaSettings(bootstrap_servers=bootstrap))
    consumer = KafkaConsumer(enable_auto_commit=False, max_poll_records=500, fetch_max_wait_ms=200,
                             max_partition_fetch_bytes=1_048_576 + 65_536, **options)
    partition = TopicPartition(topic_in, 0)
    consumer.assign([partition])
    consumer.seek(partition, 0)
    prod = producer(bootstrap, linger_ms=5)
    count, first, deadline = 0, None, time.monotonic() + timeout_s
    while count < n and time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=200, max_records=500)
        if batch and first is None:
            first = time.perf_counter()
        count += _send_and_flush(batch, prod, topic_out)
    elapsed = time.perf_counter() - (first or time.perf_counter())
    consumer.close(autocommit=False)
    prod.close()
    if count == 0:
        raise SystemExit(f"raw ceiling: no record of {topic_in} read in {timeout_s:.0f} s; the broker is not serving it")
    return {"records": count, "seconds": elapsed, "samples_per_s": count / elapsed if elapsed > 0 else 0.0}


# -- (b) daemon -----------------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict:
    """The daemon's /metrics as {name: {labels-tuple: value}} (histogram buckets under ``*_bucket``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, dict] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def consumed(metrics: dict) -> int:
    m = metrics.get("streamlearn_samples_total", {})
    return int(m.get((("outcome", "embedded"),), 0) + m.get((("outcome", "rejected"),), 0))


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of ``pid`` in MiB (``VmHWM``: its peak)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def daemon_summary(m: dict) -> dict:
    """What the daemon says about its own work: outcomes, dead letters, per-batch and checkpoint times."""
    def one(name: str) -> float:
        return sum(m.get(name, {}).values())

    outcomes = m.get("streamlearn_samples_total", {})
    out = {"samples_by_outcome": {dict(k)["outcome"]: int(v) for k, v in outcomes.items()},
           "dead_letters": int(one("streamlearn_dead_letters_total")),
           "drift_events": int(one("streamlearn_drift_events_total")),
           "meta_updates": int(one("streamlearn_meta_updates_total"))}
    for key, name in (("learner_batch", "streamlearn_update_duration_seconds"),
                      ("checkpoint", "streamlearn_checkpoint_duration_seconds")):
        count, total = one(f"{name}_count"), one(f"{name}_sum")
        out[f"{key}_count"] = int(count)
        out[f"{key}_mean_ms"] = total / count * 1e3 if count else None
    return out


class Daemon:
    """``python -m streamlearn run`` in a subprocess, configured by environment variables only."""

    def __init__(self, bootstrap: str, topics: dict[str, str], workdir: Path, torch_threads: int) -> None:
        self.port = free_port()
        self.log = workdir / "daemon.log"
        env = {**os.environ,
               "STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
               "STREAMLEARN_KAFKA__SAMPLES_TOPIC": topics["samples"],
               "STREAMLEARN_KAFKA__EMBEDDINGS_TOPIC": topics["embeddings"],
               "STREAMLEARN_KAFKA__DEAD_LETTER_TOPIC": topics["dead"],
               "STREAMLEARN_KAFKA__GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
               "STREAMLEARN_API__PORT": str(self.port),
               "STREAMLEARN_CHECKPOINT__DIR": str(workdir / "checkpoints"),
               "OMP_NUM_THREADS": str(torch_threads), "MKL_NUM_THREADS": str(torch_threads)}
        with self.log.open("w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "streamlearn", "run"], env=env, cwd=workdir,
                                         stdout=log, stderr=subprocess.STDOUT)

    def metrics(self) -> dict | None:
        try:
            return scrape(self.port)
        except OSError:
            return None

    def stop(self, timeout_s: float = 60.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def run_daemon_phase(daemon: Daemon, n: int, budget_s: float, rss_every: int) -> dict:
    """Wait until the daemon consumed ``n`` records (or ``budget_s`` passed), sampling rate and RSS."""
    pid = daemon.proc.pid
    started = time.monotonic()
    series: list[tuple[float, int]] = []  # (seconds since start, consumed)
    rss: list[dict] = []
    next_rss = rss_every
    while time.monotonic() - started < budget_s:
        if daemon.proc.poll() is not None:
            raise SystemExit(f"the daemon exited with {daemon.proc.returncode}; see {daemon.log}")
        m = daemon.metrics()
        if m is not None:
            count, now = consumed(m), time.monotonic() - started
            series.append((now, count))
            if count > 0 and not rss:
                rss.append({"samples": count, "rss_mb": rss_mb(pid)})  # first batch: model built
            while count >= next_rss:
                rss.append({"samples": count, "rss_mb": rss_mb(pid)})
                next_rss += rss_every
            if count >= n:
                break
        time.sleep(0.5)
    final = daemon.metrics() or {}
    peak = rss_mb(pid, "VmHWM")
    running = [(t, c) for t, c in series if c > 0]
    if len(running) < 2:
        raise SystemExit(f"the daemon consumed nothing within {budget_s:.0f} s; see {daemon.log}")
    (t0, c0), (t1, c1) = running[0], running[-1]
    half = next(((t, c) for t, c in running if c >= c1 / 2), running[0])
    return {
        "records": c1, "complete": c1 >= n, "startup_s": t0, "seconds": t1 - t0,
        "samples_per_s": (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0,
        "second_half_samples_per_s": (c1 - half[1]) / (t1 - half[0]) if t1 > half[0] else 0.0,
        "rss": rss, "peak_rss_mb": peak, "self_reported": daemon_summary(final),
    }


# -- latency ---------------------------------------------------------------------------------------
def histogram_quantile(q: float, before: dict, after: dict) -> float | None:
    """Quantile of the observations between two scrapes of one histogram (linear within a bucket)."""
    def buckets(m: dict) -> list[tuple[float, float]]:
        return sorted((float(dict(k)["le"]), v) for k, v in m.items())

    b0 = dict(buckets(before))
    cum = [(le, v - b0.get(le, 0.0)) for le, v in buckets(after)]
    total = cum[-1][1] if cum else 0.0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for le, c in cum:
        if c >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * ((rank - below) / (c - below) if c > below else 1.0)
        lower, below = le, c
    return lower


def republish(bootstrap: str, topic_in: str, topic_out: str, seconds: float) -> None:
    """The latency floor's stand-in for the daemon: republish what arrives on ``topic_in`` for ``seconds``.

    The daemon's Kafka path without its work: its consumer's fetch wait and poll timeout (200 ms,
    both returning as soon as records are there), its producer (linger 5 ms), one flush per poll.
    """
    options = client_options(KafkaSettings(bootstrap_servers=bootstrap))
    consumer = KafkaConsumer(enable_auto_commit=False, max_poll_records=500, fetch_max_wait_ms=200, **options)
    partition = TopicPartition(topic_in, 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    prod = producer(bootstrap, linger_ms=5)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _send_and_flush(consumer.poll(timeout_ms=200, max_records=500), prod, topic_out)
    consumer.close(autocommit=False)
    prod.close()


def latency_floor(bootstrap: str, topics: dict[str, str], bodies: list[bytes], rate: float, seconds: float) -> dict:
    """:func:`latency_phase` through :func:`republish` in a process of its own instead of the daemon."""
    import multiprocessing

    worker = multiprocessing.get_context("spawn").Process(
        target=republish, args=(bootstrap, topics["floor_in"], topics["floor_out"], seconds + 60), daemon=True)
    worker.start()
    try:
        time.sleep(3)  # its imports and its first fetch, as the warm daemon has had them
        return latency_phase(bootstrap, None, {"samples": topics["floor_in"], "embeddings": topics["floor_out"]},
                             bodies, rate, seconds)
    finally:
        worker.terminate()
        worker.join(10)


def latency_phase(bootstrap: str, daemon: Daemon | None, topics: dict[str, str], bodies: list[bytes],
                  rate: float, seconds: float) -> dict:
    """Paced samples with ``ts`` = send time; latency until their embedding (or copy) reaches a consumer."""
    tp = TopicPartition(topics["embeddings"], 0)
    consumer = KafkaConsumer(fetch_max_wait_ms=10, enable_auto_commit=False,
                             **client_options(KafkaSettings(bootstrap_servers=bootstrap)))
    consumer.assign([tp])
    consumer.seek_to_end(tp)
    consumer.position(tp)
    hist = "streamlearn_end_to_end_latency_seconds_bucket"
    before = (daemon.metrics() or {}).get(hist, {}) if daemon is not None else {}
    n = int(rate * seconds)
    sent_start: list[float] = []
    worst: dict[int, float] = {}  # second of the run -> slowest sample sent in it

    def send() -> None:
        prod = producer(bootstrap, linger_ms=0)
        start = time.time()
        sent_start.append(start)
        for i in range(n):
            wait = start + i / rate - time.time()
            if wait > 0:
                time.sleep(wait)
            key = b"lat-%07d" % i
            ts = time.time()
            prod.send(topics["samples"], key=key, value=b'{"id":"%s","ts":%r,' % (key, ts) + bodies[i % len(bodies)])
        prod.flush()
        prod.close()

    sender = threading.Thread(target=send, name="bench-sender", daemon=True)
    sender.start()
    latencies: list[float] = []
    deadline = time.monotonic() + seconds + 30
    while len(latencies) < n and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=100).values():
            now = time.time()
            for r in records:
                if r.key is not None and r.key.startswith(b"lat-"):
                    ts = json.loads(r.value)["ts"]
                    latencies.append(now - ts)
                    second = int(ts - sent_start[0]) if sent_start else 0
                    worst[second] = max(worst.get(second, 0.0), now - ts)
        if not sender.is_alive() and len(latencies) >= n:
            break
    sender.join(5)
    consumer.close()
    after = (daemon.metrics() or {}).get(hist, {}) if daemon is not None else {}
    arr = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "offered_rate": rate, "seconds": seconds, "sent": n, "received": len(latencies),
        "p50_s": float(np.percentile(arr, 50)), "p99_s": float(np.percentile(arr, 99)), "max_s": float(arr.max()),
        "daemon_histogram_p50_s": histogram_quantile(0.5, before, after),
        "daemon_histogram_p99_s": histogram_quantile(0.99, before, after),
        "worst_by_second_ms": [round(worst[k] * 1e3, 1) for k in sorted(worst)],
    }


# -- report ----------------------------------------------------------------------------------------
def report(result: dict, out_dir: Path) -> str:
    """Render the table (also the markdown file's body) and write throughput.md/.json."""
    raw, d, lat, floor = result["raw"], result["daemon"], result["latency"], result["latency_floor"]
    ratio = d["samples_per_s"] / raw["samples_per_s"] if raw["samples_per_s"] else 0.0
    result["ratio"] = ratio
    rss = d["rss"]
    warm = [r["rss_mb"] for r in rss[1:]] or [rss[0]["rss_mb"]]  # rss[0] is taken at the first batch
    result["rss_range_mb_after_warmup"] = max(warm) - min(warm)
    result["rss_last_minus_first_mb_after_warmup"] = warm[-1] - warm[0]
    yes = {True: "yes", False: "NO"}
    parts = result["parts"]
    rows = [
        ("producer, pre-producing the samples", f"{result['produce_samples_per_s']:,.0f} samples/s", ""),
        ("raw ceiling (consume + republish bytes)", f"{raw['samples_per_s']:,.0f} samples/s", ""),
        ("learner alone (Learner.process, warm, no Kafka)", f"{parts['learner_alone_samples_per_s']:,.0f} samples/s",
         f"{parts['learner_samples']:,} samples"),
        ("decode + encode per record (schema.py)",
         f"{parts['decode_us_per_record']:.1f} + {parts['encode_us_per_record']:.1f} us", ""),
        ("daemon (streamlearn run)", f"{d['samples_per_s']:,.0f} samples/s",
         f">= {TARGETS['samples_per_s']:,.0f}: {yes[d['samples_per_s'] >= TARGETS['samples_per_s']]}"),
        ("daemon, second half of the run", f"{d['second_half_samples_per_s']:,.0f} samples/s", ""),
        ("daemon / raw", f"{ratio:.1%}", f">= {TARGETS['ratio']:.0%}: {yes[ratio >= TARGETS['ratio']]}"),
        (f"latency p50 at {lat['offered_rate']:,.0f}/s (consumer-observed)", f"{lat['p50_s'] * 1e3:.1f} ms", ""),
        (f"latency p99 at {lat['offered_rate']:,.0f}/s (consumer-observed)", f"{lat['p99_s'] * 1e3:.1f} ms",
         f"< {TARGETS['p99_s'] * 1e3:.0f} ms: {yes[lat['p99_s'] < TARGETS['p99_s']]}"),
        ("latency p50 / p99 (daemon histogram)",
         " / ".join("n/a" if v is None else f"{v * 1e3:.1f} ms"
                    for v in (lat["daemon_histogram_p50_s"], lat["daemon_histogram_p99_s"])), ""),
        ("latency samples received", f"{lat['received']:,} of {lat['sent']:,}", ""),
        (f"latency floor p50 / p99 at {floor['offered_rate']:,.0f}/s (raw republisher)",
         f"{floor['p50_s'] * 1e3:.1f} / {floor['p99_s'] * 1e3:.1f} ms",
         f"{floor['received']:,} of {floor['sent']:,} received"),
        ("daemon RSS after warm-up: last - first (max - min)",
         f"{result['rss_last_minus_first_mb_after_warmup']:+.1f} ({result['rss_range_mb_after_warmup']:.1f}) MB",
         f"over {d['records']:,} samples{'' if d['complete'] else ' (budget ran out before --samples)'}"),
        ("daemon peak RSS", f"{d['peak_rss_mb']:,.0f} MB", ""),
        ("daemon: learner time per batch / checkpoint", " / ".join(
            "n/a" if d["self_reported"][k] is None else f"{d['self_reported'][k]:.1f} ms"
            for k in ("learner_batch_mean_ms", "checkpoint_mean_ms")),
         (f"{d['self_reported']['learner_batch_count']:,} batches, "
          f"{d['self_reported']['checkpoint_count']:,} checkpoints")),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'measure'.ljust(width)}  {'value':>22}  target / note", "-" * (width + 50)]
    lines += [f"{a.ljust(width)}  {b:>22}  {c}" for a, b, c in rows]
    lines += ["", "daemon RSS by samples consumed:"]
    lines += [f"  {r['samples']:>9,}  {r['rss_mb']:8.1f} MB" for r in rss]
    table = "\n".join(lines)
    env = result["environment"]
    md = (f"# Throughput benchmark\n\nGenerated by `make bench-throughput` (benchmarks/throughput.py) on "
          f"{env['date']}: {env['cpus']} CPUs, load average {env['loadavg_start']} at start and "
          f"{env['loadavg_end']} at the end (the machine is shared), torch threads {env['torch_threads']}, "
          f"{result['samples']:,} pre-produced 64-dim demo digits samples, one partition.\n\n"
          f"```\n{table}\n```\n\n"
          "How it is measured: the raw ceiling and the daemon read the same pre-produced messages from one "
          "partition; rates run from the first record consumed to the last (start-up excluded). Latency is "
          "event time (`ts`, set when the sample is sent) to the embedding reaching a consumer of the "
          "embeddings topic, at a paced rate; the demo stream changes concept every 1,000 samples, so at "
          "1,000/s the learner detects and repairs a drift about once a second. The latency floor sends the "
          "same paced stream through a process that only republishes it, with the daemon's Kafka settings. "
          "RSS is read from "
          "/proc/<pid>/status of the `python -m streamlearn run` process.\n\n"
          "Raw data: `throughput.json`. Targets are reported, not asserted.\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "throughput.md").write_text(md)
    (out_dir / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    return table


def main(argv: list[str] | None = None) -> int:
    """Run the whole benchmark; return 0 (targets are reported, not enforced)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=1_000_000, help="pre-produced samples (default 1,000,000)")
    p.add_argument("--budget-s", type=float, default=600.0, help="most seconds the daemon phase may take")
    p.add_argument("--rate", type=float, default=1000.0, help="offered rate of the latency phase (samples/s)")
    p.add_argument("--latency-seconds", type=float, default=30.0)
    p.add_argument("--rss-every", type=int, default=100_000, help="sample RSS every this many samples")
    p.add_argument("--port", type=int, default=int(os.environ.get("BENCH_KAFKA_PORT", "19392")))
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("kafka").setLevel(logging.ERROR)  # its IO thread warns whenever the GIL is busy
    logging.getLogger("streamlearn").setLevel(logging.WARNING)
    run = f"bench-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:4]}"
    topics = {"samples": f"{run}.samples", "embeddings": f"{run}.embeddings", "dead": f"{run}.dead-letter",
              "raw_out": f"{run}.raw-out", "floor_in": f"{run}.floor-in", "floor_out": f"{run}.floor-out"}
    result: dict = {"samples": args.samples, "environment": {
        "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "python": platform.python_version(),
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()), "torch_threads": args.torch_threads}}
    workdir = Path(tempfile.mkdtemp(prefix="streamlearn-bench-"))
    with broker(args.port) as bootstrap:
        logger.info("broker %s, topics %s.*", bootstrap, run)
        ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), {t: 1 for t in topics.values()})
        try:
            bodies = templates()
            result["parts"] = codec_and_learner(bodies, args.torch_threads)
            logger.info("learner alone: %.0f samples/s", result["parts"]["learner_alone_samples_per_s"])
            rate = preproduce(bootstrap, topics["samples"], args.samples, bodies)
            logger.info("pre-produced %d samples at %.0f/s", args.samples, rate)
            result["produce_samples_per_s"] = rate
            result["raw"] = raw_ceiling(bootstrap, topics["samples"], topics["raw_out"], args.samples, args.budget_s)
            logger.info("raw ceiling: %.0f samples/s", result["raw"]["samples_per_s"])
            daemon = Daemon(bootstrap, topics, workdir, args.torch_threads)
            try:
                result["daemon"] = run_daemon_phase(daemon, args.samples, args.budget_s, args.rss_every)
                logger.info("daemon: %.0f samples/s", result["daemon"]["samples_per_s"])
                result["latency"] = latency_phase(bootstrap, daemon, topics, bodies, args.rate, args.latency_seconds)
                result["latency_floor"] = latency_floor(bootstrap, topics, bodies, args.rate, args.latency_seconds)
                logger.info("latency p99: daemon %.1f ms, raw republisher %.1f ms", result["latency"]["p99_s"] * 1e3,
                            result["latency_floor"]["p99_s"] * 1e3)
            finally:
                result["daemon_exit_code"] = daemon.stop()
                log = daemon.log.read_text(errors="replace").splitlines()
                notable = [line[:300] for line in log if "level=WARNING" in line or "level=ERROR" in line]
                result["daemon_log"] = {"warnings": sum("level=WARNING" in line for line in notable),
                                        "errors": sum("level=ERROR" in line for line in notable),
                                        "first": notable[:10]}
        finally:
            delete_topics(bootstrap, list(topics.values()))
    result["environment"]["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    result["environment"]["bench_max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(report(result, args.out))
    if result["daemon_exit_code"] == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"daemon exited with {result['daemon_exit_code']}; its log: {workdir / 'daemon.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
