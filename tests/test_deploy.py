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
