"""The committed generated code is exactly what protoc makes of the committed .proto files."""

from __future__ import annotations

from pathlib import Path

import pytest

from proto.generate import (
    GRPCIO_TOOLS_VERSION,
    REPO_ROOT,
    GeneratorVersionError,
    check_tools_version,
    generate,
    generated_files,
)


def test_pinned_grpcio_tools_installed():
    try:
        check_tools_version()
    except GeneratorVersionError as err:
        pytest.fail(f"{err} (the generated-code check needs the pinned version)")


def test_generated_code_matches_proto(tmp_path: Path):
    check_tools_version()
    fresh = generate(tmp_path)
    committed = generated_files(REPO_ROOT)
    assert [p.relative_to(tmp_path) for p in fresh] == [p.relative_to(REPO_ROOT) for p in committed]
    stale = [
        str(c.relative_to(REPO_ROOT))
        for f, c in zip(fresh, committed, strict=True)
        if not c.exists() or f.read_bytes() != c.read_bytes()
    ]
    assert not stale, (
        f"generated code differs from the .proto files: {stale}; "
        f"run `python proto/generate.py` with grpcio-tools=={GRPCIO_TOOLS_VERSION}"
    )


def test_generated_modules_import_each_other():
    from proto.mlecs.v1 import inference_pb2, inference_pb2_grpc, manifest_pb2

    # protoc ran with -I. from the repo root: generated imports go through `proto.mlecs.v1`.
    assert inference_pb2_grpc.proto_dot_mlecs_dot_v1_dot_inference__pb2 is inference_pb2
    assert manifest_pb2.PayloadManifest.DESCRIPTOR.full_name == "mlecs.v1.PayloadManifest"
    assert inference_pb2.DESCRIPTOR.services_by_name["CloudInference"].full_name == (
        "mlecs.v1.CloudInference"
    )
