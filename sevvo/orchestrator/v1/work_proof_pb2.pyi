from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetWorkProofKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkProofKey(_message.Message):
    __slots__ = ("key_id", "public_key", "algorithm")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    public_key: bytes
    algorithm: str
    def __init__(self, key_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., algorithm: _Optional[str] = ...) -> None: ...

class GetWorkProofKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[WorkProofKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[WorkProofKey, _Mapping]]] = ...) -> None: ...

class VouchForWorkRequest(_message.Message):
    __slots__ = ("workflow_id", "workflow_type")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_TYPE_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    workflow_type: str
    def __init__(self, workflow_id: _Optional[str] = ..., workflow_type: _Optional[str] = ...) -> None: ...

class VouchForWorkResponse(_message.Message):
    __slots__ = ("proof",)
    PROOF_FIELD_NUMBER: _ClassVar[int]
    proof: str
    def __init__(self, proof: _Optional[str] = ...) -> None: ...
