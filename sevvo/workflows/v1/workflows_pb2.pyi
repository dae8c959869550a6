from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TestCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TEST_CATEGORY_UNSPECIFIED: _ClassVar[TestCategory]
    TEST_CATEGORY_OK: _ClassVar[TestCategory]
    TEST_CATEGORY_CONNECTION_REFUSED_OR_TIMEOUT: _ClassVar[TestCategory]
    TEST_CATEGORY_PASSWORD_AUTHENTICATION_FAILED: _ClassVar[TestCategory]
    TEST_CATEGORY_SSL_REQUIRED_NOT_OFFERED: _ClassVar[TestCategory]
    TEST_CATEGORY_DATABASE_DOES_NOT_EXIST: _ClassVar[TestCategory]
    TEST_CATEGORY_PERMISSION_DENIED: _ClassVar[TestCategory]
    TEST_CATEGORY_INVALID_STORED_CREDENTIALS: _ClassVar[TestCategory]
    TEST_CATEGORY_OTHER: _ClassVar[TestCategory]
    TEST_CATEGORY_DYNAMIC_STATEMENTS_FAILED: _ClassVar[TestCategory]
    TEST_CATEGORY_WORK_REFUSED: _ClassVar[TestCategory]
    TEST_CATEGORY_SSL_CERTIFICATE_UNVERIFIED: _ClassVar[TestCategory]
    TEST_CATEGORY_DIRECTORY_UNUSABLE: _ClassVar[TestCategory]

class PreviewCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PREVIEW_CATEGORY_UNSPECIFIED: _ClassVar[PreviewCategory]
    PREVIEW_CATEGORY_OK: _ClassVar[PreviewCategory]
    PREVIEW_CATEGORY_QUERY_REJECTED: _ClassVar[PreviewCategory]
    PREVIEW_CATEGORY_QUERY_TIMEOUT: _ClassVar[PreviewCategory]
    PREVIEW_CATEGORY_PERMISSION_DENIED: _ClassVar[PreviewCategory]
    PREVIEW_CATEGORY_QUERY_ERROR: _ClassVar[PreviewCategory]
    PREVIEW_CATEGORY_CONNECTION_REFUSED_OR_TIMEOUT: _ClassVar[PreviewCategory]
    PREVIEW_CATEGORY_PASSWORD_AUTHENTICATION_FAILED: _ClassVar[PreviewCategory]
    PREVIEW_CATEGORY_SSL_REQUIRED_NOT_OFFERED: _ClassVar[PreviewCategory]
    PREVIEW_CATEGORY_DATABASE_DOES_NOT_EXIST: _ClassVar[PreviewCategory]
    PREVIEW_CATEGORY_INVALID_STORED_CREDENTIALS: _ClassVar[PreviewCategory]
    PREVIEW_CATEGORY_OTHER: _ClassVar[PreviewCategory]
    PREVIEW_CATEGORY_CREDENTIALS_TOO_PRIVILEGED: _ClassVar[PreviewCategory]
    PREVIEW_CATEGORY_OVER_COST_BUDGET: _ClassVar[PreviewCategory]
    PREVIEW_CATEGORY_WORK_REFUSED: _ClassVar[PreviewCategory]
    PREVIEW_CATEGORY_SSL_CERTIFICATE_UNVERIFIED: _ClassVar[PreviewCategory]

class PreviewReceiptStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PREVIEW_RECEIPT_STATUS_UNSPECIFIED: _ClassVar[PreviewReceiptStatus]
    PREVIEW_RECEIPT_STATUS_CLEAN: _ClassVar[PreviewReceiptStatus]
    PREVIEW_RECEIPT_STATUS_NOT_CLEAN: _ClassVar[PreviewReceiptStatus]
    PREVIEW_RECEIPT_STATUS_MISSING: _ClassVar[PreviewReceiptStatus]

class RootRotationCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROOT_ROTATION_CATEGORY_UNSPECIFIED: _ClassVar[RootRotationCategory]
    ROOT_ROTATION_CATEGORY_ROTATED: _ClassVar[RootRotationCategory]
    ROOT_ROTATION_CATEGORY_NOT_DYNAMIC: _ClassVar[RootRotationCategory]
    ROOT_ROTATION_CATEGORY_LOGIN_FAILED: _ClassVar[RootRotationCategory]
    ROOT_ROTATION_CATEGORY_UNVERIFIED_RESTORED: _ClassVar[RootRotationCategory]
    ROOT_ROTATION_CATEGORY_UNVERIFIED_NOT_RESTORED: _ClassVar[RootRotationCategory]
    ROOT_ROTATION_CATEGORY_INVALID_STORED_CREDENTIALS: _ClassVar[RootRotationCategory]
    ROOT_ROTATION_CATEGORY_OTHER: _ClassVar[RootRotationCategory]
    ROOT_ROTATION_CATEGORY_ROLE_SHARED: _ClassVar[RootRotationCategory]
    ROOT_ROTATION_CATEGORY_SUPERSEDED: _ClassVar[RootRotationCategory]
    ROOT_ROTATION_CATEGORY_WORK_REFUSED: _ClassVar[RootRotationCategory]

class SyncCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYNC_CATEGORY_UNSPECIFIED: _ClassVar[SyncCategory]
    SYNC_CATEGORY_OK: _ClassVar[SyncCategory]
    SYNC_CATEGORY_QUERY_REJECTED: _ClassVar[SyncCategory]
    SYNC_CATEGORY_SOURCE_QUERY_FAILED: _ClassVar[SyncCategory]
    SYNC_CATEGORY_DESTINATION_FAILED: _ClassVar[SyncCategory]
    SYNC_CATEGORY_DESTINATION_TYPE_MISSING: _ClassVar[SyncCategory]
    SYNC_CATEGORY_SCHEMA_CHANGED: _ClassVar[SyncCategory]
    SYNC_CATEGORY_INVALID_MODEL: _ClassVar[SyncCategory]
    SYNC_CATEGORY_CONNECTION_REFUSED_OR_TIMEOUT: _ClassVar[SyncCategory]
    SYNC_CATEGORY_PASSWORD_AUTHENTICATION_FAILED: _ClassVar[SyncCategory]
    SYNC_CATEGORY_SSL_REQUIRED_NOT_OFFERED: _ClassVar[SyncCategory]
    SYNC_CATEGORY_SSL_CERTIFICATE_UNVERIFIED: _ClassVar[SyncCategory]
    SYNC_CATEGORY_DATABASE_DOES_NOT_EXIST: _ClassVar[SyncCategory]
    SYNC_CATEGORY_PERMISSION_DENIED: _ClassVar[SyncCategory]
    SYNC_CATEGORY_INVALID_STORED_CREDENTIALS: _ClassVar[SyncCategory]
    SYNC_CATEGORY_WORK_REFUSED: _ClassVar[SyncCategory]
    SYNC_CATEGORY_OTHER: _ClassVar[SyncCategory]
    SYNC_CATEGORY_DIRECTORY_UNUSABLE: _ClassVar[SyncCategory]

class SyncLoadMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYNC_LOAD_MODE_UNSPECIFIED: _ClassVar[SyncLoadMode]
    SYNC_LOAD_MODE_FULL_REFRESH: _ClassVar[SyncLoadMode]
    SYNC_LOAD_MODE_INCREMENTAL: _ClassVar[SyncLoadMode]
