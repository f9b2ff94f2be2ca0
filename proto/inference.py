"""The ``mlecs.v1.CloudInference`` service: a thin face over the generated gRPC code.

Only this module (with the rest of ``proto/``) imports the generated ``*_pb2``
modules; the inference server and client use the names below.
"""

from __future__ import annotations

import grpc
import numpy as np

from proto.mlecs.v1 import inference_pb2 as _pb
from proto.mlecs.v1 import inference_pb2_grpc as _pb_grpc

GenerateRequest = _pb.GenerateRequest
GenerateResponse = _pb.GenerateResponse
ModelInfo = _pb.ModelInfo
ModelInfoRequest = _pb.ModelInfoRequest
CloudInferenceServicer = _pb_grpc.CloudInferenceServicer
CloudInferenceStub = _pb_grpc.CloudInferenceStub


def add_servicer(servicer: CloudInferenceServicer, server: grpc.Server) -> None:
    """Register ``servicer`` as the ``CloudInference`` service of ``server``."""
    _pb_grpc.add_CloudInferenceServicer_to_server(servicer, server)


def generate_request(z: np.ndarray, prompt: str = "", max_new_tokens: int = 0) -> GenerateRequest:
    """A ``GenerateRequest`` for one ``(F,)`` fused representation."""
    return GenerateRequest(
        z=np.asarray(z, np.float32).ravel().tolist(), prompt=prompt, max_new_tokens=max_new_tokens
    )
