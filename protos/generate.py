"""Generate Python messages, gRPC stubs and typed stubs from the protos.

    python protos/generate.py           write the generated tree
    python protos/generate.py --check   fail when the committed tree differs from the protos

Each root pairs a folder of .proto files with the Python source folder its code goes to.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

REPO = Path(__file__).resolve().parent.parent
WELL_KNOWN = Path(grpc_tools.__file__).parent / "_proto"
BIN = Path(sys.executable).parent  # mypy-protobuf's plugins are installed beside the interpreter

# (proto root, output root, top-level Python packages the output owns)
ROOTS = [
    (REPO / "protos", REPO / "libs/contracts/src", ["collabnet"]),
    (REPO / "libs/kit/tests/protos", REPO / "libs/kit/tests", ["collabnet"]),
]


def generate(proto_root: Path, out: Path) -> None:
    files = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{WELL_KNOWN}",
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed for {proto_root}")
    # Regular packages below the top level; ``collabnet`` itself stays a namespace so the
    # contracts and test-only protos can both live under it.
    for package_dir in {p.parent for p in out.rglob("*_pb2.py")}:
        node = package_dir
        while node.parent != out:
            (node / "__init__.py").touch()
            node = node.parent


def generated_files(root: Path, packages: list[str]) -> set[Path]:
    found: set[Path] = set()
    for package in packages:
        for path in (root / package).rglob("*"):
            if path.is_file() and (path.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"))):
                found.add(path.relative_to(root))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    check = parser.parse_args().check
    stale: list[str] = []
    for proto_root, out, packages in ROOTS:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp)
            generate(proto_root, fresh)
            want = generated_files(fresh, packages)
            have = generated_files(out, packages)
            for rel in sorted(want | have):
                if rel in want and rel in have and filecmp.cmp(fresh / rel, out / rel, shallow=False):
                    continue
                if check:
                    stale.append(str((out / rel).relative_to(REPO)))
                elif rel in want:
                    # Only changed files are replaced, each in one step: a process importing the
                    # contracts meanwhile never sees a file missing or half written.
                    target = out / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    for package in rel.parents[:-2]:  # every package below the top-level namespace
                        (out / package / "__init__.py").touch()
                    partial = target.with_name(target.name + ".partial")
                    shutil.copyfile(fresh / rel, partial)
                    partial.replace(target)
                else:
                    (out / rel).unlink()
    if stale:
        print("generated code is out of date with the protos; run `make proto`:", file=sys.stderr)
        for name in stale:
            print(f"  {name}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
