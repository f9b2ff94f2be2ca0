from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PayloadKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYLOAD_KIND_UNSPECIFIED: _ClassVar[PayloadKind]
    PAYLOAD_KIND_GLOBAL_STATE: _ClassVar[PayloadKind]
    PAYLOAD_KIND_SHARED_DELTA: _ClassVar[PayloadKind]
    PAYLOAD_KIND_ANCHORS: _ClassVar[PayloadKind]
    PAYLOAD_KIND_REPRESENTATIONS: _ClassVar[PayloadKind]
    PAYLOAD_KIND_PROTOTYPES: _ClassVar[PayloadKind]

class SenderRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SENDER_ROLE_UNSPECIFIED: _ClassVar[SenderRole]
    SENDER_ROLE_SERVER: _ClassVar[SenderRole]
    SENDER_ROLE_DEVICE: _ClassVar[SenderRole]
PAYLOAD_KIND_UNSPECIFIED: PayloadKind
PAYLOAD_KIND_GLOBAL_STATE: PayloadKind
PAYLOAD_KIND_SHARED_DELTA: PayloadKind
PAYLOAD_KIND_ANCHORS: PayloadKind
PAYLOAD_KIND_REPRESENTATIONS: PayloadKind
PAYLOAD_KIND_PROTOTYPES: PayloadKind
SENDER_ROLE_UNSPECIFIED: SenderRole
SENDER_ROLE_SERVER: SenderRole
SENDER_ROLE_DEVICE: SenderRole

class TensorSpec(_message.Message):
    __slots__ = ("name", "shape", "dtype")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ...) -> None: ...

class PayloadManifest(_message.Message):
    __slots__ = ("schema_version", "kind", "tensors", "modalities", "modality_counts", "public_ids", "role", "partition_id", "round_token")
    class ModalityCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    MODALITY_COUNTS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_IDS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_TOKEN_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    kind: PayloadKind
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    modalities: _containers.RepeatedScalarFieldContainer[str]
    modality_counts: _containers.ScalarMap[str, int]
    public_ids: _containers.RepeatedScalarFieldContainer[int]
    role: SenderRole
    partition_id: int
    round_token: str
    def __init__(self, schema_version: _Optional[int] = ..., kind: _Optional[_Union[PayloadKind, str]] = ..., tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., modalities: _Optional[_Iterable[str]] = ..., modality_counts: _Optional[_Mapping[str, int]] = ..., public_ids: _Optional[_Iterable[int]] = ..., role: _Optional[_Union[SenderRole, str]] = ..., partition_id: _Optional[int] = ..., round_token: _Optional[str] = ...) -> None: ...
