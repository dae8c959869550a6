import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from sevvo.auth.v1 import users_pb2 as _users_pb2
from sevvo.auth.v1 import workloads_pb2 as _workloads_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PrincipalKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRINCIPAL_KIND_UNSPECIFIED: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_USER: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_AGENT: _ClassVar[PrincipalKind]
PRINCIPAL_KIND_UNSPECIFIED: PrincipalKind
PRINCIPAL_KIND_USER: PrincipalKind
PRINCIPAL_KIND_AGENT: PrincipalKind

class SignInRequest(_message.Message):
    __slots__ = ("email", "password")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    email: str
    password: str
    def __init__(self, email: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class SignInResponse(_message.Message):
    __slots__ = ("session_token", "expire_time", "org_id", "user_id")
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    session_token: str
    expire_time: _timestamp_pb2.Timestamp
    org_id: str
    user_id: str
    def __init__(self, session_token: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., org_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class ExchangeDeploymentTokenRequest(_message.Message):
    __slots__ = ("deployment_token",)
    DEPLOYMENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deployment_token: str
    def __init__(self, deployment_token: _Optional[str] = ...) -> None: ...

class ExchangeDeploymentTokenResponse(_message.Message):
    __slots__ = ("bearer_token", "expire_time", "org_id", "deployment_id", "temporal_token", "temporal_namespace")
    BEARER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TEMPORAL_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TEMPORAL_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    bearer_token: str
    expire_time: _timestamp_pb2.Timestamp
    org_id: str
    deployment_id: str
    temporal_token: str
    temporal_namespace: str
    def __init__(self, bearer_token: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., org_id: _Optional[str] = ..., deployment_id: _Optional[str] = ..., temporal_token: _Optional[str] = ..., temporal_namespace: _Optional[str] = ...) -> None: ...

class ExchangeWorkloadTokenRequest(_message.Message):
    __slots__ = ("workload_token",)
    WORKLOAD_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workload_token: str
    def __init__(self, workload_token: _Optional[str] = ...) -> None: ...

class ExchangeWorkloadTokenResponse(_message.Message):
    __slots__ = ("bearer_token", "expire_time", "org_id", "workload_id", "grants", "max_ttl_seconds")
    BEARER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    MAX_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    bearer_token: str
    expire_time: _timestamp_pb2.Timestamp
    org_id: str
    workload_id: str
    grants: _containers.RepeatedCompositeFieldContainer[_workloads_pb2.WorkloadGrant]
    max_ttl_seconds: int
    def __init__(self, bearer_token: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., org_id: _Optional[str] = ..., workload_id: _Optional[str] = ..., grants: _Optional[_Iterable[_Union[_workloads_pb2.WorkloadGrant, _Mapping]]] = ..., max_ttl_seconds: _Optional[int] = ...) -> None: ...

class IssueTemporalTokenRequest(_message.Message):
    __slots__ = ("org_id",)
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    org_id: str
    def __init__(self, org_id: _Optional[str] = ...) -> None: ...

class IssueTemporalTokenResponse(_message.Message):
    __slots__ = ("temporal_token", "temporal_namespace", "expire_time")
    TEMPORAL_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TEMPORAL_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    temporal_token: str
    temporal_namespace: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, temporal_token: _Optional[str] = ..., temporal_namespace: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetPublicKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublicKey(_message.Message):
    __slots__ = ("kid", "algorithm", "public_key", "not_before", "verify_until")
    KID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    VERIFY_UNTIL_FIELD_NUMBER: _ClassVar[int]
    kid: str
    algorithm: str
    public_key: bytes
    not_before: _timestamp_pb2.Timestamp
    verify_until: _timestamp_pb2.Timestamp
    def __init__(self, kid: _Optional[str] = ..., algorithm: _Optional[str] = ..., public_key: _Optional[bytes] = ..., not_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., verify_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetPublicKeysResponse(_message.Message):
    __slots__ = ("keys", "refresh_interval_seconds")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    REFRESH_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[PublicKey]
    refresh_interval_seconds: int
    def __init__(self, keys: _Optional[_Iterable[_Union[PublicKey, _Mapping]]] = ..., refresh_interval_seconds: _Optional[int] = ...) -> None: ...

class ListRevokedDeploymentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RevokedDeployment(_message.Message):
    __slots__ = ("deployment_id", "revoke_time")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    revoke_time: _timestamp_pb2.Timestamp
    def __init__(self, deployment_id: _Optional[str] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListRevokedDeploymentsResponse(_message.Message):
    __slots__ = ("deployments",)
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[RevokedDeployment]
    def __init__(self, deployments: _Optional[_Iterable[_Union[RevokedDeployment, _Mapping]]] = ...) -> None: ...

class ListRevokedWorkloadsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RevokedWorkload(_message.Message):
    __slots__ = ("workload_id", "revoke_time")
    WORKLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    workload_id: str
    revoke_time: _timestamp_pb2.Timestamp
    def __init__(self, workload_id: _Optional[str] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ChangedWorkload(_message.Message):
    __slots__ = ("workload_id", "generation", "update_time")
    WORKLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    workload_id: str
    generation: int
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, workload_id: _Optional[str] = ..., generation: _Optional[int] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListRevokedWorkloadsResponse(_message.Message):
    __slots__ = ("workloads", "changed")
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    workloads: _containers.RepeatedCompositeFieldContainer[RevokedWorkload]
    changed: _containers.RepeatedCompositeFieldContainer[ChangedWorkload]
    def __init__(self, workloads: _Optional[_Iterable[_Union[RevokedWorkload, _Mapping]]] = ..., changed: _Optional[_Iterable[_Union[ChangedWorkload, _Mapping]]] = ...) -> None: ...

class ListRevokedSessionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RevokedSession(_message.Message):
    __slots__ = ("token_id", "expire_time")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, token_id: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UserSessionCutoff(_message.Message):
    __slots__ = ("user_id", "valid_after")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    VALID_AFTER_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    valid_after: _timestamp_pb2.Timestamp
    def __init__(self, user_id: _Optional[str] = ..., valid_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListRevokedSessionsResponse(_message.Message):
    __slots__ = ("sessions", "cutoffs")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    CUTOFFS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[RevokedSession]
    cutoffs: _containers.RepeatedCompositeFieldContainer[UserSessionCutoff]
    def __init__(self, sessions: _Optional[_Iterable[_Union[RevokedSession, _Mapping]]] = ..., cutoffs: _Optional[_Iterable[_Union[UserSessionCutoff, _Mapping]]] = ...) -> None: ...

class GetCallerRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCallerResponse(_message.Message):
    __slots__ = ("kind", "org_id", "subject_id", "org_name")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    ORG_NAME_FIELD_NUMBER: _ClassVar[int]
    kind: PrincipalKind
    org_id: str
    subject_id: str
    org_name: str
    def __init__(self, kind: _Optional[_Union[PrincipalKind, str]] = ..., org_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., org_name: _Optional[str] = ...) -> None: ...

class BootstrapOrgRequest(_message.Message):
    __slots__ = ("org_name", "admin_email", "admin_password")
    ORG_NAME_FIELD_NUMBER: _ClassVar[int]
    ADMIN_EMAIL_FIELD_NUMBER: _ClassVar[int]
    ADMIN_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    org_name: str
    admin_email: str
    admin_password: str
    def __init__(self, org_name: _Optional[str] = ..., admin_email: _Optional[str] = ..., admin_password: _Optional[str] = ...) -> None: ...

class BootstrapOrgResponse(_message.Message):
    __slots__ = ("org_id", "admin")
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    org_id: str
    admin: _users_pb2.User
    def __init__(self, org_id: _Optional[str] = ..., admin: _Optional[_Union[_users_pb2.User, _Mapping]] = ...) -> None: ...

class SignOutRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SignOutResponse(_message.Message):
    __slots__ = ("token_id",)
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    def __init__(self, token_id: _Optional[str] = ...) -> None: ...

class ChangePasswordRequest(_message.Message):
    __slots__ = ("current_password", "new_password")
    CURRENT_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    NEW_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    current_password: str
    new_password: str
    def __init__(self, current_password: _Optional[str] = ..., new_password: _Optional[str] = ...) -> None: ...

class ChangePasswordResponse(_message.Message):
    __slots__ = ("session_token", "expire_time")
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    session_token: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, session_token: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
