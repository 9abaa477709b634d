"""The deploy files agree with each other: compose mounts what exists, and addresses match.

Docker cannot run here, so compose itself is not started; these checks catch the mistakes a
user would hit first (a mount of a path that moved, a scrape target or datasource URL that
names no service, a dashboard bound to a datasource that is not provisioned).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def load(path: str) -> dict:
    return yaml.safe_load((DEPLOY / path).read_text())


def test_compose_mounts_only_files_that_exist_and_its_build_context_is_the_project():
    compose = load("compose.yaml")
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in compose["volumes"], f"{name} uses volume {source}, which is not declared"
    assert (DEPLOY / compose["services"]["streamlearn"]["build"] / "Dockerfile").is_file()


def test_prometheus_scrapes_the_compose_daemon_and_grafana_reads_the_compose_prometheus():
    compose = load("compose.yaml")
    prometheus = load("prometheus/prometheus.yml")
    [job] = prometheus["scrape_configs"]
    assert job["job_name"] == "streamlearn"  # the alert rules and the dashboard select on it
    [target] = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in compose["services"] and f"127.0.0.1:{port}:{port}" in compose["services"][host]["ports"]
    assert all((DEPLOY / "prometheus" / f).is_file() for f in prometheus["rule_files"])
    [source] = load("grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]


def test_every_dashboard_panel_uses_the_provisioned_datasource_and_has_a_query():
    [source] = load("grafana/provisioning/datasources/prometheus.yml")["datasources"]
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "streamlearn.json").read_text())
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"] and all(t["expr"] and t["datasource"]["uid"] == source["uid"] for t in panel["targets"])
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids)


def _environment(path: str) -> dict[str, str]:
    """The STREAMLEARN_* variables a deploy file sets (compose: every service; Kubernetes: every container)."""
    found: dict[str, str] = {}
    for doc in yaml.safe_load_all((DEPLOY / path).read_text()):
        if path == "compose.yaml":
            found.update({k: v for s in doc["services"].values() for k, v in s.get("environment", {}).items()})
        elif doc["kind"] == "StatefulSet":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                found.update({e["name"]: e.get("value", "secret") for e in container.get("env", [])})
    return {k: v for k, v in found.items() if k.startswith("STREAMLEARN_")}


def test_the_deploy_files_set_only_real_settings_to_valid_values(monkeypatch, tmp_path):
    from streamlearn.config import load_settings

    for path in ("compose.yaml", "k8s/streamlearn.yaml"):
        environment = _environment(path)
        assert environment, path
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        config = Path(__file__).resolve().parents[1] / "config" / "default.yaml"
        settings = load_settings(config)  # a wrong name or value would exit 2 naming it
        for name in environment:
            section, key = name.removeprefix("STREAMLEARN_").lower().split("__")
            assert key in type(getattr(settings, section)).model_fields, f"{path}: {name} names no setting"
        for name in environment:
            monkeypatch.delenv(name)


def test_the_kubernetes_daemon_keeps_its_checkpoints_on_its_volume_and_serves_where_probed():
    docs = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "k8s" / "streamlearn.yaml").read_text())}
    pod = docs["StatefulSet"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    [mount] = container["volumeMounts"]
    assert mount["mountPath"] == env["STREAMLEARN_CHECKPOINT__DIR"]
    assert mount["name"] in {c["metadata"]["name"] for c in docs["StatefulSet"]["spec"]["volumeClaimTemplates"]}
    [port] = container["ports"]
    assert env["STREAMLEARN_API__HOST"] == "0.0.0.0" and port["containerPort"] == 8080  # api.port's default
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == port["name"]
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user, who owns the checkpoint dir


def test_the_kubernetes_scrape_job_keeps_the_manifest_pods_under_the_job_the_alerts_select():
    docs = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "k8s" / "streamlearn.yaml").read_text())}
    template = docs["StatefulSet"]["spec"]["template"]
    [container] = template["spec"]["containers"]
    [job] = load("k8s/prometheus.yml")["scrape_configs"]
    assert job["job_name"] == load("prometheus/prometheus.yml")["scrape_configs"][0]["job_name"] == "streamlearn"
    assert 'job="streamlearn"' in (DEPLOY / "prometheus" / "alerts.yml").read_text()
    keep = {tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    pod_label = keep[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)]
    assert template["metadata"]["labels"]["app.kubernetes.io/name"] == pod_label
    port_name = keep[("__meta_kubernetes_pod_container_port_name",)]
    assert [p["name"] for p in container["ports"]] == [port_name]
