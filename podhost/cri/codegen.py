"""Regenerate the Python modules of podhost's protos (`api.proto`, `admin.proto`) with grpcio-tools.

    python -m podhost.cri.codegen [--if-stale]

The protos are compiled with the repository root as the only include path, so their names are
`podhost/cri/api.proto` and the generated imports read `from podhost.cri import api_pb2`: the stubs import
as `podhost.cri.api_pb2` with no sys.path tricks. The generated files are committed; this module is for
whoever changes a proto. It never edits a proto and never runs at import time.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

CRI_DIR = Path(__file__).resolve().parent
PACKAGE_ROOT = CRI_DIR.parent.parent  # the directory holding the `podhost` package
PROTOS = ("api", "admin")
#: Protos of other packages, compiled the same way (paths relative to PACKAGE_ROOT): NRI's messages,
#: gnostic's OpenAPI v2 document (what older kubectl fetches as /openapi/v2), gRPC's health checking
#: protocol (what a grpc probe calls).
OTHER_PROTOS = (
    "podhost/runtime/nri/api.proto",
    "podhost/apiserver/openapiv2.proto",
    "podhost/kubelet/health.proto",
)
#: Of those, the ones with messages only (NRI travels over ttrpc, not gRPC; the health check is one generic
#: call): no _grpc module.
MESSAGE_ONLY = OTHER_PROTOS


def outputs(name: str) -> list[Path]:
    """The files protoc writes for proto `name` (both have services, so both get a _grpc module)."""
    return [CRI_DIR / f"{name}_pb2.py", CRI_DIR / f"{name}_pb2.pyi", CRI_DIR / f"{name}_pb2_grpc.py"]


def is_stale(name: str) -> bool:
    """True when an output is missing or older than its proto (or than api.proto, which admin imports)."""
    sources = [CRI_DIR / f"{name}.proto", CRI_DIR / "api.proto"]
    newest = max(p.stat().st_mtime for p in sources)
    return any(not out.exists() or out.stat().st_mtime < newest for out in outputs(name))


def protoc_args(name: str) -> list[str]:
    """The argument vector for grpc_tools.protoc compiling one proto into CRI_DIR."""
    root = str(PACKAGE_ROOT)
    return [
        "grpc_tools.protoc",
        f"-I{root}",
        f"--python_out={root}",
        f"--pyi_out={root}",
        f"--grpc_python_out={root}",
        f"podhost/cri/{name}.proto",
    ]


def generate(name: str) -> None:
    from grpc_tools import protoc  # dev dependency: imported only when regenerating

    args = protoc_args(name)
    log.info("generating %s: %s", name, " ".join(args))
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed for {name}.proto")


def other_outputs(proto: str) -> list[Path]:
    stem = PACKAGE_ROOT / proto.removesuffix(".proto")
    grpc = [] if proto in MESSAGE_ONLY else [Path(f"{stem}_pb2_grpc.py")]
    return [Path(f"{stem}_pb2.py"), Path(f"{stem}_pb2.pyi"), *grpc]


def generate_other(proto: str, if_stale: bool) -> None:
    """Compile one of OTHER_PROTOS (when stale, with `if_stale`)."""
    from grpc_tools import protoc  # dev dependency: imported only when regenerating

    source = PACKAGE_ROOT / proto
    outs = other_outputs(proto)
    if if_stale and all(o.exists() and o.stat().st_mtime >= source.stat().st_mtime for o in outs):
        return
    args = [a for a in protoc_args("api")[:-1] if not (proto in MESSAGE_ONLY and a.startswith("--grpc"))]
    args += [f"-I{resources.files('grpc_tools') / '_proto'}", proto]  # google/protobuf/any.proto
    log.info("generating %s: %s", proto, " ".join(args))
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed for {proto}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m podhost.cri.codegen", description=__doc__)
    parser.add_argument("--if-stale", action="store_true", help="only regenerate outdated outputs")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in PROTOS:
        if opts.if_stale and not is_stale(name):
            continue
        generate(name)
    for proto in OTHER_PROTOS:
        generate_other(proto, opts.if_stale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
