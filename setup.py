"""Build hook: generate the gRPC stubs from proto/ with grpcio-tools, then build as usual.

The stubs land in gen/seqserve/v1/ (git-ignored) and are installed as the package `seqserve.v1`,
so the import names match the proto package `seqserve.v1`. They are never edited by hand.
Both a regular and an editable install (`pip install -e .`) run this step.
"""

from __future__ import annotations

import pathlib

from setuptools import find_packages, setup

ROOT = pathlib.Path(__file__).parent.resolve()
PROTO_DIR = ROOT / "proto"
GEN_DIR = ROOT / "gen"


def generate_stubs() -> None:
    import grpc_tools
    from grpc_tools import protoc  # build-time dependency, declared in pyproject.toml

    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files under {PROTO_DIR}")
    GEN_DIR.mkdir(exist_ok=True)
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={GEN_DIR}",
        f"--pyi_out={GEN_DIR}",
        f"--grpc_python_out={GEN_DIR}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("grpc_tools.protoc failed on " + " ".join(protos))
    for package in {pathlib.Path(p).parent for p in protos}:
        for parent in [package, *package.parents][:-1]:
            (GEN_DIR / parent / "__init__.py").touch()


# Every setuptools step (egg_info, build_py, editable_wheel) needs gen/seqserve to exist, so the
# stubs are generated before setup() runs rather than in one command's hook.
generate_stubs()

setup(
    packages=[*find_packages(include=["service*", "training*"]), "seqserve", "seqserve.v1", "seqserve.oip"],
    package_dir={"seqserve": "gen/seqserve"},
    package_data={"seqserve.v1": ["*.pyi"], "seqserve.oip": ["*.pyi"]},
)
