"""deploy/ is checked without Docker or Kubernetes: every YAML file parses,
the Kubernetes manifests have what the runbook relies on (probes,
resources, HPA, PDB, CronJobs, Secrets, ConfigMaps), and every alert rule
is well formed and names only metrics the server exports (the list in
flight-server/src/metrics.rs, EXPORTED) or Prometheus' own `up`.

The rules are also checked and unit-tested (deploy/prometheus/alerts_test.yml)
with the real promtool, from Debian's `prometheus` package (scripts/test.sh
unpacks it and passes its path in PROMTOOL); the compose file and the
Dockerfile are checked for the stack and stages the runbook describes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMQL_WORDS = {
    "sum", "rate", "by", "without", "histogram_quantile", "clamp_min", "absent", "changes", "or", "and",
    "unless", "le", "on", "ignoring", "group_left", "group_right", "max", "min", "avg", "count", "increase",
    "job", "status", "table", "client", "source", "kind", "event", "instance", "bool", "offset",
}  # fmt: skip


def exported_metrics() -> set[str]:
    text = (ROOT / "flight-server/src/metrics.rs").read_text()
    block = text.split("pub const EXPORTED", 1)[1].split("];", 1)[0]
    names = set(re.findall(r'"(adlake_[a-z_]+)"', block))
    assert names, "no EXPORTED list in metrics.rs"
    return names


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b\d+(\.\d+)?(e-?\d+)?\b", "0", expr)  # numbers
    return {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if w not in PROMQL_WORDS}


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, path


def k8s_objects() -> list[dict]:
    out = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert {"apiVersion", "kind", "metadata"} <= doc.keys(), (path, doc.keys())
                out.append(doc)
    return out


def test_kubernetes_manifests_have_what_the_runbook_relies_on():
    objs = k8s_objects()
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "CronJob", "Secret", "ConfigMap"} <= kinds
    deploy = next(o for o in objs if o["kind"] == "Deployment")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    selector = deploy["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    pdb = next(o for o in objs if o["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    hpa = next(o for o in objs if o["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]
    names = {o["metadata"]["name"] for o in objs}
    for o in objs:
        spec = o.get("spec", {})
        pod = spec.get("template", spec.get("jobTemplate", {}).get("spec", {}).get("template", {})).get("spec", {})
        for c in pod.get("containers", []):
            for ref in c.get("envFrom", []):
                target = (ref.get("configMapRef") or ref.get("secretRef"))["name"]
                assert target in names, f"{o['metadata']['name']} refers to missing {target}"
            assert "resources" in c, c["name"]
        for volume in pod.get("volumes", []):
            target = (volume.get("configMap") or {}).get("name") or (volume.get("secret") or {}).get("secretName")
            assert target is None or target in names, f"{o['metadata']['name']} mounts missing {target}"
    # Ingest, upkeep and the freshness report run as CronJobs.
    commands = {
        o["metadata"]["name"]: o["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
        for o in objs
        if o["kind"] == "CronJob"
    }
    assert {tuple(c[:2]) for c in commands.values()} >= {
        ("adlake-ingest", "run"), ("adlake-ingest", "maintain"), ("adlake-ingest", "freshness"),
    }, commands  # fmt: skip


def test_alert_rules_are_well_formed_and_use_exported_metrics():
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    known = exported_metrics() | {"up"}
    exported_bases = {n.removesuffix("_total") for n in known}
    alerts = []
    for group in rules["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"]), rule["alert"]
            assert rule["labels"]["severity"] in {"page", "ticket"}
            assert rule["annotations"]["summary"]
            expr = rule["expr"]
            assert expr.count("(") == expr.count(")"), expr
            for name in metric_names(expr):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in known or base in exported_bases or name.isdigit(), f"{rule['alert']}: unknown metric {name}"
            alerts.append(rule["alert"])
    runbook = (ROOT / "docs/runbook.md").read_text().lower()
    for alert in alerts:
        assert f"### {alert.lower()}" in runbook, f"runbook has no section for {alert}"
    # The list: server down, error rate, p95 latency, freshness at 07:00.
    assert {"AdlakeServerDown", "AdlakeHighErrorRate", "AdlakeSlowQueries", "AdlakeFreshnessSlaAtRisk"} <= set(alerts)


def test_grafana_dashboard_queries_exported_metrics():
    dashboard = json.loads((DEPLOY / "grafana/dashboards/adlake.json").read_text())
    known = exported_metrics()
    bases = {n.removesuffix("_total") for n in known}
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in metric_names(target["expr"]):
                if name.startswith("adlake_"):
                    assert name in known or re.sub(r"_(bucket|sum|count)$", "", name) in bases, name
                    used.add(name)
    assert "adlake_freshness_lag_seconds" in used


def promtool() -> str:
    """promtool from $PROMTOOL (scripts/test.sh unpacks Debian's) or PATH."""
    import os
    import shutil

    path = os.environ.get("PROMTOOL") or shutil.which("promtool")
    assert path and Path(path).is_file(), "promtool not found: run through scripts/test.sh, or set PROMTOOL"
    return path


def run_promtool(*args: str, cwd: Path) -> str:
    import subprocess

    done = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_promtool_checks_the_rules_and_the_prometheus_config(tmp_path: Path):
    out = run_promtool("check", "rules", "alerts.yml", cwd=DEPLOY / "prometheus")
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    count = sum(len(g["rules"]) for g in rules["groups"])
    assert f"SUCCESS: {count} rules found" in out, out
    # The config points at the rules where compose mounts them; check it
    # with that path pointing at the repository's file.
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    config["rule_files"] = [str(DEPLOY / "prometheus/alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = run_promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert "SUCCESS" in out, out


def test_alert_rules_fire_as_their_unit_tests_say():
    # alerts_test.yml: server down, error rate (refusals excluded), the
    # freshness SLA at 07:00 and missed at 08:00, ingest failures and a
    # quarantine spike, each with when it must and must not fire.
    tests = yaml.safe_load((DEPLOY / "prometheus/alerts_test.yml").read_text())
    tested = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"]}
    assert {
        "AdlakeServerDown", "AdlakeHighErrorRate", "AdlakeFreshnessSlaAtRisk", "AdlakeFreshnessSlaMissed",
        "AdlakeIngestFailures", "AdlakeQuarantineSpike",
    } <= tested  # fmt: skip
    out = run_promtool("test", "rules", "alerts_test.yml", cwd=DEPLOY / "prometheus")
    assert "SUCCESS" in out, out


def test_compose_runs_the_whole_stack_from_files_in_the_repository():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"minio", "adlake", "ingest-worker", "prometheus", "grafana"} <= services.keys()
    assert services["adlake"]["environment"]["ADLAKE_WAREHOUSE"].startswith("s3://")
    assert "maintain" in "\n".join(services["ingest-worker"]["command"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./") and "secrets" not in source:
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"


def test_dockerfile_is_multi_stage_and_ships_both_binaries():
    lines = [l.strip() for l in (DEPLOY / "Dockerfile").read_text().splitlines() if l.strip() and not l.startswith("#")]
    stages = [l for l in lines if l.upper().startswith("FROM ")]
    assert len(stages) >= 2, stages
    runtime = lines[lines.index(stages[-1]) :]
    copied = " ".join(l for l in runtime if l.startswith("COPY --from="))
    assert "adlake-ingest" in copied and "/out/adlake " in copied, copied
    assert any(l.startswith("USER ") and "root" not in l for l in runtime)
    build = " ".join(lines)
    assert "--bin adlake" in build and "--bin adlake-ingest" in build
