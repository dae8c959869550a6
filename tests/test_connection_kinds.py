"""Connection kinds (services/connections/kinds): the registry, the Parquet directory kind's
rules, and what each kind shows, seals and resolves; through the domain on a real store.

The Postgres kind's own rules are tests/test_connections_requests.py's; the agent's side of a
Parquet directory is tests/test_directory_probe.py's, the whole story
tests/test_e2e_parquet_directory.py's.
"""

from __future__ import annotations

import asyncio
import posixpath
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.connections.domain import ConnectionUpdate
from services.connections.kinds import KINDS, Purpose, kind_for_request, kind_named
from services.connections.kinds.parquet_directory import ParquetDirectoryTarget
from services.connections.preview_settings import PreviewSettings
from services.connections.servicer import connection_pb, create_arguments
from services.connections.store import ConnectionRow
from sevvo.connections.v1 import connections_pb2 as pb
from sevvo.runtime.errors import FailedPrecondition, InvalidArgument
from sevvo.runtime.sealing import CredentialsUnreadable
from sevvo.runtime.validation import directory_path_problem
from tests.plugins.domains import ConnectionsDomains, org_callers


def _parquet(path: str, name: str = "lake") -> pb.CreateConnectionRequest:
    return pb.CreateConnectionRequest(
        display_name=name, parquet_directory=pb.ParquetDirectory(path=path)
    )


# --- the registry -----------------------------------------------------------------------------


def test_every_credentials_member_and_connection_type_has_one_kind() -> None:
    """The request's credentials oneof and ConnectionType are covered, each exactly once."""
    oneof = pb.CreateConnectionRequest.DESCRIPTOR.oneofs_by_name["credentials"]
    claimed = [field for kind in KINDS for field in kind.request_fields]
    assert sorted(claimed) == sorted(f.name for f in oneof.fields)
    types = [kind.connection_type for kind in KINDS]
    numbers = [v.number for v in pb.ConnectionType.DESCRIPTOR.values if v.number]
    assert sorted(types) == sorted(numbers)
    assert len({kind.name for kind in KINDS}) == len(KINDS)


def test_kinds_say_what_they_are_for() -> None:
    """Postgres is a source and a destination that merges by key (incremental models); a
    Parquet directory a destination only, replaced whole."""
    assert kind_named("postgres").purposes == (
        Purpose.SOURCE,
        Purpose.DESTINATION,
        Purpose.INCREMENTAL_DESTINATION,
    )
    assert kind_named("parquet_directory").purposes == (Purpose.DESTINATION,)


def test_a_request_without_credentials_names_every_kind() -> None:
    """No credentials: INVALID_ARGUMENT on credentials listing what may be given."""
    with pytest.raises(InvalidArgument) as caught:
        kind_for_request(pb.CreateConnectionRequest(display_name="x"))
    assert caught.value.field == "credentials"
    assert "parquet_directory" in caught.value.description


# --- a Parquet directory's path ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("", "is required"),
        ("data/lake", "absolute"),
        ("/data/../etc", "'..'"),
        ("/data/./lake", "normalised"),
        ("/data//lake", "normalised"),
        ("//data/lake", "normalised"),
        ("/data/lake/", "normalised"),
        ("/data/\x00lake", "control"),
        ("/data/\nlake", "control"),
        ("/data/\u202elake", "control"),
        ("/" + "a" * 4096, "4096 bytes"),
        ("/" + "é" * 2048, "4096 bytes"),
    ],
    ids=[
        "empty",
        "relative",
        "dotdot",
        "dot",
        "double-slash",
        "leading-double-slash",
        "trailing-slash",
        "nul",
        "newline",
        "bidi",
        "too-long",
        "too-many-bytes",
    ],
)
def test_a_bad_path_is_invalid_on_its_field(path: str, rule: str) -> None:
    """Each rule is INVALID_ARGUMENT on parquet_directory.path, stating the rule."""
    with pytest.raises(InvalidArgument) as caught:
        create_arguments(_parquet(path))
    assert caught.value.field == "parquet_directory.path"
    assert rule in caught.value.description


