"""ListAuditEvents' filter rules and filter-bound page tokens, as pure functions (no servers).

The same rules over gRPC, and what the filters select, are in test_audit_log.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sevvo.runtime import audit, paging
from sevvo.runtime.errors import InvalidArgument

T0 = datetime(2025, 5, 1, 9, 30, tzinfo=UTC)
ID = "3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10"


@pytest.mark.parametrize(
    ("filters", "field", "says"),
    [
        ({"action": "connection.*"}, "action", "prefix ending in a dot"),
        ({"action": "Connection.Create"}, "action", "lower-case"),
        ({"action": ".create"}, "action", "such as connection.create"),
        ({"action": "a" * 201}, "action", "at most 200"),
        ({"action": "user. sign_in"}, "action", "spaces"),
        ({"actor_id": "not-a-uuid"}, "actor_id", "UUID"),
        ({"actor_id": "system"}, "actor_id", "sevvo for the control plane"),
        ({"actor_email": "nobody"}, "actor_email", "email address"),
        ({"actor_email": "a@b@c"}, "actor_email", "email address"),
        ({"actor_email": "a" * 380 + "@b.example"}, "actor_email", "at most 384"),
        ({"target_id": "has space"}, "target_id", "spaces"),
        ({"target_id": "bidi\u202eid"}, "target_id", "invisible"),
        ({"start": T0, "end": T0}, "end_time", "after start_time"),
        ({"start": T0, "end": T0 - timedelta(seconds=1)}, "end_time", "after start_time"),
        ({"start": datetime(2025, 5, 1)}, "start_time", "time zone"),
    ],
)
def test_a_filter_that_cannot_mean_anything_is_refused_naming_it(
    filters: dict[str, object], field: str, says: str
) -> None:
    """Each bad filter is InvalidArgument on its own field, with a message saying what fits."""
    with pytest.raises(InvalidArgument) as caught:
        audit.make_filter(**filters)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert says in caught.value.description


def test_good_filters_are_normalised() -> None:
    """Ids and emails are lower-cased and trimmed; a trailing dot keeps the action a prefix."""
    where = audit.make_filter(
        action=" connection. ",
        actor_id=ID.upper(),
        actor_email=" Ada@Acme.Example ",
        target_id=" pk-0a1b2c ",
        start=T0.astimezone(timezone(timedelta(hours=2))),
        end=T0 + timedelta(hours=1),
    )
    assert where == audit.Filter(
        "connection.", ID, "ada@acme.example", "pk-0a1b2c", T0, T0 + timedelta(hours=1)
    )
    assert audit.make_filter(actor_id="sevvo").actor_id == "sevvo"
    # The longest addresses auth accepts are longer than other filters may be.
    long_email = "a" * 64 + "@" + "b" * 255 + ".example"
    assert audit.make_filter(actor_email=long_email).actor_email == long_email


def test_no_filter_has_the_empty_scope_and_each_filter_its_own() -> None:
    """Unfiltered tokens keep the old two-part shape; any filter changes the scope."""
    assert audit.Filter().scope() == ""
    scopes = {
        audit.make_filter(action="user.").scope(),
        audit.make_filter(action="user.sign_in").scope(),
        audit.make_filter(actor_id=ID).scope(),
        audit.make_filter(target_id=ID).scope(),
        audit.make_filter(start=T0).scope(),
        audit.make_filter(end=T0).scope(),
    }
    assert len(scopes) == 6 and "" not in scopes
    # The same moment written in another zone is the same filter.
    assert (
        audit.make_filter(start=T0).scope()
        == audit.make_filter(start=T0.astimezone(timezone(timedelta(hours=-5)))).scope()
    )


@given(st.text(max_size=40), st.text(max_size=40))
def test_a_page_token_holds_only_under_the_scope_it_was_made_for(made: str, used: str) -> None:
    """decode_cursor gives the position back under the same scope and refuses any other."""
    row_id = str(uuid.uuid4())
    token = paging.encode_cursor(T0, row_id, made)
    if made == used:
        assert paging.decode_cursor(token, used) == (T0, row_id)
    else:
        with pytest.raises(InvalidArgument) as caught:
            paging.decode_cursor(token, used)
        assert caught.value.reason == "INVALID_PAGE_TOKEN"


def test_an_unscoped_token_is_the_format_every_list_method_already_issued() -> None:
    """A token without a scope is the same bytes as before scopes existed."""
    row_id = str(uuid.uuid4())
    assert paging.encode_cursor(T0, row_id) == paging.encode_cursor(T0, row_id, "")
    assert paging.decode_cursor(paging.encode_cursor(T0, row_id)) == (T0, row_id)
