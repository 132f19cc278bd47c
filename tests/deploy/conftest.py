"""The rendered manifests and the compose model, shared by every deploy test module (they
are defined beside the checks that introduced them, in test_manifests.py)."""

from __future__ import annotations

from tests.deploy.test_manifests import (  # noqa: F401
    compose_bin,
    compose_model,
    kubectl,
    rendered,
)
