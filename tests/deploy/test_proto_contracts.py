"""The gRPC and event contracts in proto/ pass `buf lint` and stay wire compatible.

Events stay 7 days in JetStream and replicas of two versions call each other during a
deploy, so a change that breaks the wire (proto/buf.yaml: WIRE_JSON) fails here, against the
previous commit's protos and against the committed baseline (proto/buf.baseline.json, the
contract as of its last deliberate change; `make proto-baseline` writes it). A clone with no
parent commit (a shallow one) has only the baseline to compare with, and says so.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.deploy.test_manifests import ROOT, _run, _tool_missing

PROTO = ROOT / "proto"
BASELINE = PROTO / "buf.baseline.json"


@pytest.fixture(scope="module")
def buf() -> Path:
    found = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    assert found, _tool_missing("buf", "buf-bin==1.75.0")
    return Path(found)


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, timeout=60, check=False)


def previous_protos(into: Path) -> Path | None:
    """proto/ as of HEAD~1, extracted under `into`; None when there is no parent commit."""
    if _git("rev-parse", "--verify", "--quiet", "HEAD~1^{commit}").returncode != 0:
        return None
    archive = _git("archive", "--format=tar", "HEAD~1", "proto")
    if archive.returncode != 0:  # the parent has no proto/ yet
        return None
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    older = into / "proto"
    # buf looks upwards for a buf.yaml; one here keeps it from taking another's (e.g. /tmp).
    if not (older / "buf.yaml").exists():
        (older / "buf.yaml").write_text("version: v2\n")
    return older


def breaking(buf: Path, protos: Path, against: Path) -> subprocess.CompletedProcess[str]:
    return _run([str(buf), "breaking", str(protos), "--against", str(against)])


def test_protos_pass_buf_lint(buf: Path) -> None:
    result = _run([str(buf), "lint", str(PROTO)])
    assert result.returncode == 0, f"buf lint proto:\n{result.stdout}{result.stderr}"


def test_buf_lint_refuses_a_badly_named_message(buf: Path, tmp_path: Path) -> None:
    """The lint exceptions in proto/buf.yaml name two files and three rules, not everything."""
    copy = shutil.copytree(PROTO, tmp_path / "proto")
    events = copy / "marketplace/events/v1/events.proto"
    events.write_text(events.read_text() + "\nmessage order_archived {\n  string ID = 1;\n}\n")
    result = _run([str(buf), "lint", str(copy)])
    assert result.returncode != 0
    assert "order_archived" in result.stdout and "PascalCase" in result.stdout, result.stdout


def test_no_wire_breaking_change_since_the_previous_commit(
    buf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    older = previous_protos(tmp_path)
    against = older or BASELINE
    result = breaking(buf, PROTO, against)
    what = "HEAD~1's proto/" if older else "the committed baseline (this clone has no parent)"
    if older is None:
        with capsys.disabled():
            print(f"\nbuf breaking: compared proto/ with {what}, proto/buf.baseline.json")
    assert result.returncode == 0, (
        f"proto/ breaks the wire against {what}:\n{result.stdout}{result.stderr}"
    )


def test_no_wire_breaking_change_since_the_baseline(buf: Path) -> None:
    result = breaking(buf, PROTO, BASELINE)
    assert result.returncode == 0, (
        "proto/ breaks the wire against proto/buf.baseline.json; add a new field or a v2 "
        f"package instead (or, deliberately, `make proto-baseline`):\n{result.stdout}"
    )


@pytest.mark.parametrize(
    ("file", "old", "new", "needle"),
    [
        ("common/v1/money.proto", "int64 amount = 1;", "string amount = 1;", "changed type"),
        # An event read back from the stream would put its SKU where the product goes.
        ("events/v1/events.proto", "  string sku_id = 1;\n  string product_id = 2;\n",
         "  string product_id = 1;\n  string sku_id = 2;\n", "changed name"),
    ],
    ids=["field-type", "fields-swapped"],
)
def test_buf_breaking_catches_a_wire_change(
    buf: Path, tmp_path: Path, file: str, old: str, new: str, needle: str
) -> None:
    copy = shutil.copytree(PROTO, tmp_path / "proto")
    proto = copy / "marketplace" / file
    text = proto.read_text()
    assert old in text
    proto.write_text(text.replace(old, new, 1))
    result = breaking(buf, copy, BASELINE)
    assert result.returncode != 0
    assert needle in result.stdout, result.stdout
