"""deploy/ is checked without Docker or Kubernetes: every YAML file parses,
the Kubernetes manifests have what the runbook relies on (probes,
resources, HPA, PDB, the ingest worker Deployment, CronJobs, Secrets,
ConfigMaps, Alertmanager), and every alert and recording rule is well formed
and names only metrics the server or the ingest worker exports (the EXPORTED
lists in flight-server/src/observability.rs and ingest/src/live.rs) or
Prometheus' own `up`. The table-state families, which every server replica
exports alike, are only ever taken as `max` over the replicas, never summed.
Every component that computes the 08:00 client-local SLA gets the client
list (for the clients' time zones).

The rules are also checked and unit-tested (deploy/prometheus/alerts_test.yml)
with the real promtool, from Debian's `prometheus` package (scripts/test.sh
unpacks it and passes its path in PROMTOOL), and the Alertmanager config with
amtool (Debian's `prometheus-alertmanager`, AMTOOL); the compose file and the
Dockerfile are checked for the stack and stages the runbook describes.
tests/python/test_alerting.py runs the real Prometheus and Alertmanager on
these files."""

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
    "check", "severity",
}  # fmt: skip


def exported_metrics() -> set[str]:
    """What the server's and the ingest worker's `/metrics` export."""
    names: set[str] = set()
    for source in ("flight-server/src/observability.rs", "ingest/src/live.rs"):
        text = (ROOT / source).read_text()
        block = text.split("pub const EXPORTED", 1)[1].split("];", 1)[0]
        found = set(re.findall(r'"(adlake_[a-z_]+)"', block))
        assert found, f"no EXPORTED list in {source}"
        names |= found
    return names


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\boffset\s+\d+[smhdwy]\b", "", expr)  # offsets
    expr = re.sub(r"\b\d+(\.\d+)?(e-?\d+)?\b", "0", expr)  # numbers
    return {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if w not in PROMQL_WORDS}


