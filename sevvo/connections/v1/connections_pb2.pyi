import datetime

from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConnectionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONNECTION_TYPE_UNSPECIFIED: _ClassVar[ConnectionType]
    CONNECTION_TYPE_POSTGRES: _ClassVar[ConnectionType]
    CONNECTION_TYPE_PARQUET_DIRECTORY: _ClassVar[ConnectionType]

class ConnectionPurpose(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONNECTION_PURPOSE_UNSPECIFIED: _ClassVar[ConnectionPurpose]
    CONNECTION_PURPOSE_SOURCE: _ClassVar[ConnectionPurpose]
    CONNECTION_PURPOSE_DESTINATION: _ClassVar[ConnectionPurpose]
    CONNECTION_PURPOSE_INCREMENTAL_DESTINATION: _ClassVar[ConnectionPurpose]

class SslMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SSL_MODE_UNSPECIFIED: _ClassVar[SslMode]
    SSL_MODE_DISABLE: _ClassVar[SslMode]
    SSL_MODE_REQUIRE: _ClassVar[SslMode]
    SSL_MODE_VERIFY_CA: _ClassVar[SslMode]
    SSL_MODE_VERIFY_FULL: _ClassVar[SslMode]

class CredentialMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CREDENTIAL_MODE_UNSPECIFIED: _ClassVar[CredentialMode]
    CREDENTIAL_MODE_FIELDS: _ClassVar[CredentialMode]
    CREDENTIAL_MODE_DSN: _ClassVar[CredentialMode]
    CREDENTIAL_MODE_DYNAMIC: _ClassVar[CredentialMode]

class ConnectionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONNECTION_STATUS_UNSPECIFIED: _ClassVar[ConnectionStatus]
    CONNECTION_STATUS_PENDING: _ClassVar[ConnectionStatus]
    CONNECTION_STATUS_CONNECTED: _ClassVar[ConnectionStatus]
    CONNECTION_STATUS_ERROR: _ClassVar[ConnectionStatus]

class RotationOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROTATION_OUTCOME_UNSPECIFIED: _ClassVar[RotationOutcome]
    ROTATION_OUTCOME_SUCCEEDED: _ClassVar[RotationOutcome]
    ROTATION_OUTCOME_FAILED: _ClassVar[RotationOutcome]

class LeaseState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEASE_STATE_UNSPECIFIED: _ClassVar[LeaseState]
    LEASE_STATE_CREATING: _ClassVar[LeaseState]
    LEASE_STATE_ACTIVE: _ClassVar[LeaseState]
    LEASE_STATE_REVOKE_REQUESTED: _ClassVar[LeaseState]
    LEASE_STATE_REVOKING: _ClassVar[LeaseState]
    LEASE_STATE_REVOKED: _ClassVar[LeaseState]
    LEASE_STATE_FAILING: _ClassVar[LeaseState]
CONNECTION_TYPE_UNSPECIFIED: ConnectionType
CONNECTION_TYPE_POSTGRES: ConnectionType
CONNECTION_TYPE_PARQUET_DIRECTORY: ConnectionType
CONNECTION_PURPOSE_UNSPECIFIED: ConnectionPurpose
CONNECTION_PURPOSE_SOURCE: ConnectionPurpose
CONNECTION_PURPOSE_DESTINATION: ConnectionPurpose
CONNECTION_PURPOSE_INCREMENTAL_DESTINATION: ConnectionPurpose
SSL_MODE_UNSPECIFIED: SslMode
SSL_MODE_DISABLE: SslMode
SSL_MODE_REQUIRE: SslMode
SSL_MODE_VERIFY_CA: SslMode
SSL_MODE_VERIFY_FULL: SslMode
CREDENTIAL_MODE_UNSPECIFIED: CredentialMode
CREDENTIAL_MODE_FIELDS: CredentialMode
CREDENTIAL_MODE_DSN: CredentialMode
CREDENTIAL_MODE_DYNAMIC: CredentialMode
CONNECTION_STATUS_UNSPECIFIED: ConnectionStatus
CONNECTION_STATUS_PENDING: ConnectionStatus
CONNECTION_STATUS_CONNECTED: ConnectionStatus
CONNECTION_STATUS_ERROR: ConnectionStatus
ROTATION_OUTCOME_UNSPECIFIED: RotationOutcome
ROTATION_OUTCOME_SUCCEEDED: RotationOutcome
ROTATION_OUTCOME_FAILED: RotationOutcome
LEASE_STATE_UNSPECIFIED: LeaseState
LEASE_STATE_CREATING: LeaseState
LEASE_STATE_ACTIVE: LeaseState
LEASE_STATE_REVOKE_REQUESTED: LeaseState
LEASE_STATE_REVOKING: LeaseState
LEASE_STATE_REVOKED: LeaseState
LEASE_STATE_FAILING: LeaseState

class PostgresMetadata(_message.Message):
    __slots__ = ("host", "port", "database", "username", "ssl_mode", "ssl_root_certs")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    SSL_MODE_FIELD_NUMBER: _ClassVar[int]
    SSL_ROOT_CERTS_FIELD_NUMBER: _ClassVar[int]
    host: str
    port: int
    database: str
    username: str
    ssl_mode: SslMode
    ssl_root_certs: _containers.RepeatedCompositeFieldContainer[CertificateSummary]
    def __init__(self, host: _Optional[str] = ..., port: _Optional[int] = ..., database: _Optional[str] = ..., username: _Optional[str] = ..., ssl_mode: _Optional[_Union[SslMode, str]] = ..., ssl_root_certs: _Optional[_Iterable[_Union[CertificateSummary, _Mapping]]] = ...) -> None: ...

class CertificateSummary(_message.Message):
    __slots__ = ("subject", "sha256_fingerprint", "expire_time")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    subject: str
    sha256_fingerprint: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, subject: _Optional[str] = ..., sha256_fingerprint: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Connection(_message.Message):
    __slots__ = ("id", "display_name", "type", "safe_metadata", "credential_mode", "has_password", "status", "last_test_time", "last_test_category", "create_time", "update_time", "dynamic", "preview", "purposes", "parquet_directory")
    ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SAFE_METADATA_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_MODE_FIELD_NUMBER: _ClassVar[int]
    HAS_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_TEST_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_TEST_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    PURPOSES_FIELD_NUMBER: _ClassVar[int]
    PARQUET_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    id: str
    display_name: str
    type: ConnectionType
    safe_metadata: PostgresMetadata
    credential_mode: CredentialMode
    has_password: bool
    status: ConnectionStatus
    last_test_time: _timestamp_pb2.Timestamp
    last_test_category: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    dynamic: DynamicSettingsSummary
    preview: PreviewSettings
    purposes: _containers.RepeatedScalarFieldContainer[ConnectionPurpose]
    parquet_directory: ParquetDirectory
    def __init__(self, id: _Optional[str] = ..., display_name: _Optional[str] = ..., type: _Optional[_Union[ConnectionType, str]] = ..., safe_metadata: _Optional[_Union[PostgresMetadata, _Mapping]] = ..., credential_mode: _Optional[_Union[CredentialMode, str]] = ..., has_password: _Optional[bool] = ..., status: _Optional[_Union[ConnectionStatus, str]] = ..., last_test_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_test_category: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dynamic: _Optional[_Union[DynamicSettingsSummary, _Mapping]] = ..., preview: _Optional[_Union[PreviewSettings, _Mapping]] = ..., purposes: _Optional[_Iterable[_Union[ConnectionPurpose, str]]] = ..., parquet_directory: _Optional[_Union[ParquetDirectory, _Mapping]] = ...) -> None: ...

class ParquetDirectory(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class PreviewSettings(_message.Message):
    __slots__ = ("allowed_functions", "max_plan_cost")
    ALLOWED_FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_PLAN_COST_FIELD_NUMBER: _ClassVar[int]
    allowed_functions: _containers.RepeatedScalarFieldContainer[str]
    max_plan_cost: float
    def __init__(self, allowed_functions: _Optional[_Iterable[str]] = ..., max_plan_cost: _Optional[float] = ...) -> None: ...

class DynamicSettingsSummary(_message.Message):
    __slots__ = ("default_ttl_seconds", "max_ttl_seconds", "group_role", "creation_statement_count", "revocation_statement_count")
    DEFAULT_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GROUP_ROLE_FIELD_NUMBER: _ClassVar[int]
    CREATION_STATEMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_STATEMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    default_ttl_seconds: int
    max_ttl_seconds: int
    group_role: str
    creation_statement_count: int
    revocation_statement_count: int
    def __init__(self, default_ttl_seconds: _Optional[int] = ..., max_ttl_seconds: _Optional[int] = ..., group_role: _Optional[str] = ..., creation_statement_count: _Optional[int] = ..., revocation_statement_count: _Optional[int] = ...) -> None: ...

class PostgresFields(_message.Message):
    __slots__ = ("host", "port", "database", "username", "password", "ssl_mode", "preview", "ssl_root_cert")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    SSL_MODE_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    SSL_ROOT_CERT_FIELD_NUMBER: _ClassVar[int]
    host: str
    port: int
    database: str
    username: str
    password: str
    ssl_mode: SslMode
    preview: PreviewSettings
    ssl_root_cert: str
    def __init__(self, host: _Optional[str] = ..., port: _Optional[int] = ..., database: _Optional[str] = ..., username: _Optional[str] = ..., password: _Optional[str] = ..., ssl_mode: _Optional[_Union[SslMode, str]] = ..., preview: _Optional[_Union[PreviewSettings, _Mapping]] = ..., ssl_root_cert: _Optional[str] = ...) -> None: ...

class PostgresDsn(_message.Message):
    __slots__ = ("uri", "ssl_mode", "preview", "ssl_root_cert")
    URI_FIELD_NUMBER: _ClassVar[int]
    SSL_MODE_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    SSL_ROOT_CERT_FIELD_NUMBER: _ClassVar[int]
    uri: str
    ssl_mode: SslMode
    preview: PreviewSettings
    ssl_root_cert: str
    def __init__(self, uri: _Optional[str] = ..., ssl_mode: _Optional[_Union[SslMode, str]] = ..., preview: _Optional[_Union[PreviewSettings, _Mapping]] = ..., ssl_root_cert: _Optional[str] = ...) -> None: ...

class PostgresDynamic(_message.Message):
    __slots__ = ("host", "port", "database", "ssl_mode", "privileged_username", "privileged_password", "default_ttl_seconds", "max_ttl_seconds", "creation_statements", "revocation_statements", "group_role", "preview", "ssl_root_cert")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    SSL_MODE_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGED_USERNAME_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGED_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CREATION_STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    GROUP_ROLE_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    SSL_ROOT_CERT_FIELD_NUMBER: _ClassVar[int]
    host: str
    port: int
    database: str
    ssl_mode: SslMode
    privileged_username: str
    privileged_password: str
    default_ttl_seconds: int
    max_ttl_seconds: int
    creation_statements: _containers.RepeatedScalarFieldContainer[str]
    revocation_statements: _containers.RepeatedScalarFieldContainer[str]
    group_role: str
    preview: PreviewSettings
    ssl_root_cert: str
    def __init__(self, host: _Optional[str] = ..., port: _Optional[int] = ..., database: _Optional[str] = ..., ssl_mode: _Optional[_Union[SslMode, str]] = ..., privileged_username: _Optional[str] = ..., privileged_password: _Optional[str] = ..., default_ttl_seconds: _Optional[int] = ..., max_ttl_seconds: _Optional[int] = ..., creation_statements: _Optional[_Iterable[str]] = ..., revocation_statements: _Optional[_Iterable[str]] = ..., group_role: _Optional[str] = ..., preview: _Optional[_Union[PreviewSettings, _Mapping]] = ..., ssl_root_cert: _Optional[str] = ...) -> None: ...

class CreateConnectionRequest(_message.Message):
    __slots__ = ("display_name", "fields", "dsn", "dynamic", "parquet_directory")
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    DSN_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_FIELD_NUMBER: _ClassVar[int]
    PARQUET_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    display_name: str
    fields: PostgresFields
    dsn: PostgresDsn
    dynamic: PostgresDynamic
    parquet_directory: ParquetDirectory
    def __init__(self, display_name: _Optional[str] = ..., fields: _Optional[_Union[PostgresFields, _Mapping]] = ..., dsn: _Optional[_Union[PostgresDsn, _Mapping]] = ..., dynamic: _Optional[_Union[PostgresDynamic, _Mapping]] = ..., parquet_directory: _Optional[_Union[ParquetDirectory, _Mapping]] = ...) -> None: ...

class GetConnectionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListConnectionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListConnectionsResponse(_message.Message):
    __slots__ = ("connections", "next_page_token")
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    connections: _containers.RepeatedCompositeFieldContainer[Connection]
    next_page_token: str
    def __init__(self, connections: _Optional[_Iterable[_Union[Connection, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ConnectionUpdate(_message.Message):
    __slots__ = ("display_name", "fields")
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    display_name: str
    fields: PostgresFields
    def __init__(self, display_name: _Optional[str] = ..., fields: _Optional[_Union[PostgresFields, _Mapping]] = ...) -> None: ...

class UpdateConnectionRequest(_message.Message):
    __slots__ = ("id", "connection", "update_mask")
    ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    id: str
    connection: ConnectionUpdate
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, id: _Optional[str] = ..., connection: _Optional[_Union[ConnectionUpdate, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class TestConnectionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteConnectionRequest(_message.Message):
    __slots__ = ("id", "force")
    ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    force: bool
    def __init__(self, id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class ResolveConnectionCredentialsRequest(_message.Message):
    __slots__ = ("connection_id", "purpose", "draft_id", "work", "role", "connection_name")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    DRAFT_ID_FIELD_NUMBER: _ClassVar[int]
    WORK_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_NAME_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    purpose: str
    draft_id: str
    work: WorkClaim
    role: str
    connection_name: str
    def __init__(self, connection_id: _Optional[str] = ..., purpose: _Optional[str] = ..., draft_id: _Optional[str] = ..., work: _Optional[_Union[WorkClaim, _Mapping]] = ..., role: _Optional[str] = ..., connection_name: _Optional[str] = ...) -> None: ...

class WorkClaim(_message.Message):
    __slots__ = ("proof", "workflow_id", "workflow_run_id", "workflow_type")
    PROOF_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_TYPE_FIELD_NUMBER: _ClassVar[int]
    proof: str
    workflow_id: str
    workflow_run_id: str
    workflow_type: str
    def __init__(self, proof: _Optional[str] = ..., workflow_id: _Optional[str] = ..., workflow_run_id: _Optional[str] = ..., workflow_type: _Optional[str] = ...) -> None: ...

class RecordWorkRefusedRequest(_message.Message):
    __slots__ = ("workflow_id", "workflow_run_id", "workflow_type", "reason")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_TYPE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    workflow_run_id: str
    workflow_type: str
    reason: str
    def __init__(self, workflow_id: _Optional[str] = ..., workflow_run_id: _Optional[str] = ..., workflow_type: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PostgresCredentials(_message.Message):
    __slots__ = ("host", "port", "database", "username", "password", "ssl_mode", "pending_password", "pending_stage_id", "ssl_root_cert")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    SSL_MODE_FIELD_NUMBER: _ClassVar[int]
    PENDING_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    PENDING_STAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SSL_ROOT_CERT_FIELD_NUMBER: _ClassVar[int]
    host: str
    port: int
    database: str
    username: str
    password: str
    ssl_mode: SslMode
    pending_password: str
    pending_stage_id: str
    ssl_root_cert: str
    def __init__(self, host: _Optional[str] = ..., port: _Optional[int] = ..., database: _Optional[str] = ..., username: _Optional[str] = ..., password: _Optional[str] = ..., ssl_mode: _Optional[_Union[SslMode, str]] = ..., pending_password: _Optional[str] = ..., pending_stage_id: _Optional[str] = ..., ssl_root_cert: _Optional[str] = ...) -> None: ...

class ResolveConnectionCredentialsResponse(_message.Message):
    __slots__ = ("postgres", "dynamic", "preview", "connection_id", "parquet_directory")
    POSTGRES_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    PARQUET_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    postgres: PostgresCredentials
    dynamic: DynamicSettings
    preview: PreviewSettings
    connection_id: str
    parquet_directory: ParquetDirectory
    def __init__(self, postgres: _Optional[_Union[PostgresCredentials, _Mapping]] = ..., dynamic: _Optional[_Union[DynamicSettings, _Mapping]] = ..., preview: _Optional[_Union[PreviewSettings, _Mapping]] = ..., connection_id: _Optional[str] = ..., parquet_directory: _Optional[_Union[ParquetDirectory, _Mapping]] = ...) -> None: ...

class DynamicSettings(_message.Message):
    __slots__ = ("default_ttl_seconds", "max_ttl_seconds", "creation_statements", "revocation_statements", "group_role", "role")
    DEFAULT_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CREATION_STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    GROUP_ROLE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    default_ttl_seconds: int
    max_ttl_seconds: int
    creation_statements: _containers.RepeatedScalarFieldContainer[str]
    revocation_statements: _containers.RepeatedScalarFieldContainer[str]
    group_role: str
    role: str
    def __init__(self, default_ttl_seconds: _Optional[int] = ..., max_ttl_seconds: _Optional[int] = ..., creation_statements: _Optional[_Iterable[str]] = ..., revocation_statements: _Optional[_Iterable[str]] = ..., group_role: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class ReplaceConnectionCredentialsRequest(_message.Message):
    __slots__ = ("connection_id", "new_password")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    new_password: str
    def __init__(self, connection_id: _Optional[str] = ..., new_password: _Optional[str] = ...) -> None: ...

class StagePrivilegedPasswordRequest(_message.Message):
    __slots__ = ("connection_id", "pending_password", "replace_pending", "stage_id")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    PENDING_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    REPLACE_PENDING_FIELD_NUMBER: _ClassVar[int]
    STAGE_ID_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    pending_password: str
    replace_pending: bool
    stage_id: str
    def __init__(self, connection_id: _Optional[str] = ..., pending_password: _Optional[str] = ..., replace_pending: _Optional[bool] = ..., stage_id: _Optional[str] = ...) -> None: ...

class CommitPrivilegedPasswordRequest(_message.Message):
    __slots__ = ("connection_id", "stage_id")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_ID_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    stage_id: str
    def __init__(self, connection_id: _Optional[str] = ..., stage_id: _Optional[str] = ...) -> None: ...

class RecordRootRotationRequest(_message.Message):
    __slots__ = ("connection_id", "outcome", "failure_reason")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    outcome: RotationOutcome
    failure_reason: str
    def __init__(self, connection_id: _Optional[str] = ..., outcome: _Optional[_Union[RotationOutcome, str]] = ..., failure_reason: _Optional[str] = ...) -> None: ...

class RecordPreviewSecurityEventRequest(_message.Message):
    __slots__ = ("connection_id", "run_id", "receipt_missing", "transaction_id_assigned", "advisory_locks_held", "role_sessions_ended", "backend_outlived_call")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_MISSING_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_ASSIGNED_FIELD_NUMBER: _ClassVar[int]
    ADVISORY_LOCKS_HELD_FIELD_NUMBER: _ClassVar[int]
    ROLE_SESSIONS_ENDED_FIELD_NUMBER: _ClassVar[int]
    BACKEND_OUTLIVED_CALL_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    run_id: str
    receipt_missing: bool
    transaction_id_assigned: bool
    advisory_locks_held: int
    role_sessions_ended: int
    backend_outlived_call: bool
    def __init__(self, connection_id: _Optional[str] = ..., run_id: _Optional[str] = ..., receipt_missing: _Optional[bool] = ..., transaction_id_assigned: _Optional[bool] = ..., advisory_locks_held: _Optional[int] = ..., role_sessions_ended: _Optional[int] = ..., backend_outlived_call: _Optional[bool] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("id", "connection_id", "role_name", "purpose", "state", "create_time", "update_time", "expire_time", "max_expire_time", "revoke_time", "failure_reason", "failure_count", "role", "workload_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_NAME_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    connection_id: str
    role_name: str
    purpose: str
    state: LeaseState
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    max_expire_time: _timestamp_pb2.Timestamp
    revoke_time: _timestamp_pb2.Timestamp
    failure_reason: str
    failure_count: int
    role: str
    workload_id: str
    def __init__(self, id: _Optional[str] = ..., connection_id: _Optional[str] = ..., role_name: _Optional[str] = ..., purpose: _Optional[str] = ..., state: _Optional[_Union[LeaseState, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., failure_reason: _Optional[str] = ..., failure_count: _Optional[int] = ..., role: _Optional[str] = ..., workload_id: _Optional[str] = ...) -> None: ...

class CreateLeaseRequest(_message.Message):
    __slots__ = ("connection_id", "role_name", "purpose", "expire_time", "max_expire_time", "lease_id", "role", "workload_id")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_NAME_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    role_name: str
    purpose: str
    expire_time: _timestamp_pb2.Timestamp
    max_expire_time: _timestamp_pb2.Timestamp
    lease_id: str
    role: str
    workload_id: str
    def __init__(self, connection_id: _Optional[str] = ..., role_name: _Optional[str] = ..., purpose: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lease_id: _Optional[str] = ..., role: _Optional[str] = ..., workload_id: _Optional[str] = ...) -> None: ...

class ClaimLeaseRequest(_message.Message):
    __slots__ = ("lease_id", "purpose")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    purpose: str
    def __init__(self, lease_id: _Optional[str] = ..., purpose: _Optional[str] = ...) -> None: ...

class UpdateLeaseRequest(_message.Message):
    __slots__ = ("lease_id", "state", "expire_time", "failure_reason")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    state: LeaseState
    expire_time: _timestamp_pb2.Timestamp
    failure_reason: str
    def __init__(self, lease_id: _Optional[str] = ..., state: _Optional[_Union[LeaseState, str]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., failure_reason: _Optional[str] = ...) -> None: ...

class ListLeasesToReapRequest(_message.Message):
    __slots__ = ("connection_id", "page_size", "page_token")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    page_size: int
    page_token: str
    def __init__(self, connection_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListLeasesToReapResponse(_message.Message):
    __slots__ = ("leases", "next_page_token")
    LEASES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    next_page_token: str
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListLeasesRequest(_message.Message):
    __slots__ = ("connection_id", "state", "page_size", "page_token", "role", "workload_id")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    state: LeaseState
    page_size: int
    page_token: str
    role: str
    workload_id: str
    def __init__(self, connection_id: _Optional[str] = ..., state: _Optional[_Union[LeaseState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., role: _Optional[str] = ..., workload_id: _Optional[str] = ...) -> None: ...

class ListLeasesResponse(_message.Message):
    __slots__ = ("leases", "next_page_token")
    LEASES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    next_page_token: str
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CountLeasesRequest(_message.Message):
    __slots__ = ("connection_id",)
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    def __init__(self, connection_id: _Optional[str] = ...) -> None: ...

class LeaseStateCount(_message.Message):
    __slots__ = ("state", "count")
    STATE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    state: LeaseState
    count: int
    def __init__(self, state: _Optional[_Union[LeaseState, str]] = ..., count: _Optional[int] = ...) -> None: ...

class LeasePurposeCount(_message.Message):
    __slots__ = ("purpose", "count")
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    purpose: str
    count: int
    def __init__(self, purpose: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class CountLeasesResponse(_message.Message):
    __slots__ = ("by_state", "by_purpose", "by_role")
    BY_STATE_FIELD_NUMBER: _ClassVar[int]
    BY_PURPOSE_FIELD_NUMBER: _ClassVar[int]
    BY_ROLE_FIELD_NUMBER: _ClassVar[int]
    by_state: _containers.RepeatedCompositeFieldContainer[LeaseStateCount]
    by_purpose: _containers.RepeatedCompositeFieldContainer[LeasePurposeCount]
    by_role: _containers.RepeatedCompositeFieldContainer[LeaseRoleCount]
    def __init__(self, by_state: _Optional[_Iterable[_Union[LeaseStateCount, _Mapping]]] = ..., by_purpose: _Optional[_Iterable[_Union[LeasePurposeCount, _Mapping]]] = ..., by_role: _Optional[_Iterable[_Union[LeaseRoleCount, _Mapping]]] = ...) -> None: ...

class LeaseRoleCount(_message.Message):
    __slots__ = ("role", "count")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    role: str
    count: int
    def __init__(self, role: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class RevokeLeasesRequest(_message.Message):
    __slots__ = ("connection_id", "lease_id")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    lease_id: str
    def __init__(self, connection_id: _Optional[str] = ..., lease_id: _Optional[str] = ...) -> None: ...

class RevokeLeasesResponse(_message.Message):
    __slots__ = ("leases",)
    LEASES_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ...) -> None: ...

class ConnectionRole(_message.Message):
    __slots__ = ("connection_id", "name", "default_ttl_seconds", "max_ttl_seconds", "group_role", "creation_statement_count", "revocation_statement_count", "create_time", "update_time")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GROUP_ROLE_FIELD_NUMBER: _ClassVar[int]
    CREATION_STATEMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_STATEMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    name: str
    default_ttl_seconds: int
    max_ttl_seconds: int
    group_role: str
    creation_statement_count: int
    revocation_statement_count: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, connection_id: _Optional[str] = ..., name: _Optional[str] = ..., default_ttl_seconds: _Optional[int] = ..., max_ttl_seconds: _Optional[int] = ..., group_role: _Optional[str] = ..., creation_statement_count: _Optional[int] = ..., revocation_statement_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ConnectionRoleSettings(_message.Message):
    __slots__ = ("default_ttl_seconds", "max_ttl_seconds", "creation_statements", "revocation_statements", "group_role")
    DEFAULT_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CREATION_STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    GROUP_ROLE_FIELD_NUMBER: _ClassVar[int]
    default_ttl_seconds: int
    max_ttl_seconds: int
    creation_statements: _containers.RepeatedScalarFieldContainer[str]
    revocation_statements: _containers.RepeatedScalarFieldContainer[str]
    group_role: str
    def __init__(self, default_ttl_seconds: _Optional[int] = ..., max_ttl_seconds: _Optional[int] = ..., creation_statements: _Optional[_Iterable[str]] = ..., revocation_statements: _Optional[_Iterable[str]] = ..., group_role: _Optional[str] = ...) -> None: ...

class CreateConnectionRoleRequest(_message.Message):
    __slots__ = ("connection_id", "name", "settings")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    name: str
    settings: ConnectionRoleSettings
    def __init__(self, connection_id: _Optional[str] = ..., name: _Optional[str] = ..., settings: _Optional[_Union[ConnectionRoleSettings, _Mapping]] = ...) -> None: ...

class GetConnectionRoleRequest(_message.Message):
    __slots__ = ("connection_id", "name")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    name: str
    def __init__(self, connection_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ListConnectionRolesRequest(_message.Message):
    __slots__ = ("connection_id", "page_size", "page_token")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    page_size: int
    page_token: str
    def __init__(self, connection_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListConnectionRolesResponse(_message.Message):
    __slots__ = ("roles", "next_page_token")
    ROLES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    roles: _containers.RepeatedCompositeFieldContainer[ConnectionRole]
    next_page_token: str
    def __init__(self, roles: _Optional[_Iterable[_Union[ConnectionRole, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateConnectionRoleRequest(_message.Message):
    __slots__ = ("connection_id", "name", "settings", "update_mask")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    name: str
    settings: ConnectionRoleSettings
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, connection_id: _Optional[str] = ..., name: _Optional[str] = ..., settings: _Optional[_Union[ConnectionRoleSettings, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class DeleteConnectionRoleRequest(_message.Message):
    __slots__ = ("connection_id", "name", "force")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    name: str
    force: bool
    def __init__(self, connection_id: _Optional[str] = ..., name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteConnectionRoleResponse(_message.Message):
    __slots__ = ("leases", "unrevoked_lease_count")
    LEASES_FIELD_NUMBER: _ClassVar[int]
    UNREVOKED_LEASE_COUNT_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    unrevoked_lease_count: int
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ..., unrevoked_lease_count: _Optional[int] = ...) -> None: ...
