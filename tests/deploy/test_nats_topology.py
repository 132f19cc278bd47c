"""The NATS topology as deployed, checked offline: the committed NATS configs are what the
one definition (services/cli/natsauth.py) generates now, every deployment logs each service
in as its own user, and the prod overlay asks for R3 streams."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import yaml

from services.cli import natsdeploy
from services.cli.natsauth import PUBLISHES, USERS, helm_authorization, password_env
from tests.deploy.test_manifests import OVERLAYS, SERVICES, Doc, one

NATS_SECRET = "marketplace-nats-users"


def test_committed_nats_configs_are_generated_from_the_definition() -> None:
    for path, text in natsdeploy.generated().items():
        assert path.read_text() == text, (
            f"{path.name} is stale: run `python -m services.cli.natsdeploy --write`"
        )
    assert natsdeploy.main(["--check"]) == 0


def test_a_changed_permission_makes_the_committed_files_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check can fail: letting orders publish payments' subjects changes both files."""
    monkeypatch.setitem(PUBLISHES, "orders", ("orders.>", "payments.>"))
    for path, text in natsdeploy.generated().items():
        assert path.read_text() != text, path.name
    assert natsdeploy.main(["--check"]) == 1


def test_compose_conf_reads_every_password_from_the_environment() -> None:
    text = natsdeploy.COMPOSE_CONF.read_text()
    for user in USERS:
        assert f"password: ${password_env(user)}\n" in text, user


def test_helm_values_carry_the_users_and_their_secret() -> None:
    values = yaml.safe_load(natsdeploy.HELM_VALUES.read_text())
    assert values["config"]["merge"]["authorization"] == helm_authorization()
    env = values["container"]["env"]
    for user in USERS:
        ref = env[password_env(user)]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": natsdeploy.HELM_SECRET, "key": user}


def test_compose_services_log_in_as_their_own_nats_user(compose_model: Doc) -> None:
    services = compose_model["services"]
    nats_env = services["nats"]["environment"]
    assert set(nats_env) >= {password_env(user) for user in USERS}
    for name in SERVICES:
        url = urlsplit(services[name]["environment"][f"{name.upper()}_NATS_URL"])
        assert (url.hostname, url.port, url.username) == ("nats", 4222, name)
        assert url.password == nats_env[password_env(name)], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_services_log_in_as_their_own_nats_user(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    common = one(docs, "ConfigMap", "marketplace-common")["data"]
    assert common["NATS_HOST"] == "nats.nats.svc.cluster.local" and common["NATS_PORT"] == "4222"
    for name in SERVICES:
        x = name.upper()
        (container,) = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        ref = env[f"{x}_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": NATS_SECRET, "key": name}
        url = env[f"{x}_NATS_URL"]["value"]
        assert url == f"nats://{name}:$({x}_NATS_PASSWORD)@$(NATS_HOST):$(NATS_PORT)"
        # $(VAR) expands only variables defined before it: the password entry comes first.
        names = [e["name"] for e in container["env"]]
        assert names.index(f"{x}_NATS_PASSWORD") < names.index(f"{x}_NATS_URL")
        config = one(docs, "ConfigMap", f"{name}-config")["data"]
        assert f"{x}_NATS_URL" not in config, "one source for the URL: the env, with credentials"


def _setting(docs: list[Doc], name: str, key: str) -> str | None:
    """The value a service's container gets for `key`: its env, then its ConfigMaps."""
    (container,) = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
    for entry in container.get("env", []):
        if entry["name"] == key:
            return str(entry.get("value"))
    for source in container.get("envFrom", []):
        data = one(docs, "ConfigMap", source["configMapRef"]["name"])["data"]
        if key in data:
            return str(data[key])
    return None


def test_prod_streams_are_r3_and_dev_keeps_the_default(rendered: dict[str, list[Doc]]) -> None:
    for name in SERVICES:
        key = f"{name.upper()}_NATS_STREAM_REPLICAS"
        assert _setting(rendered["prod"], name, key) == "3", name
        assert _setting(rendered["dev"], name, key) is None, name