@pytest.mark.parametrize("path", ["/", "/data/lake", "/mnt/vol-1/Ärger", "/" + "a" * 4095])
def test_a_good_path_is_the_payload_with_no_credentials(path: str) -> None:
    """An absolute, normalised path becomes the payload as given; the mode is "none"."""
    arguments = create_arguments(_parquet(path))
    assert arguments.target == ParquetDirectoryTarget(path)
    assert arguments.credential_mode == "none"


def test_the_payload_reads_back_and_a_tampered_one_does_not() -> None:
    """The sealed JSON round-trips; a payload breaking the rules is unreadable, unquoted."""
    target = ParquetDirectoryTarget("/data/lake")
    assert ParquetDirectoryTarget.from_json(target.to_json()) == target
    for bad in (b"[]", b'{"version":1,"kind":"parquet_directory","path":"../x"}', b"\xff"):
        with pytest.raises(CredentialsUnreadable) as caught:
            ParquetDirectoryTarget.from_json(bad)
        assert caught.value.reason == "CREDENTIALS_PAYLOAD_MALFORMED"
        assert "../x" not in str(caught.value)


# --- how each kind shows, through the domain on a real store -----------------------------------


def test_a_parquet_connection_shows_its_path_and_purpose_only(
    connections_domains: ConnectionsDomains,
) -> None:
    """Stored with no Postgres column; the message has type, purposes and path, no login."""
    callers = org_callers()
    row = asyncio.run(connections_domains.create(callers.admin, _parquet("/data/lake")))
    assert (row.type, row.credential_mode, row.host, row.port) == (
        "parquet_directory",
        "none",
        None,
        None,
    )
    message = connection_pb(connections_domains.connections.get(callers.member, str(row.id)))
    assert message.type == pb.CONNECTION_TYPE_PARQUET_DIRECTORY
    assert list(message.purposes) == [pb.CONNECTION_PURPOSE_DESTINATION]
    assert message.parquet_directory.path == "/data/lake"
    assert not message.HasField("safe_metadata") and not message.has_password
    assert message.credential_mode == pb.CREDENTIAL_MODE_UNSPECIFIED


def test_a_postgres_connection_is_a_source_and_a_destination(
    connections_domains: ConnectionsDomains,
) -> None:
    """Postgres connections keep their metadata and gain both purposes."""
    callers = org_callers()
    request = pb.CreateConnectionRequest(
        display_name="shop",
        fields=pb.PostgresFields(
            host="db.internal",
            database="shop",
            username="reader",
            password="reader-Pa55",
            ssl_mode=pb.SSL_MODE_REQUIRE,
        ),
    )
    row = asyncio.run(connections_domains.create(callers.admin, request))
    message = connection_pb(row)
    assert message.type == pb.CONNECTION_TYPE_POSTGRES
    assert list(message.purposes) == [
        pb.CONNECTION_PURPOSE_SOURCE,
        pb.CONNECTION_PURPOSE_DESTINATION,
        pb.CONNECTION_PURPOSE_INCREMENTAL_DESTINATION,
    ]
    assert message.safe_metadata.host == "db.internal"
    assert not message.HasField("parquet_directory")


def test_the_agent_resolves_the_directory_and_no_login(
    connections_domains: ConnectionsDomains,
) -> None:
    """resolve_payload gives the directory; the kind's response has parquet_directory only."""
    callers = org_callers()
    row = asyncio.run(connections_domains.create(callers.admin, _parquet("/data/lake", "l2")))
    payload = connections_domains.connections.resolve_payload(callers.agent, str(row.id), "sync")
    response = kind_named(row.type).resolved(payload, "")
    assert response.parquet_directory.path == "/data/lake"
    assert not response.HasField("postgres") and not response.HasField("dynamic")


