import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from sevvo.workflows.v1 import workflows_pb2 as _workflows_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_KIND_UNSPECIFIED: _ClassVar[RunKind]
    RUN_KIND_CREDENTIAL_TEST: _ClassVar[RunKind]
    RUN_KIND_PREVIEW: _ClassVar[RunKind]
    RUN_KIND_ROOT_ROTATION: _ClassVar[RunKind]
    RUN_KIND_SYNC: _ClassVar[RunKind]

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_SUCCEEDED: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]
    RUN_STATE_TIMED_OUT: _ClassVar[RunState]
RUN_KIND_UNSPECIFIED: RunKind
RUN_KIND_CREDENTIAL_TEST: RunKind
RUN_KIND_PREVIEW: RunKind
RUN_KIND_ROOT_ROTATION: RunKind
RUN_KIND_SYNC: RunKind
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_SUCCEEDED: RunState
RUN_STATE_FAILED: RunState
RUN_STATE_TIMED_OUT: RunState

class Run(_message.Message):
    __slots__ = ("id", "kind", "state", "connection_id", "draft_id", "outcome_category", "message", "start_time", "finish_time", "duration_ms", "row_count", "truncated", "creator", "model_id", "sync")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    DRAFT_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    CREATOR_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: RunKind
    state: RunState
    connection_id: str
    draft_id: str
    outcome_category: str
    message: str
    start_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    duration_ms: int
    row_count: int
    truncated: bool
    creator: str
    model_id: str
    sync: _workflows_pb2.SyncResult
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[RunKind, str]] = ..., state: _Optional[_Union[RunState, str]] = ..., connection_id: _Optional[str] = ..., draft_id: _Optional[str] = ..., outcome_category: _Optional[str] = ..., message: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_ms: _Optional[int] = ..., row_count: _Optional[int] = ..., truncated: _Optional[bool] = ..., creator: _Optional[str] = ..., model_id: _Optional[str] = ..., sync: _Optional[_Union[_workflows_pb2.SyncResult, _Mapping]] = ...) -> None: ...

class PreviewQueryRequest(_message.Message):
    __slots__ = ("connection_id", "sql")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    sql: str
    def __init__(self, connection_id: _Optional[str] = ..., sql: _Optional[str] = ...) -> None: ...

class PreviewQueryResponse(_message.Message):
    __slots__ = ("run", "result")
    RUN_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    run: Run
    result: _workflows_pb2.PreviewQueryResult
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ..., result: _Optional[_Union[_workflows_pb2.PreviewQueryResult, _Mapping]] = ...) -> None: ...

class TestConnectionRequest(_message.Message):
    __slots__ = ("connection_id", "draft_id")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    DRAFT_ID_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    draft_id: str
    def __init__(self, connection_id: _Optional[str] = ..., draft_id: _Optional[str] = ...) -> None: ...

class PrepareOrgNamespaceRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PrepareOrgNamespaceResponse(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class RotateRootCredentialsRequest(_message.Message):
    __slots__ = ("connection_id",)
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    def __init__(self, connection_id: _Optional[str] = ...) -> None: ...

class SetRootRotationScheduleRequest(_message.Message):
    __slots__ = ("connection_id", "interval")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    interval: _duration_pb2.Duration
    def __init__(self, connection_id: _Optional[str] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RootRotationSchedule(_message.Message):
    __slots__ = ("connection_id", "interval", "next_rotation_time")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    NEXT_ROTATION_TIME_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    interval: _duration_pb2.Duration
    next_rotation_time: _timestamp_pb2.Timestamp
    def __init__(self, connection_id: _Optional[str] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., next_rotation_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetRootRotationScheduleRequest(_message.Message):
    __slots__ = ("connection_id",)
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    def __init__(self, connection_id: _Optional[str] = ...) -> None: ...

class DeleteRootRotationScheduleRequest(_message.Message):
    __slots__ = ("connection_id",)
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    def __init__(self, connection_id: _Optional[str] = ...) -> None: ...

class DeleteRootRotationScheduleResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class WaitRunRequest(_message.Message):
    __slots__ = ("id", "timeout")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    id: str
    timeout: _duration_pb2.Duration
    def __init__(self, id: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "model_id", "connection_id")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    model_id: str
    connection_id: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., model_id: _Optional[str] = ..., connection_id: _Optional[str] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetPayloadKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PayloadKey(_message.Message):
    __slots__ = ("key_id", "key")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    key: bytes
    def __init__(self, key_id: _Optional[str] = ..., key: _Optional[bytes] = ...) -> None: ...

class GetPayloadKeysResponse(_message.Message):
    __slots__ = ("keys", "current_key_id")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[PayloadKey]
    current_key_id: str
    def __init__(self, keys: _Optional[_Iterable[_Union[PayloadKey, _Mapping]]] = ..., current_key_id: _Optional[str] = ...) -> None: ...

class RotatePayloadKeyRequest(_message.Message):
    __slots__ = ("revoked_deployment_id",)
    REVOKED_DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    revoked_deployment_id: str
    def __init__(self, revoked_deployment_id: _Optional[str] = ...) -> None: ...

class RotatePayloadKeyResponse(_message.Message):
    __slots__ = ("current_key_id", "previous_key_id", "rotated", "current_since_time")
    CURRENT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ROTATED_FIELD_NUMBER: _ClassVar[int]
    CURRENT_SINCE_TIME_FIELD_NUMBER: _ClassVar[int]
    current_key_id: str
    previous_key_id: str
    rotated: bool
    current_since_time: _timestamp_pb2.Timestamp
    def __init__(self, current_key_id: _Optional[str] = ..., previous_key_id: _Optional[str] = ..., rotated: _Optional[bool] = ..., current_since_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
