"""The shipped Prometheus config, alert rules and Grafana dashboard against the real Prometheus.

``promtool`` checks the config and the rules and runs the alerts' unit tests
(``deploy/prometheus/alerts.test.yml``). Then a real Prometheus scrapes a real daemon (real
broker) while the demo stream flows, and every query of the dashboard must return data from
it. Grafana cannot be installed here, so its queries are sent to Prometheus as Grafana would
send them: ``$__rate_interval`` and the ``instance`` variable substituted.

Prometheus and promtool come from ``deploy/prometheus/prometheus-local bin`` (Debian's
package, unpacked into the cache once); if that fails, these tests FAIL with its message.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from streamlearn.config import Settings
from streamlearn.metrics import Metrics
from streamlearn.produce import produce_main
from streamlearn.service import Service
from tests.integration.support import free_port, wait_for

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RATE_INTERVAL = "10s"  # $__rate_interval for a 1 s scrape interval: several scrapes per window


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    done = subprocess.run([str(DEPLOY / "prometheus" / "prometheus-local"), "bin"], capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        pytest.fail(f"Prometheus is needed for this test: {done.stderr.strip()}")
    return Path(done.stdout.strip())


def test_promtool_accepts_the_config_and_the_rules_and_the_alerts_unit_tests_pass(prometheus_bin: Path) -> None:
    promtool = str(prometheus_bin / "promtool")
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"],
                 ["test", "rules", "alerts.test.yml"]):
        done = subprocess.run([promtool, *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"


def test_promtool_accepts_the_kubernetes_scrape_job(prometheus_bin: Path, tmp_path: Path) -> None:
    # Debian's Prometheus is built without Kubernetes discovery (promtool rejects kubernetes_sd_configs
    # as an unknown field), so the job's discovery is swapped for a static target; its relabelling
    # and every other field are checked as written.
    config = yaml.safe_load((DEPLOY / "k8s" / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
    job["static_configs"] = [{"targets": ["streamlearn-0:8080"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([str(prometheus_bin / "promtool"), "check", "config", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, f"{done.stdout}{done.stderr}"


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title / refId, PromQL) of every dashboard target, variables substituted as Grafana would."""
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "streamlearn.json").read_text())
    return [(f"{panel['title']} / {target['refId']}",
             target["expr"].replace("$__rate_interval", RATE_INTERVAL).replace("$instance", ".*"))
            for panel in dashboard["panels"] for target in panel["targets"]]