TEST_CATEGORY_UNSPECIFIED: TestCategory
TEST_CATEGORY_OK: TestCategory
TEST_CATEGORY_CONNECTION_REFUSED_OR_TIMEOUT: TestCategory
TEST_CATEGORY_PASSWORD_AUTHENTICATION_FAILED: TestCategory
TEST_CATEGORY_SSL_REQUIRED_NOT_OFFERED: TestCategory
TEST_CATEGORY_DATABASE_DOES_NOT_EXIST: TestCategory
TEST_CATEGORY_PERMISSION_DENIED: TestCategory
TEST_CATEGORY_INVALID_STORED_CREDENTIALS: TestCategory
TEST_CATEGORY_OTHER: TestCategory
TEST_CATEGORY_DYNAMIC_STATEMENTS_FAILED: TestCategory
TEST_CATEGORY_WORK_REFUSED: TestCategory
TEST_CATEGORY_SSL_CERTIFICATE_UNVERIFIED: TestCategory
TEST_CATEGORY_DIRECTORY_UNUSABLE: TestCategory
PREVIEW_CATEGORY_UNSPECIFIED: PreviewCategory
PREVIEW_CATEGORY_OK: PreviewCategory
PREVIEW_CATEGORY_QUERY_REJECTED: PreviewCategory
PREVIEW_CATEGORY_QUERY_TIMEOUT: PreviewCategory
PREVIEW_CATEGORY_PERMISSION_DENIED: PreviewCategory
PREVIEW_CATEGORY_QUERY_ERROR: PreviewCategory
PREVIEW_CATEGORY_CONNECTION_REFUSED_OR_TIMEOUT: PreviewCategory
PREVIEW_CATEGORY_PASSWORD_AUTHENTICATION_FAILED: PreviewCategory
PREVIEW_CATEGORY_SSL_REQUIRED_NOT_OFFERED: PreviewCategory
PREVIEW_CATEGORY_DATABASE_DOES_NOT_EXIST: PreviewCategory
PREVIEW_CATEGORY_INVALID_STORED_CREDENTIALS: PreviewCategory
PREVIEW_CATEGORY_OTHER: PreviewCategory
PREVIEW_CATEGORY_CREDENTIALS_TOO_PRIVILEGED: PreviewCategory
PREVIEW_CATEGORY_OVER_COST_BUDGET: PreviewCategory
PREVIEW_CATEGORY_WORK_REFUSED: PreviewCategory
PREVIEW_CATEGORY_SSL_CERTIFICATE_UNVERIFIED: PreviewCategory
PREVIEW_RECEIPT_STATUS_UNSPECIFIED: PreviewReceiptStatus
PREVIEW_RECEIPT_STATUS_CLEAN: PreviewReceiptStatus
PREVIEW_RECEIPT_STATUS_NOT_CLEAN: PreviewReceiptStatus
PREVIEW_RECEIPT_STATUS_MISSING: PreviewReceiptStatus
ROOT_ROTATION_CATEGORY_UNSPECIFIED: RootRotationCategory
ROOT_ROTATION_CATEGORY_ROTATED: RootRotationCategory
ROOT_ROTATION_CATEGORY_NOT_DYNAMIC: RootRotationCategory
ROOT_ROTATION_CATEGORY_LOGIN_FAILED: RootRotationCategory
ROOT_ROTATION_CATEGORY_UNVERIFIED_RESTORED: RootRotationCategory
ROOT_ROTATION_CATEGORY_UNVERIFIED_NOT_RESTORED: RootRotationCategory
ROOT_ROTATION_CATEGORY_INVALID_STORED_CREDENTIALS: RootRotationCategory
ROOT_ROTATION_CATEGORY_OTHER: RootRotationCategory
ROOT_ROTATION_CATEGORY_ROLE_SHARED: RootRotationCategory
ROOT_ROTATION_CATEGORY_SUPERSEDED: RootRotationCategory
ROOT_ROTATION_CATEGORY_WORK_REFUSED: RootRotationCategory
SYNC_CATEGORY_UNSPECIFIED: SyncCategory
SYNC_CATEGORY_OK: SyncCategory
SYNC_CATEGORY_QUERY_REJECTED: SyncCategory
SYNC_CATEGORY_SOURCE_QUERY_FAILED: SyncCategory
SYNC_CATEGORY_DESTINATION_FAILED: SyncCategory
SYNC_CATEGORY_DESTINATION_TYPE_MISSING: SyncCategory
SYNC_CATEGORY_SCHEMA_CHANGED: SyncCategory
SYNC_CATEGORY_INVALID_MODEL: SyncCategory
SYNC_CATEGORY_CONNECTION_REFUSED_OR_TIMEOUT: SyncCategory
SYNC_CATEGORY_PASSWORD_AUTHENTICATION_FAILED: SyncCategory
SYNC_CATEGORY_SSL_REQUIRED_NOT_OFFERED: SyncCategory
SYNC_CATEGORY_SSL_CERTIFICATE_UNVERIFIED: SyncCategory
SYNC_CATEGORY_DATABASE_DOES_NOT_EXIST: SyncCategory
SYNC_CATEGORY_PERMISSION_DENIED: SyncCategory
SYNC_CATEGORY_INVALID_STORED_CREDENTIALS: SyncCategory
SYNC_CATEGORY_WORK_REFUSED: SyncCategory
SYNC_CATEGORY_OTHER: SyncCategory
SYNC_CATEGORY_DIRECTORY_UNUSABLE: SyncCategory
SYNC_LOAD_MODE_UNSPECIFIED: SyncLoadMode
SYNC_LOAD_MODE_FULL_REFRESH: SyncLoadMode
SYNC_LOAD_MODE_INCREMENTAL: SyncLoadMode

