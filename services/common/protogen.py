"""Generate the Python gRPC and protobuf modules from proto/ into gen/.

`python -m services.common.protogen` writes gen/; `--check` regenerates into a
temporary folder and exits 1 when the committed gen/ differs (stale code).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from services.common.extras import missing_extra

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
GEN_DIR = ROOT / "gen"


def generate(out: Path) -> None:
    """Run protoc (from grpcio-tools) on every .proto under proto/ into `out`."""
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ModuleNotFoundError as exc:
        if exc.name != "grpc_tools":
            raise
        raise SystemExit(missing_extra("protoc (grpcio-tools)")) from exc

    sources = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    if not sources:
        raise SystemExit(f"no .proto files under {PROTO_DIR}")
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the message above")
    # protoc writes modules, not packages: make every folder importable.
    root = out / "marketplace"
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()


def _files(root: Path) -> set[Path]:
    return {
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def _differences(a: Path, b: Path) -> list[str]:
    files_a, files_b = _files(a), _files(b)
    diffs = sorted(str(p) for p in files_a ^ files_b)
    for rel in files_a & files_b:
        if not filecmp.cmp(a / rel, b / rel, shallow=False):
            diffs.append(str(rel))
    return diffs


def check() -> list[str]:
    """Return the generated files that differ from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        return _differences(fresh / "marketplace", GEN_DIR / "marketplace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if gen/ is stale")
    ns = parser.parse_args(argv)
    if ns.check:
        stale = check()
        if stale:
            print("gen/ is stale; run `make proto` and commit:", *stale, sep="\n  ")
            return 1
        print("gen/ is up to date")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        shutil.rmtree(GEN_DIR / "marketplace", ignore_errors=True)
        GEN_DIR.mkdir(exist_ok=True)
        shutil.copytree(Path(tmp) / "marketplace", GEN_DIR / "marketplace")
    print(f"generated Python code from {PROTO_DIR} into {GEN_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