# The families that are table state, read from the shared tables: every
# server replica exports the same value, so they are aggregated with max
# over the replicas (deploy/prometheus/recording.yml), never summed.
TABLE_STATE = re.compile(
    r"\badlake_(ingest_(runs|rows_[a-z]+|api_calls_total|retries_total|rate_limit_[a-z_]+|breaker_opens_total)"
    r"|freshness_lag_seconds|data_quality_findings|table_(version|files|bytes))\b"
)
AGGREGATIONS = ("sum", "max", "min", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile")


def enclosing_aggregation(expr: str, pos: int) -> str | None:
    """The innermost aggregation operator whose argument holds expr[pos]."""
    depth = 0
    for i in range(pos - 1, -1, -1):
        ch = expr[i]
        if ch == ")":
            depth += 1
        elif ch == "(":
            if depth:
                depth -= 1
                continue
            head = expr[:i].rstrip()
            # `max by (a, b) (` or `max(`: skip a grouping clause.
            m = re.search(r"\b(\w+)\s*(?:(?:by|without)\s*\([^()]*\))?$", head)
            if m and m.group(1) in AGGREGATIONS:
                return m.group(1)
    return None


def assert_table_state_taken_as_max(where: str, expr: str) -> None:
    bare = re.sub(r'"[^"]*"', '""', expr)
    for m in TABLE_STATE.finditer(bare):
        agg = enclosing_aggregation(bare, m.start())
        assert agg == "max", f"{where}: {m.group(0)} is table state (the same on every replica): take max by (...), not {agg}"


def recording_rules() -> dict[str, str]:
    """record name -> expr of deploy/prometheus/recording.yml."""
    rules = yaml.safe_load((DEPLOY / "prometheus/recording.yml").read_text())
    out = {}
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert set(rule) <= {"record", "expr", "labels"}, rule
            # level:metric:operation, https://prometheus.io/docs/practices/rules/
            assert re.fullmatch(r"[a-z_]+:adlake_[a-z_]+:[a-z_]+", rule["record"]), rule["record"]
            out[rule["record"]] = rule["expr"]
    return out


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


def pod_of(obj: dict) -> dict:
    spec = obj.get("spec", {})
    return spec.get("template", spec.get("jobTemplate", {}).get("spec", {}).get("template", {})).get("spec", {})


def argv_of(container: dict) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def configmap_behind(obj: dict, container: dict, path: str) -> str | None:
    """The ConfigMap whose volume the container has mounted where `path` is."""
    mount = next((m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
    if mount is None:
        return None
    volume = next(v for v in pod_of(obj)["volumes"] if v["name"] == mount["name"])
    return (volume.get("configMap") or {}).get("name")


def assert_gets_the_client_list(obj: dict, flag: str) -> None:
    (c,) = pod_of(obj)["containers"]
    argv = argv_of(c)
    assert flag in argv, f"{obj['metadata']['name']}: no {flag} in {argv}"
    path = argv[argv.index(flag) + 1]
    assert path.endswith("/clients.toml")
    assert configmap_behind(obj, c, path) == "adlake-ingest-clients", f"{obj['metadata']['name']}: {path} is not mounted"


def test_kubernetes_manifests_have_what_the_runbook_relies_on():
    objs = k8s_objects()
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "CronJob", "Secret", "ConfigMap"} <= kinds
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    deploy = by_name["Deployment", "adlake"]
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
    # Upkeep and the freshness report run as CronJobs; ingest is the
    # long-lived worker (below), no hourly `run` any more.
    commands = {
        o["metadata"]["name"]: o["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
        for o in objs
        if o["kind"] == "CronJob"
    }
    assert {tuple(c[:2]) for c in commands.values()} == {
        ("adlake-ingest", "maintain"), ("adlake-ingest", "freshness"),
    }, commands  # fmt: skip
    # Every component that computes the 08:00 client-local SLA reads the
    # clients' time zones from the client list: the server, the freshness
    # report and the worker (which also pulls from it).
    assert_gets_the_client_list(deploy, "--clients-config")
    (freshness,) = [o for o in objs if o["kind"] == "CronJob" and commands[o["metadata"]["name"]][1] == "freshness"]
    assert_gets_the_client_list(freshness, "--config")
    assert "--json" in commands[freshness["metadata"]["name"]]
    auth = argv_of(container)[argv_of(container).index("--auth-file") + 1]
    mount = next(m for m in container["volumeMounts"] if auth.startswith(m["mountPath"] + "/"))
    assert next(v for v in pod_of(deploy)["volumes"] if v["name"] == mount["name"])["secret"]["secretName"] == "adlake-auth"


def test_kubernetes_runs_one_long_lived_ingest_worker():
    objs = k8s_objects()
    workers = [o for o in objs if o["kind"] == "Deployment" and argv_of(pod_of(o)["containers"][0])[:2] == ["adlake-ingest", "worker"]]
    (worker,) = workers
    spec = worker["spec"]
    # One worker at a time, also during a rollout: two would pull the same
    # slices and keep two circuit breakers per (client, source).
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    (c,) = pod_of(worker)["containers"]
    argv = argv_of(c)
    assert argv == [
        "adlake-ingest", "worker", "--config", "/etc/adlake/ingest/clients.toml",
        "--secrets", "/etc/adlake/secrets/secrets.toml",
        "--run-at", "03:00", "--tick-secs", "60", "--metrics-addr", "0.0.0.0:8081",
    ], argv  # fmt: skip
    assert_gets_the_client_list(worker, "--config")
    (port,) = [p for p in c["ports"] if p["containerPort"] == 8081]
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": "8081", "prometheus.io/path": "/metrics"}
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/metrics" and c[probe]["httpGet"]["port"] in (8081, port["name"]), probe
    assert {"secretRef": {"name": "adlake-platforms"}} in c["envFrom"]
    secrets = argv[argv.index("--secrets") + 1]
    mount = next(m for m in c["volumeMounts"] if secrets.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod_of(worker)["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "adlake-ingest-secrets"
    # No server selector picks the worker's pods (nor Alertmanager's).
    server = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "adlake")
    assert not server["spec"]["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def alertmanager_config() -> str:
    return (DEPLOY / "alertmanager/alertmanager.yml").read_text()


def test_kubernetes_runs_alertmanager_with_the_shipped_config():
    objs = {(o["kind"], o["metadata"]["name"]): o for o in k8s_objects()}
    config = objs["ConfigMap", "adlake-alertmanager"]
    assert config["data"]["alertmanager.yml"] == alertmanager_config()
    deploy = objs["Deployment", "adlake-alertmanager"]
    (c,) = pod_of(deploy)["containers"]
    assert re.fullmatch(r"prom/alertmanager:v\d+\.\d+\.\d+", c["image"]), c["image"]
    argv = argv_of(c)
    (flag,) = [a for a in argv if a.startswith("--config.file=")]
    assert configmap_behind(deploy, c, flag.split("=", 1)[1]) == "adlake-alertmanager"
    assert flag.endswith("/alertmanager.yml")
    assert c["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    service = objs["Service", "adlake-alertmanager"]
    assert service["spec"]["selector"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    assert [p["port"] for p in service["spec"]["ports"]] == [9093]


def test_recording_rules_take_the_table_state_once_over_the_replicas():
    known = exported_metrics()
    records = recording_rules()
    for record, expr in records.items():
        (used,) = metric_names(expr)
        assert used in known, f"{record}: unknown metric {used}"
        assert TABLE_STATE.fullmatch(used), f"{record}: {used} is per replica, sum it instead"
        assert record.split(":")[1] == used, record
        assert_table_state_taken_as_max(record, expr)
    # Every table-state family exported has its recording rule.
    state = {n for n in known if TABLE_STATE.fullmatch(n)}
    assert state == {r.split(":")[1] for r in records}, state ^ {r.split(":")[1] for r in records}


def test_alert_rules_are_well_formed_and_use_exported_metrics():
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    known = exported_metrics() | {"up"} | set(recording_rules())
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
            # Fires once, not once per replica, and never adds replicas up.
            assert_table_state_taken_as_max(rule["alert"], expr)
            alerts.append(rule["alert"])
    runbook = (ROOT / "docs/runbook.md").read_text().lower()
    for alert in alerts:
        assert f"### {alert.lower()}" in runbook, f"runbook has no section for {alert}"
    # The issue's list: server down, error rate, p95 latency, freshness at 07:00.
    assert {"AdlakeServerDown", "AdlakeHighErrorRate", "AdlakeSlowQueries", "AdlakeFreshnessSlaAtRisk"} <= set(alerts)


def test_grafana_dashboard_queries_exported_metrics():
    dashboard = json.loads((DEPLOY / "grafana/dashboards/adlake.json").read_text())
    known = exported_metrics()
    bases = {n.removesuffix("_total") for n in known}
    records = recording_rules()
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for name in metric_names(expr):
                if ":" in name:
                    assert name in records, f"{panel['title']}: {name} is no recording rule of recording.yml"
                    used.add(name.split(":")[1])
                elif name.startswith("adlake_"):
                    assert name in known or re.sub(r"_(bucket|sum|count)$", "", name) in bases, name
                    # Table state comes through the recording rules (max over
                    # the replicas), so no panel adds the replicas up.
                    assert not TABLE_STATE.fullmatch(name), f"{panel['title']}: use the recording rule of {name}"
                    used.add(name)
    assert {"adlake_freshness_lag_seconds", "adlake_ingest_runs", "adlake_ingest_api_calls_total"} <= used


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


RULE_FILES = ["recording.yml", "alerts.yml"]


def test_promtool_checks_the_rules_and_the_prometheus_config(tmp_path: Path):
    for name in RULE_FILES:
        out = run_promtool("check", "rules", name, cwd=DEPLOY / "prometheus")
        rules = yaml.safe_load((DEPLOY / "prometheus" / name).read_text())
        count = sum(len(g["rules"]) for g in rules["groups"])
        assert f"SUCCESS: {count} rules found" in out, out
    # The config points at the rules where compose mounts them; check it
    # with that path pointing at the repository's file.
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == [f"/etc/prometheus/{n}" for n in RULE_FILES]
    config["rule_files"] = [str(DEPLOY / "prometheus" / n) for n in RULE_FILES]
    # Alerts go to the compose stack's Alertmanager.
    (am,) = config["alerting"]["alertmanagers"]
    assert am["static_configs"] == [{"targets": ["alertmanager:9093"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = run_promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert "SUCCESS" in out, out


def amtool() -> str:
    """amtool from $AMTOOL, PATH, or beside promtool (Debian's
    prometheus-alertmanager, unpacked by scripts/test.sh)."""
    import os
    import shutil

    path = os.environ.get("AMTOOL") or shutil.which("amtool") or str(Path(promtool()).parent / "amtool")
    assert Path(path).is_file(), "amtool not found: run through scripts/test.sh, or set AMTOOL"
    return path


def test_amtool_checks_the_alertmanager_config():
    import subprocess

    path = DEPLOY / "alertmanager/alertmanager.yml"
    done = subprocess.run([amtool(), "check-config", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, f"{done.stdout}\n{done.stderr}"
    config = yaml.safe_load(path.read_text())
    # Every alert reaches a webhook receiver, whose URL is the one line an
    # operator changes (marked OPERATOR).
    receivers = {r["name"]: r for r in config["receivers"]}
    routed = [config["route"]["receiver"], *(r["receiver"] for r in config["route"].get("routes", []))]
    for name in routed:
        (hook,) = receivers[name]["webhook_configs"]
        assert hook["url"].startswith("http"), hook
    urls = {h["url"] for r in receivers.values() for h in r.get("webhook_configs", [])}
    (url,) = urls
    (line,) = [l for l in path.read_text().splitlines() if url in l]
    assert "OPERATOR" in line, line
    # Alerts of different clients and sources are never merged.
    assert {"alertname", "client", "source"} <= set(config["route"]["group_by"])


def test_alert_rules_fire_as_their_unit_tests_say():
    # alerts_test.yml: server down, error rate (refusals excluded), the
    # freshness SLA at 07:00 and missed at 08:00, ingest failures and a
    # quarantine spike, each with when it must and must not fire.
    tests = yaml.safe_load((DEPLOY / "prometheus/alerts_test.yml").read_text())
    tested = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])}
    assert {
        "AdlakeServerDown", "AdlakeHighErrorRate", "AdlakeFreshnessSlaAtRisk", "AdlakeFreshnessSlaMissed",
        "AdlakeIngestFailures", "AdlakeQuarantineSpike",
    } <= tested  # fmt: skip
    assert tests["rule_files"] == RULE_FILES
    exprs = {t["expr"] for case in tests["tests"] for t in case.get("promql_expr_test", [])}
    assert {"source:adlake_ingest_api_calls_total:max", "source_status:adlake_ingest_runs:max"} <= exprs
    out = run_promtool("test", "rules", "alerts_test.yml", cwd=DEPLOY / "prometheus")
    assert "SUCCESS" in out, out


def test_compose_runs_the_whole_stack_from_files_in_the_repository():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"minio", "adlake", "ingest-worker", "upkeep", "prometheus", "alertmanager", "grafana"} <= services.keys()
    assert services["adlake"]["environment"]["ADLAKE_WAREHOUSE"].startswith("s3://")
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./") and "secrets" not in source:
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
    # The worker runs the real schedule from a client list in the repository;
    # upkeep runs beside it.
    worker = services["ingest-worker"]
    command = [*worker["entrypoint"], *worker["command"]]
    assert command[:2] == ["adlake-ingest", "worker"], command
    mounts = dict(reversed(v.split(":")[:2]) for v in worker["volumes"])
    config = command[command.index("--config") + 1]
    assert mounts[config] == "./ingest/clients.toml", (config, mounts)
    assert worker["environment"]["ADLAKE_WAREHOUSE"] == services["adlake"]["environment"]["ADLAKE_WAREHOUSE"]
    assert "./secrets/ingest.env" in json.dumps(worker["env_file"])
    assert "adlake-ingest maintain" in "\n".join(services["upkeep"]["command"])
    # The server and the freshness report read the clients' time zones
    # (the 08:00 client-local SLA) from the same client list.
    server = services["adlake"]
    flag = server["command"].index("--clients-config")
    assert mounts_of(server)[server["command"][flag + 1]] == "./ingest/clients.toml"
    script = "\n".join(services["upkeep"]["command"])
    (freshness,) = re.findall(r"adlake-ingest freshness [^|\n]*", script)
    assert "--json" in freshness.split()
    path = freshness.split()[freshness.split().index("--config") + 1]
    assert mounts_of(services["upkeep"])[path] == "./ingest/clients.toml", freshness
    # Prometheus loads both rule files and sends alerts to Alertmanager,
    # which runs the shipped config.
    prometheus = mounts_of(services["prometheus"])
    for name in ("prometheus.yml", *RULE_FILES):
        assert prometheus[f"/etc/prometheus/{name}"] == f"./prometheus/{name}", prometheus
    am = services["alertmanager"]
    assert re.fullmatch(r"prom/alertmanager:v\d+\.\d+\.\d+", am["image"]), am["image"]
    (flag,) = [a for a in am["command"] if a.startswith("--config.file=")]
    assert mounts_of(am)[flag.split("=", 1)[1]] == "./alertmanager/alertmanager.yml"
    assert "9093:9093" in am["ports"]


def mounts_of(service: dict) -> dict[str, str]:
    """container path -> host path of a compose service's bind mounts."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", []) if v.startswith("./")}


# --------------------------------------------------------------------------
# The ingest configuration shipped in deploy/ingest, checked with the binary
# --------------------------------------------------------------------------

CLIENTS = DEPLOY / "ingest" / "clients.toml"
ENV_EXAMPLE = DEPLOY / "ingest" / "ingest.env.example"
SECRET_FIELDS = {
    "ACCESS_TOKEN", "TOKEN_URL", "CLIENT_ID", "CLIENT_SECRET", "REFRESH_TOKEN", "DEVELOPER_TOKEN", "LOGIN_CUSTOMER_ID",
}  # fmt: skip


def sample_sources() -> list[tuple[str, str, str]]:
    """(client, platform, credentials) of every source in deploy/ingest/clients.toml."""
    import tomllib

    config = tomllib.loads(CLIENTS.read_text())
    return [(c["id"], s["platform"], s["credentials"]) for c in config["client"] for s in c["source"]]


def env_example() -> dict[str, str]:
    lines = [l for l in ENV_EXAMPLE.read_text().splitlines() if l.strip() and not l.startswith("#")]
    return dict(l.split("=", 1) for l in lines)


def secret_prefix(credentials: str) -> str:
    # ingest/src/config.rs, Secrets::credentials: upper-cased, '-' and '.' as '_'.
    return "ADLAKE_SECRET_" + credentials.upper().replace("-", "_").replace(".", "_") + "_"


def test_the_sample_credentials_are_named_as_the_binary_reads_them():
    env = env_example()
    names = {cred for _, _, cred in sample_sources()}
    assert len(sample_sources()) >= 5 and len(names) >= 4
    for name in names:
        assert any(k.startswith(secret_prefix(name)) for k in env), f"no ADLAKE_SECRET_ variable for {name}"
    for key in env:
        owner = [n for n in names if key.startswith(secret_prefix(n))]
        assert len(owner) == 1 and key.removeprefix(secret_prefix(owner[0])) in SECRET_FIELDS, key
    # Kubernetes: the same client list and the same variables.
    objs = {o["metadata"]["name"]: o for o in k8s_objects()}
    assert objs["adlake-ingest-clients"]["data"]["clients.toml"] == CLIENTS.read_text()
    assert objs["adlake-platforms"]["stringData"] == env
    (ingest,) = [o for o in objs.values() if o["kind"] == "Deployment" and "worker" in argv_of(pod_of(o)["containers"][0])]
    (c,) = pod_of(ingest)["containers"]
    assert argv_of(c)[:2] == ["adlake-ingest", "worker"]
    assert_gets_the_client_list(ingest, "--config")
    assert {"secretRef": {"name": "adlake-platforms"}} in c["envFrom"]


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def run_ingest(args: list[str], env: dict[str, str], cwd: Path):
    import os
    import subprocess

    from support import binary

    base = {k: v for k, v in os.environ.items() if not k.startswith(("ADLAKE_", "AWS_", "AZURE_", "GOOGLE_"))}
    return subprocess.run(
        [str(binary("adlake-ingest")), *args], env={**base, **env}, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=120, cwd=cwd,
    )  # fmt: skip


@pytest.mark.parametrize("command", ["run", "worker"])
def test_the_binary_accepts_the_sample_config(command: str, tmp_path: Path):
    # `worker` is what compose and Kubernetes run (here with --run-at 00:00
    # so every client is due, and one tick), `run` the one-shot pull. No credentials
    # are set, so every configured job is reached and fails on exactly
    # that, before any request: the file, the secrets file and every source
    # are accepted.
    warehouse = tmp_path / "warehouse"
    warehouse.mkdir()
    args = [command, "--config", str(CLIENTS), "--secrets", str(DEPLOY / "ingest/secrets.example.toml"),
            "--warehouse", str(warehouse), "--max-attempts", "1"]  # fmt: skip
    if command == "worker":
        args += ["--run-at", "00:00", "--max-ticks", "1"]
    done = run_ingest(args, {}, tmp_path)
    sources = sample_sources()
    assert done.returncode == 1, done.stderr
    assert f"{len(sources)} of {len(sources)} jobs failed" in done.stderr, done.stderr
    failed = [l for l in done.stdout.splitlines() if l.startswith("FAILED")]
    assert len(failed) == len(sources), done.stdout
    for client, platform, cred in sources:
        (line,) = [l for l in failed if l.split()[1:3] == [client, platform]]
        assert f"credentials '{cred}' are not in the secrets file or environment" in line, line


def test_the_sample_credential_variables_reach_every_source(tmp_path: Path):
    # The variables of ingest.env.example, with every URL pointed at a
    # closed loopback port: each job now gets past its credentials and
    # fails on the connection instead (no request leaves the machine).
    port = closed_port()
    env = {k: (f"http://127.0.0.1:{port}/token" if k.endswith("_TOKEN_URL") else v) for k, v in env_example().items()}
    text = CLIENTS.read_text().replace("[[client.source]]\n", f'[[client.source]]\nendpoint = "http://127.0.0.1:{port}"\n')
    config = tmp_path / "clients.toml"
    config.write_text(text)
    warehouse = tmp_path / "warehouse"
    warehouse.mkdir()
    done = run_ingest(["run", "--config", str(config), "--warehouse", str(warehouse), "--max-attempts", "1",
                       "--timeout-secs", "5"], env, tmp_path)  # fmt: skip
    sources = sample_sources()
    failed = [l for l in done.stdout.splitlines() if l.startswith("FAILED")]
    assert done.returncode == 1 and len(failed) == len(sources), (done.stdout, tail_of(done.stderr))
    for line in failed:
        assert "are not in the secrets file" not in line and "connection failed" in line, line


def tail_of(text: str) -> str:
    return "\n".join(text.splitlines()[-30:])


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


def test_the_binary_accepts_the_freshness_command_of_the_manifests(tmp_path: Path):
    # The freshness CronJob's command, with the client list of the
    # repository: accepted, and read (a zone it does not know stops it).
    (cron,) = [o for o in k8s_objects() if o["kind"] == "CronJob" and "freshness" in argv_of(pod_of(o)["containers"][0])]
    argv = argv_of(pod_of(cron)["containers"][0])
    assert argv[0] == "adlake-ingest"
    warehouse = tmp_path / "warehouse"
    warehouse.mkdir()

    def freshness(clients: Path):
        args = [str(clients) if a.endswith("/clients.toml") else a for a in argv[1:]]
        return run_ingest([*args, "--warehouse", str(warehouse)], {}, tmp_path)

    done = freshness(CLIENTS)
    assert done.returncode == 0 and json.loads(done.stdout) == [], (done.stdout, tail_of(done.stderr))
    bad = tmp_path / "clients.toml"
    bad.write_text(CLIENTS.read_text().replace('time_zone = "Europe/Berlin"', 'time_zone = "Mars/Olympus"'))
    done = freshness(bad)
    assert done.returncode != 0 and "unknown time zone 'Mars/Olympus'" in done.stderr, done.stderr