class CredentialTestInput(_message.Message):
    __slots__ = ("run_id", "connection_id", "draft_id", "proof")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    DRAFT_ID_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    connection_id: str
    draft_id: str
    proof: str
    def __init__(self, run_id: _Optional[str] = ..., connection_id: _Optional[str] = ..., draft_id: _Optional[str] = ..., proof: _Optional[str] = ...) -> None: ...

class CredentialTestResult(_message.Message):
    __slots__ = ("category", "message", "duration_ms", "server_version")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    category: TestCategory
    message: str
    duration_ms: int
    server_version: str
    def __init__(self, category: _Optional[_Union[TestCategory, str]] = ..., message: _Optional[str] = ..., duration_ms: _Optional[int] = ..., server_version: _Optional[str] = ...) -> None: ...

class PreviewReceipt(_message.Message):
    __slots__ = ("status", "transaction_id_assigned", "advisory_locks_held", "role_sessions_ended", "backend_terminated", "backend_outlived_call")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_ASSIGNED_FIELD_NUMBER: _ClassVar[int]
    ADVISORY_LOCKS_HELD_FIELD_NUMBER: _ClassVar[int]
    ROLE_SESSIONS_ENDED_FIELD_NUMBER: _ClassVar[int]
    BACKEND_TERMINATED_FIELD_NUMBER: _ClassVar[int]
    BACKEND_OUTLIVED_CALL_FIELD_NUMBER: _ClassVar[int]
    status: PreviewReceiptStatus
    transaction_id_assigned: bool
    advisory_locks_held: int
    role_sessions_ended: int
    backend_terminated: bool
    backend_outlived_call: bool
    def __init__(self, status: _Optional[_Union[PreviewReceiptStatus, str]] = ..., transaction_id_assigned: _Optional[bool] = ..., advisory_locks_held: _Optional[int] = ..., role_sessions_ended: _Optional[int] = ..., backend_terminated: _Optional[bool] = ..., backend_outlived_call: _Optional[bool] = ...) -> None: ...

class PreviewQueryInput(_message.Message):
    __slots__ = ("run_id", "connection_id", "sql", "proof")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    connection_id: str
    sql: str
    proof: str
    def __init__(self, run_id: _Optional[str] = ..., connection_id: _Optional[str] = ..., sql: _Optional[str] = ..., proof: _Optional[str] = ...) -> None: ...

class PreviewColumn(_message.Message):
    __slots__ = ("name", "type_name")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    type_name: str
    def __init__(self, name: _Optional[str] = ..., type_name: _Optional[str] = ...) -> None: ...

class PreviewCell(_message.Message):
    __slots__ = ("text", "is_null", "truncated")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IS_NULL_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    text: str
    is_null: bool
    truncated: bool
    def __init__(self, text: _Optional[str] = ..., is_null: _Optional[bool] = ..., truncated: _Optional[bool] = ...) -> None: ...

class PreviewRow(_message.Message):
    __slots__ = ("cells",)
    CELLS_FIELD_NUMBER: _ClassVar[int]
    cells: _containers.RepeatedCompositeFieldContainer[PreviewCell]
    def __init__(self, cells: _Optional[_Iterable[_Union[PreviewCell, _Mapping]]] = ...) -> None: ...

