from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateRequest(_message.Message):
    __slots__ = ("z", "prompt", "max_new_tokens")
    Z_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    z: _containers.RepeatedScalarFieldContainer[float]
    prompt: str
    max_new_tokens: int
    def __init__(self, z: _Optional[_Iterable[float]] = ..., prompt: _Optional[str] = ..., max_new_tokens: _Optional[int] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("text", "model")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    text: str
    model: ModelInfo
    def __init__(self, text: _Optional[str] = ..., model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class ModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("run_name", "round", "method", "dataset", "fused_dim", "max_new_tokens_cap", "max_prompt_chars")
    RUN_NAME_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    FUSED_DIM_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_CAP_FIELD_NUMBER: _ClassVar[int]
    MAX_PROMPT_CHARS_FIELD_NUMBER: _ClassVar[int]
    run_name: str
    round: int
    method: str
    dataset: str
    fused_dim: int
    max_new_tokens_cap: int
    max_prompt_chars: int
    def __init__(self, run_name: _Optional[str] = ..., round: _Optional[int] = ..., method: _Optional[str] = ..., dataset: _Optional[str] = ..., fused_dim: _Optional[int] = ..., max_new_tokens_cap: _Optional[int] = ..., max_prompt_chars: _Optional[int] = ...) -> None: ...