@pytest.fixture
def daemon(kafka_bootstrap: str, tmp_path: Path):
    """A daemon with its own topics fed the demo stream at 100 samples/s for the test's duration."""
    suffix = uuid.uuid4().hex[:10]
    settings = Settings(
        kafka={"bootstrap_servers": kafka_bootstrap, "samples_topic": f"obs-{suffix}.samples",
               "embeddings_topic": f"obs-{suffix}.embeddings", "dead_letter_topic": f"obs-{suffix}.dead-letter",
               "group_id": f"obs-{suffix}"},
        api={"port": free_port()},
        checkpoint={"dir": tmp_path / "ckpt", "every_seconds": 2.0},
        learner={"hidden_dim": 32, "embedding_dim": 8, "batch_size": 32},
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('not json\n{"features": [NaN]}\n')  # NaN: rejected before its dimension fixes the model's
    assert produce_main(settings, bad, False, None, None) == 0  # dead letters for the dashboard's panel
    # `streamlearn produce` in its own process, so the fixture can stop it whenever the test ends: SIGTERM,
    # which a test run in the background does not ignore (its SIGINT is, and so is the child's).
    env = dict(os.environ, STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
               STREAMLEARN_KAFKA__SAMPLES_TOPIC=settings.kafka.samples_topic)
    # Enough for 5 minutes, so samples flow whenever the queries run, however slow the machine.
    producer_log = (tmp_path / "producer.log").open("w")
    producer = subprocess.Popen([sys.executable, "-m", "streamlearn", "produce", "--demo", "--rate", "100", "--count",
                                 "30000"], env=env, stdout=producer_log, stderr=subprocess.STDOUT)
    service = Service(settings, metrics=Metrics())
    runner = threading.Thread(target=service.run, kwargs={"timeout": 300}, daemon=True)
    runner.start()
    try:
        yield service
    finally:
        producer.send_signal(signal.SIGTERM)
        service.stop()
        runner.join(60)
        producer_log.close()
        assert producer.wait(30) == 143  # stopped by SIGTERM, as the CLI reports it


@pytest.fixture
def prometheus(prometheus_bin: Path, daemon: Service, tmp_path: Path):
    """The shipped prometheus.yml and alerts.yml, pointed at the test daemon, scraping every second
    (``prometheus-local config``, which ``make demo`` uses too)."""
    api_port = wait_for(lambda: daemon.api_port, "the daemon's API to listen", timeout_s=120)
    path = tmp_path / "prometheus.yml"
    path.write_text(subprocess.run([str(DEPLOY / "prometheus" / "prometheus-local"), "config", f"127.0.0.1:{api_port}",
                                    "1s"], capture_output=True, text=True, check=True, timeout=30).stdout)
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [str(prometheus_bin / "prometheus"), f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            def ready() -> bool:
                assert process.poll() is None, f"prometheus exited:\n{(tmp_path / 'prometheus.log').read_text()}"
                try:
                    return http.get("/-/ready").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(ready, "prometheus to be ready", timeout_s=60)
            yield http
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def query(http: httpx.Client, promql: str) -> list[dict]:
    reply = http.get("/api/v1/query", params={"query": promql}).json()
    assert reply["status"] == "success", f"{promql}: {reply.get('error')}"
    return reply["data"]["result"]


def _stalled(daemon: Service, tmp_path: Path) -> str:
    """What a test that saw no samples flowing needs to tell a stalled daemon from a stalled producer."""
    from kafka import KafkaConsumer, TopicPartition

    kafka = daemon.settings.kafka
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers)
    try:
        ends = consumer.end_offsets([TopicPartition(kafka.samples_topic, 0)])
    finally:
        consumer.close()
    learner = daemon.learner
    return (f"samples topic end offsets {ends}; daemon learner samples_seen "
            f"{None if learner is None else learner.samples_seen}; producer output "
            f"{(tmp_path / 'producer.log').read_text()[-2000:]!r}")


def test_every_dashboard_query_returns_data_from_a_real_prometheus_scraping_the_daemon(prometheus: httpx.Client,
                                                                                     daemon: Service, tmp_path: Path):
    http = prometheus
    flowing = f'rate(streamlearn_samples_total{{job="streamlearn", outcome="embedded"}}[{RATE_INTERVAL}]) > 0'
    try:
        wait_for(lambda: query(http, flowing), "Prometheus to see samples flowing", timeout_s=120, every_s=1)
    except AssertionError as exc:
        targets = [(t["scrapeUrl"], t["health"], t["lastError"])
                   for t in http.get("/api/v1/targets").json()["data"]["activeTargets"]]
        raise AssertionError(f"{exc}; scrape targets: {targets}; {_stalled(daemon, tmp_path)}") from None
    checkpointed = 'streamlearn_last_checkpoint_timestamp_seconds{job="streamlearn"} > 0'
    wait_for(lambda: query(http, checkpointed), "a checkpoint", timeout_s=60, every_s=1)
    wait_for(lambda: query(http, f'rate(streamlearn_meta_updates_total{{job="streamlearn"}}[{RATE_INTERVAL}]) > 0'),
             "meta steps", timeout_s=60, every_s=1)

    values = {where: [float(r["value"][1]) for r in query(http, promql)] for where, promql in dashboard_queries()}
    empty = [where for where, found in values.items() if not found]
    assert not empty, f"dashboard queries without data: {empty}"

    assert max(values["Samples per second / A"]) > 0
    assert 0 < values["Prequential accuracy (rolling) / A"][0] <= 1
    assert values["Model version / A"][0] >= 1
    assert values["Memory and CPU / A"][0] > 10e6  # resident bytes of a process holding torch
    assert all(math.isfinite(v) and v > 0 for v in values["End-to-end latency / B"])  # p99 of a flowing stream
    # The broker answers: 0, or the few milliseconds of a flush the scrape happened to fall into.
    assert len(values["Kafka unanswered / A"]) == 1 and 0.0 <= values["Kafka unanswered / A"][0] < 5.0
    reasons = {r["metric"]["reason"] for r in query(http, 'streamlearn_dead_letters_total{job="streamlearn"} > 0')}
    assert reasons == {"not_json", "non_finite"}

    # The instance variable's own query finds the daemon.
    instances = http.get("/api/v1/label/instance/values",
                         params={"match[]": 'streamlearn_model_version{job="streamlearn"}'}).json()["data"]
    assert len(instances) == 1

    # Every alert rule evaluates without error against the daemon's real series, and the job the
    # rules select on is the one the shipped config scrapes. (Whether each alert fires when it
    # should is promtool's unit tests' part: their `for` windows outlast this test.)
    assert query(http, 'up{job="streamlearn"} == 1')

    def evaluated() -> list[dict] | None:
        rules = [r for g in http.get("/api/v1/rules").json()["data"]["groups"] for r in g["rules"]]
        return rules if rules and all(r["lastEvaluation"] > "2000" for r in rules) else None

    rules = wait_for(evaluated, "every rule to be evaluated", timeout_s=30, every_s=1)
    assert len(rules) == len(yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"])
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
