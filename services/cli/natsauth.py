"""NATS users and permissions: the one definition every NATS configuration is made from.

The embedded server, the loopback cluster (natsserver, natscluster), compose's
`deploy/nats/nats.conf` and the Helm values' auth blocks (natsdeploy) all render
`authorization()` below; only where each password comes from differs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The user the CLI, tests and operators connect as: may do anything.
ADMIN_USER = "admin"
# Subjects each service may publish (its own events); analytics publishes none.
PUBLISHES: Mapping[str, tuple[str, ...]] = {
    "orders": ("orders.>",),
    "payments": ("payments.>",),
    "membership": ("membership.>",),
    "analytics": (),
}
USERS = (*PUBLISHES, ADMIN_USER)
# JetStream plumbing every service needs: the API (streams, consumers, pull requests),
# acks of what it consumed, and replies to its own requests.
JS_PLUMBING = ("$JS.API.>", "$JS.ACK.>", "_INBOX.>")
# ...but not the API calls that destroy events: no service deletes or purges a stream, so a
# compromised one cannot erase another's history either.
JS_DENIED = ("$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.MSG.DELETE.>")
# A service receives only through its JetStream pull consumers, whose deliveries (and the
# API's replies) arrive on its _INBOX; it never subscribes to event subjects directly.
SUBSCRIBES = ("_INBOX.>",)


@dataclass(frozen=True)
class EnvRef:
    """A password the server reads from its environment (never written into a file)."""

    name: str


Password = str | EnvRef


def password_env(user: str) -> str:
    """The environment variable that carries `user`'s password to a server (compose, Helm)."""
    return f"NATS_{user.upper()}_PASSWORD"


def permissions(user: str) -> dict[str, Any] | None:
    """What `user` may publish and subscribe to; None for the admin (everything)."""
    if user == ADMIN_USER:
        return None
    return {
        "publish": {"allow": [*PUBLISHES[user], *JS_PLUMBING], "deny": list(JS_DENIED)},
        "subscribe": {"allow": list(SUBSCRIBES)},
    }


def authorization(passwords: Mapping[str, Password]) -> dict[str, Any]:
    """The `authorization` block as data: one entry per user in `passwords`, in USERS order."""
    unknown = set(passwords) - set(USERS)
    if unknown:
        raise ValueError(f"unknown NATS users: {sorted(unknown)}")
    users = []
    for user in (u for u in USERS if u in passwords):
        entry: dict[str, Any] = {"user": user, "password": passwords[user]}
        if (allowed := permissions(user)) is not None:
            entry["permissions"] = allowed
        users.append(entry)
    return {"users": users}


def env_passwords() -> dict[str, Password]:
    """Every user, each with its password read from the server's environment."""
    return {user: EnvRef(password_env(user)) for user in USERS}


def conf_value(value: Any, indent: str = "") -> str:
    """`value` in nats-server's config syntax: strings quoted (so `$JS...` is no variable),
    EnvRef as a bare `$VAR`, which the server resolves from its environment at start."""
    inner = indent + "  "
    if isinstance(value, EnvRef):
        return f"${value.name}"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            return "[" + ", ".join(conf_value(v) for v in value) + "]"
        return "[\n" + "".join(f"{inner}{conf_value(v, inner)}\n" for v in value) + f"{indent}]"
    if isinstance(value, dict):
        body = "".join(f"{inner}{k}: {conf_value(v, inner)}\n" for k, v in value.items())
        return "{\n" + body + indent + "}"
    raise TypeError(f"no nats config form for {value!r}")


def authorization_conf(passwords: Mapping[str, Password]) -> str:
    """The `authorization { ... }` block of a nats-server config file."""
    return f"authorization {conf_value(authorization(passwords))}\n"


def helm_authorization() -> dict[str, Any]:
    """The authorization block for the Helm chart's `config.merge`: the chart writes
    `<< $VAR >>` unquoted, so the server reads each password from its environment."""
    block = authorization(env_passwords())
    for entry in block["users"]:
        entry["password"] = f"<< ${entry['password'].name} >>"
    return block