class PreviewQueryResult(_message.Message):
    __slots__ = ("category", "message", "sqlstate", "position", "columns", "rows", "truncated", "columns_truncated", "duration_ms", "receipt", "estimated_cost")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SQLSTATE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_FIELD_NUMBER: _ClassVar[int]
    category: PreviewCategory
    message: str
    sqlstate: str
    position: int
    columns: _containers.RepeatedCompositeFieldContainer[PreviewColumn]
    rows: _containers.RepeatedCompositeFieldContainer[PreviewRow]
    truncated: bool
    columns_truncated: bool
    duration_ms: int
    receipt: PreviewReceipt
    estimated_cost: float
    def __init__(self, category: _Optional[_Union[PreviewCategory, str]] = ..., message: _Optional[str] = ..., sqlstate: _Optional[str] = ..., position: _Optional[int] = ..., columns: _Optional[_Iterable[_Union[PreviewColumn, _Mapping]]] = ..., rows: _Optional[_Iterable[_Union[PreviewRow, _Mapping]]] = ..., truncated: _Optional[bool] = ..., columns_truncated: _Optional[bool] = ..., duration_ms: _Optional[int] = ..., receipt: _Optional[_Union[PreviewReceipt, _Mapping]] = ..., estimated_cost: _Optional[float] = ...) -> None: ...

class RootRotationInput(_message.Message):
    __slots__ = ("run_id", "connection_id", "proof")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    connection_id: str
    proof: str
    def __init__(self, run_id: _Optional[str] = ..., connection_id: _Optional[str] = ..., proof: _Optional[str] = ...) -> None: ...

class RootRotationResult(_message.Message):
    __slots__ = ("category", "message", "recovered", "duration_ms")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RECOVERED_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    category: RootRotationCategory
    message: str
    recovered: bool
    duration_ms: int
    def __init__(self, category: _Optional[_Union[RootRotationCategory, str]] = ..., message: _Optional[str] = ..., recovered: _Optional[bool] = ..., duration_ms: _Optional[int] = ...) -> None: ...

class SyncInput(_message.Message):
    __slots__ = ("run_id", "model_id", "source_connection_id", "sql", "destination_connection_id", "destination_schema", "destination_table", "load_mode", "cursor_column", "primary_key", "allow_schema_evolution", "proof")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_TABLE_FIELD_NUMBER: _ClassVar[int]
    LOAD_MODE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_COLUMN_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_KEY_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SCHEMA_EVOLUTION_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    model_id: str
    source_connection_id: str
    sql: str
    destination_connection_id: str
    destination_schema: str
    destination_table: str
    load_mode: SyncLoadMode
    cursor_column: str
    primary_key: _containers.RepeatedScalarFieldContainer[str]
    allow_schema_evolution: bool
    proof: str
    def __init__(self, run_id: _Optional[str] = ..., model_id: _Optional[str] = ..., source_connection_id: _Optional[str] = ..., sql: _Optional[str] = ..., destination_connection_id: _Optional[str] = ..., destination_schema: _Optional[str] = ..., destination_table: _Optional[str] = ..., load_mode: _Optional[_Union[SyncLoadMode, str]] = ..., cursor_column: _Optional[str] = ..., primary_key: _Optional[_Iterable[str]] = ..., allow_schema_evolution: _Optional[bool] = ..., proof: _Optional[str] = ...) -> None: ...

class SyncResult(_message.Message):
    __slots__ = ("category", "message", "sqlstate", "rows", "bytes", "duration_ms", "schema_fingerprint", "created_table", "schema_changed", "full_reload", "attempt")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SQLSTATE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CREATED_TABLE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_CHANGED_FIELD_NUMBER: _ClassVar[int]
    FULL_RELOAD_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    category: SyncCategory
    message: str
    sqlstate: str
    rows: int
    bytes: int
    duration_ms: int
    schema_fingerprint: str
    created_table: bool
    schema_changed: bool
    full_reload: bool
    attempt: int
    def __init__(self, category: _Optional[_Union[SyncCategory, str]] = ..., message: _Optional[str] = ..., sqlstate: _Optional[str] = ..., rows: _Optional[int] = ..., bytes: _Optional[int] = ..., duration_ms: _Optional[int] = ..., schema_fingerprint: _Optional[str] = ..., created_table: _Optional[bool] = ..., schema_changed: _Optional[bool] = ..., full_reload: _Optional[bool] = ..., attempt: _Optional[int] = ...) -> None: ...