@pytest.mark.parametrize(
    ("what", "call"),
    [
        ("login", "update_fields"),
        ("preview", "update_preview"),
        ("roles", "resolve_role"),
        ("rotation", "stage_password"),
        ("leases", "create_lease"),
    ],
)
def test_logins_previews_roles_rotations_and_leases_do_not_apply(
    connections_domains: ConnectionsDomains, what: str, call: str
) -> None:
    """Each is FAILED_PRECONDITION (CONNECTION_KIND_UNSUPPORTED) saying it is a destination."""
    callers = org_callers()
    domain = connections_domains.connections
    row = asyncio.run(connections_domains.create(callers.admin, _parquet("/data/lake", what)))
    cid = str(row.id)
    actions: dict[str, Callable[[], object]] = {
        "update_fields": lambda: asyncio.run(
            domain.update(callers.admin, cid, ConnectionUpdate(("fields.host",), host="h"))
        ),
        "update_preview": lambda: asyncio.run(
            domain.update(
                callers.admin,
                cid,
                ConnectionUpdate(("fields.preview",), preview=PreviewSettings((), 0.0)),
            )
        ),
        "resolve_role": lambda: domain.resolve_payload(callers.agent, cid, "lease", role="ro"),
        "stage_password": lambda: domain.stage_password(
            callers.agent, cid, "new-Pa55", True, str(uuid.uuid4())
        ),
        "create_lease": lambda: connections_domains.leases.create(
            callers.agent,
            connection_id=cid,
            role_name=f"sevvo_{uuid.uuid4().hex[:8]}",
            purpose="test",
            expire_time=datetime.now(UTC),
            max_expire_time=datetime.now(UTC),
        ),
    }
    with pytest.raises(FailedPrecondition) as caught:
        actions[call]()
    assert caught.value.reason == "CONNECTION_KIND_UNSUPPORTED"
    assert "Parquet directory connection" in str(caught.value)
    assert "destination only" in str(caught.value)


def test_a_display_name_change_applies_to_any_kind(
    connections_domains: ConnectionsDomains,
) -> None:
    """Renaming needs no login: a Parquet directory connection is renamed."""
    callers = org_callers()
    row = asyncio.run(connections_domains.create(callers.admin, _parquet("/data/x", "old")))
    renamed = asyncio.run(
        connections_domains.connections.update(
            callers.admin, str(row.id), ConnectionUpdate(("display_name",), display_name="new")
        )
    )
    assert renamed.display_name == "new" and renamed.details == {"path": "/data/x"}


def test_a_row_of_each_kind_round_trips_the_store(
    connections_domains: ConnectionsDomains,
) -> None:
    """What create stored is what get reads: the row, details and all."""
    callers = org_callers()
    row = asyncio.run(connections_domains.create(callers.admin, _parquet("/srv/p", "rt")))
    stored = connections_domains.connections.get(callers.admin, str(row.id))
    assert isinstance(stored, ConnectionRow)
    assert stored.details == {"path": "/srv/p"} and stored.type == "parquet_directory"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("/.a\x00\n é"), max_size=12) | st.text(max_size=20))
def test_an_accepted_path_is_absolute_normalised_and_printable(path: str) -> None:
    """Whatever the text, an accepted path is absolute, its own normal form, without '..'
    or control characters; a refused one is INVALID_ARGUMENT on the path's field."""
    if directory_path_problem(path) is not None:
        with pytest.raises(InvalidArgument) as caught:
            create_arguments(_parquet(path))
        assert caught.value.field == "parquet_directory.path"
        return
    target = create_arguments(_parquet(path)).target
    assert isinstance(target, ParquetDirectoryTarget) and target.path == path
    assert path.startswith("/") and not path.startswith("//")
    assert posixpath.normpath(path) == path and ".." not in path.split("/")
    assert path.isprintable()
