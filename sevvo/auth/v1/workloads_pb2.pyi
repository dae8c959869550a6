import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkloadState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKLOAD_STATE_UNSPECIFIED: _ClassVar[WorkloadState]
    WORKLOAD_STATE_ACTIVE: _ClassVar[WorkloadState]
    WORKLOAD_STATE_REVOKED: _ClassVar[WorkloadState]
WORKLOAD_STATE_UNSPECIFIED: WorkloadState
WORKLOAD_STATE_ACTIVE: WorkloadState
WORKLOAD_STATE_REVOKED: WorkloadState

class WorkloadGrant(_message.Message):
    __slots__ = ("connection_id", "role")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    role: str
    def __init__(self, connection_id: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class Workload(_message.Message):
    __slots__ = ("id", "org_id", "display_name", "description", "grants", "max_ttl_seconds", "state", "create_time", "update_time", "revoke_time", "creator_user_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    MAX_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATOR_USER_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    org_id: str
    display_name: str
    description: str
    grants: _containers.RepeatedCompositeFieldContainer[WorkloadGrant]
    max_ttl_seconds: int
    state: WorkloadState
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    revoke_time: _timestamp_pb2.Timestamp
    creator_user_id: str
    def __init__(self, id: _Optional[str] = ..., org_id: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., grants: _Optional[_Iterable[_Union[WorkloadGrant, _Mapping]]] = ..., max_ttl_seconds: _Optional[int] = ..., state: _Optional[_Union[WorkloadState, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., creator_user_id: _Optional[str] = ...) -> None: ...

class CreateWorkloadRequest(_message.Message):
    __slots__ = ("display_name", "description", "grants", "max_ttl_seconds")
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    MAX_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    display_name: str
    description: str
    grants: _containers.RepeatedCompositeFieldContainer[WorkloadGrant]
    max_ttl_seconds: int
    def __init__(self, display_name: _Optional[str] = ..., description: _Optional[str] = ..., grants: _Optional[_Iterable[_Union[WorkloadGrant, _Mapping]]] = ..., max_ttl_seconds: _Optional[int] = ...) -> None: ...

class CreateWorkloadResponse(_message.Message):
    __slots__ = ("workload", "workload_token")
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workload: Workload
    workload_token: str
    def __init__(self, workload: _Optional[_Union[Workload, _Mapping]] = ..., workload_token: _Optional[str] = ...) -> None: ...

class GetWorkloadRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListWorkloadsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWorkloadsResponse(_message.Message):
    __slots__ = ("workloads", "next_page_token")
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workloads: _containers.RepeatedCompositeFieldContainer[Workload]
    next_page_token: str
    def __init__(self, workloads: _Optional[_Iterable[_Union[Workload, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WorkloadUpdate(_message.Message):
    __slots__ = ("display_name", "description", "grants", "max_ttl_seconds")
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    MAX_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    display_name: str
    description: str
    grants: _containers.RepeatedCompositeFieldContainer[WorkloadGrant]
    max_ttl_seconds: int
    def __init__(self, display_name: _Optional[str] = ..., description: _Optional[str] = ..., grants: _Optional[_Iterable[_Union[WorkloadGrant, _Mapping]]] = ..., max_ttl_seconds: _Optional[int] = ...) -> None: ...

class UpdateWorkloadRequest(_message.Message):
    __slots__ = ("id", "workload", "update_mask")
    ID_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    id: str
    workload: WorkloadUpdate
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, id: _Optional[str] = ..., workload: _Optional[_Union[WorkloadUpdate, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class RevokeWorkloadRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...
