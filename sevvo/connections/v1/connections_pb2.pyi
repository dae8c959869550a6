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

class SslMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SSL_MODE_UNSPECIFIED: _ClassVar[SslMode]
    SSL_MODE_DISABLE: _ClassVar[SslMode]
    SSL_MODE_REQUIRE: _ClassVar[SslMode]

class CredentialMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CREDENTIAL_MODE_UNSPECIFIED: _ClassVar[CredentialMode]
    CREDENTIAL_MODE_FIELDS: _ClassVar[CredentialMode]
    CREDENTIAL_MODE_DSN: _ClassVar[CredentialMode]

class ConnectionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONNECTION_STATUS_UNSPECIFIED: _ClassVar[ConnectionStatus]
    CONNECTION_STATUS_PENDING: _ClassVar[ConnectionStatus]
    CONNECTION_STATUS_CONNECTED: _ClassVar[ConnectionStatus]
    CONNECTION_STATUS_ERROR: _ClassVar[ConnectionStatus]
CONNECTION_TYPE_UNSPECIFIED: ConnectionType
CONNECTION_TYPE_POSTGRES: ConnectionType
SSL_MODE_UNSPECIFIED: SslMode
SSL_MODE_DISABLE: SslMode
SSL_MODE_REQUIRE: SslMode
CREDENTIAL_MODE_UNSPECIFIED: CredentialMode
CREDENTIAL_MODE_FIELDS: CredentialMode
CREDENTIAL_MODE_DSN: CredentialMode
CONNECTION_STATUS_UNSPECIFIED: ConnectionStatus
CONNECTION_STATUS_PENDING: ConnectionStatus
CONNECTION_STATUS_CONNECTED: ConnectionStatus
CONNECTION_STATUS_ERROR: ConnectionStatus

class PostgresMetadata(_message.Message):
    __slots__ = ("host", "port", "database", "username", "ssl_mode")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    SSL_MODE_FIELD_NUMBER: _ClassVar[int]
    host: str
    port: int
    database: str
    username: str
    ssl_mode: SslMode
    def __init__(self, host: _Optional[str] = ..., port: _Optional[int] = ..., database: _Optional[str] = ..., username: _Optional[str] = ..., ssl_mode: _Optional[_Union[SslMode, str]] = ...) -> None: ...

class Connection(_message.Message):
    __slots__ = ("id", "display_name", "type", "safe_metadata", "credential_mode", "has_password", "status", "last_test_time", "last_test_category", "create_time", "update_time")
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
    def __init__(self, id: _Optional[str] = ..., display_name: _Optional[str] = ..., type: _Optional[_Union[ConnectionType, str]] = ..., safe_metadata: _Optional[_Union[PostgresMetadata, _Mapping]] = ..., credential_mode: _Optional[_Union[CredentialMode, str]] = ..., has_password: _Optional[bool] = ..., status: _Optional[_Union[ConnectionStatus, str]] = ..., last_test_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_test_category: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PostgresFields(_message.Message):
    __slots__ = ("host", "port", "database", "username", "password", "ssl_mode")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    SSL_MODE_FIELD_NUMBER: _ClassVar[int]
    host: str
    port: int
    database: str
    username: str
    password: str
    ssl_mode: SslMode
    def __init__(self, host: _Optional[str] = ..., port: _Optional[int] = ..., database: _Optional[str] = ..., username: _Optional[str] = ..., password: _Optional[str] = ..., ssl_mode: _Optional[_Union[SslMode, str]] = ...) -> None: ...

class PostgresDsn(_message.Message):
    __slots__ = ("uri", "ssl_mode")
    URI_FIELD_NUMBER: _ClassVar[int]
    SSL_MODE_FIELD_NUMBER: _ClassVar[int]
    uri: str
    ssl_mode: SslMode
    def __init__(self, uri: _Optional[str] = ..., ssl_mode: _Optional[_Union[SslMode, str]] = ...) -> None: ...

class CreateConnectionRequest(_message.Message):
    __slots__ = ("display_name", "fields", "dsn")
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    DSN_FIELD_NUMBER: _ClassVar[int]
    display_name: str
    fields: PostgresFields
    dsn: PostgresDsn
    def __init__(self, display_name: _Optional[str] = ..., fields: _Optional[_Union[PostgresFields, _Mapping]] = ..., dsn: _Optional[_Union[PostgresDsn, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ResolveConnectionCredentialsRequest(_message.Message):
    __slots__ = ("connection_id", "purpose", "draft_id")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    DRAFT_ID_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    purpose: str
    draft_id: str
    def __init__(self, connection_id: _Optional[str] = ..., purpose: _Optional[str] = ..., draft_id: _Optional[str] = ...) -> None: ...

class PostgresCredentials(_message.Message):
    __slots__ = ("host", "port", "database", "username", "password", "ssl_mode")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    SSL_MODE_FIELD_NUMBER: _ClassVar[int]
    host: str
    port: int
    database: str
    username: str
    password: str
    ssl_mode: SslMode
    def __init__(self, host: _Optional[str] = ..., port: _Optional[int] = ..., database: _Optional[str] = ..., username: _Optional[str] = ..., password: _Optional[str] = ..., ssl_mode: _Optional[_Union[SslMode, str]] = ...) -> None: ...

class ResolveConnectionCredentialsResponse(_message.Message):
    __slots__ = ("postgres",)
    POSTGRES_FIELD_NUMBER: _ClassVar[int]
    postgres: PostgresCredentials
    def __init__(self, postgres: _Optional[_Union[PostgresCredentials, _Mapping]] = ...) -> None: ...
