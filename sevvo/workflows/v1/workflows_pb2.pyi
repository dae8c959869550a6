from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
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
TEST_CATEGORY_UNSPECIFIED: TestCategory
TEST_CATEGORY_OK: TestCategory
TEST_CATEGORY_CONNECTION_REFUSED_OR_TIMEOUT: TestCategory
TEST_CATEGORY_PASSWORD_AUTHENTICATION_FAILED: TestCategory
TEST_CATEGORY_SSL_REQUIRED_NOT_OFFERED: TestCategory
TEST_CATEGORY_DATABASE_DOES_NOT_EXIST: TestCategory
TEST_CATEGORY_PERMISSION_DENIED: TestCategory
TEST_CATEGORY_INVALID_STORED_CREDENTIALS: TestCategory
TEST_CATEGORY_OTHER: TestCategory

class CredentialTestInput(_message.Message):
    __slots__ = ("run_id", "connection_id", "draft_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    DRAFT_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    connection_id: str
    draft_id: str
    def __init__(self, run_id: _Optional[str] = ..., connection_id: _Optional[str] = ..., draft_id: _Optional[str] = ...) -> None: ...

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
