"""Regenerate the Python code of ``proto/mlecs/v1/*.proto`` with a pinned grpcio-tools.

Run from anywhere: ``python proto/generate.py`` (or ``python -m proto.generate``).
Generated files land next to their ``.proto`` and are committed;
``tests/proto/test_generated.py`` regenerates into a temporary directory and
demands byte-equality, so an edited ``.proto`` without regenerated code fails.

The generated code embeds the protoc, protobuf and grpcio versions it was made
with, so the output is only reproducible with one grpcio-tools version: the one
pinned here and in ``pyproject.toml``.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

GRPCIO_TOOLS_VERSION = "1.81.1"  # keep equal to the pin in pyproject.toml
REPO_ROOT = Path(__file__).resolve().parents[1]
# Relative to REPO_ROOT: with ``-I.`` generated modules import each other as
# ``from proto.mlecs.v1 import x_pb2``, which resolves with the repo root on sys.path.
PROTOS = ("proto/mlecs/v1/manifest.proto", "proto/mlecs/v1/inference.proto")
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


class GeneratorVersionError(RuntimeError):
    """The installed grpcio-tools is not the pinned one."""


def check_tools_version() -> str:
    """Return the installed grpcio-tools version; raise unless it is the pinned one."""
    try:
        installed = version("grpcio-tools")
    except PackageNotFoundError:
        installed = "not installed"
    if installed != GRPCIO_TOOLS_VERSION:
        raise GeneratorVersionError(
            f"grpcio-tools {installed} found, but generated code is pinned to "
            f"{GRPCIO_TOOLS_VERSION}: pip install 'grpcio-tools=={GRPCIO_TOOLS_VERSION}'"
        )
    return installed


def generated_files(out_dir: Path = REPO_ROOT) -> list[Path]:
    """Paths of every generated file under ``out_dir``, in a fixed order."""
    return [out_dir / (p.removesuffix(".proto") + s) for p in PROTOS for s in SUFFIXES]


def generate(out_dir: Path = REPO_ROOT) -> list[Path]:
    """Run protoc on :data:`PROTOS`, writing into ``out_dir`` (same relative layout).

    Returns
    -------
    list of Path
        The generated files.

    Raises
    ------
    GeneratorVersionError
        When the installed grpcio-tools is not :data:`GRPCIO_TOOLS_VERSION`.
    subprocess.CalledProcessError
        When protoc rejects a ``.proto``.
    """
    check_tools_version()
    import grpc_tools

    # Well-known types (google/protobuf/*.proto) ship inside grpc_tools; the path
    # is only a search path and never appears in the output.
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out = str(Path(out_dir).resolve())
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-I.",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *PROTOS,
    ]
    subprocess.run(cmd, cwd=REPO_ROOT, check=True)
    return generated_files(Path(out_dir))


if __name__ == "__main__":
    for path in generate():
        print(path.relative_to(REPO_ROOT))
