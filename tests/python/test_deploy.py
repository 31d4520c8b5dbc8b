"""deploy/ is checked without Docker or Kubernetes: every YAML file parses,
the Kubernetes manifests have what the runbook relies on (probes,
resources, HPA, PDB, CronJobs, Secrets, ConfigMaps), and every alert rule
is well formed and names only metrics the server or the ingest worker
exports (the EXPORTED lists in flight-server/src/metrics.rs and
ingest/src/live.rs) or Prometheus' own `up`.

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
    """What the server's and the ingest worker's `/metrics` export."""
    names: set[str] = set()
    for source in ("flight-server/src/metrics.rs", "ingest/src/live.rs"):
        text = (ROOT / source).read_text()
        block = text.split("pub const EXPORTED", 1)[1].split("];", 1)[0]
        found = set(re.findall(r'"(adlake_[a-z_]+)"', block))
        assert found, f"no EXPORTED list in {source}"
        names |= found
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
    # The issue's list: server down, error rate, p95 latency, freshness at 07:00.
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
    assert {"minio", "adlake", "ingest-worker", "upkeep", "prometheus", "grafana"} <= services.keys()
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
    (ingest,) = [o for o in objs.values() if o["kind"] == "CronJob" and "run" in container_of(o)["command"]]
    c = container_of(ingest)
    assert c["command"][:2] == ["adlake-ingest", "run"]
    config = c["command"][c["command"].index("--config") + 1]
    volume = next(m["name"] for m in c["volumeMounts"] if config.startswith(m["mountPath"] + "/"))
    pod = ingest["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    source = next(v for v in pod["volumes"] if v["name"] == volume)
    assert source["configMap"]["name"] == "adlake-ingest-clients" and config.endswith("/clients.toml")
    assert {"secretRef": {"name": "adlake-platforms"}} in c["envFrom"]


def container_of(cronjob: dict) -> dict:
    (c,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return c


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
    # `run` is what the CronJob runs, `worker` what compose runs (here with
    # --run-at 00:00 so every client is due, and one tick). No credentials
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
