"""The workload-grant contract shared by auth, connections and the agent (pure logic)."""

from __future__ import annotations

import pytest

from sevvo.runtime.errors import InvalidArgument
from sevvo.runtime.workload_grants import (
    MAX_GRANTS,
    Grant,
    checked_grants,
    grants_from_claim,
    may_borrow,
    role_name,
)

CONN = "6f1c2d8e-1f6a-4f7b-9a51-0c6d2b8a9e11"
OTHER = "0b3e7d4c-5a2f-4c1d-8e9b-7f6a5d4c3b21"


@pytest.mark.parametrize("name", ["readonly", "etl", "a", "r2_d2", "x" * 63])
def test_good_role_names_pass(name: str) -> None:
    assert role_name("role", name) == name


@pytest.mark.parametrize("name", ["", "ReadOnly", "1st", "_x", "etl-job", "x" * 64, "a b"])
def test_bad_role_names_name_the_field(name: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        role_name("grants[0].role", name)
    assert "grants[0].role" in str(raised.value)


def test_grants_are_distinct_sorted_and_canonical() -> None:
    grants = checked_grants(
        "grants", [(CONN.upper(), "readonly"), (CONN, "readonly"), (OTHER, "etl")]
    )
    assert grants == (Grant(OTHER, "etl"), Grant(CONN, "readonly"))


def test_grants_must_not_be_empty_or_too_many_or_malformed() -> None:
    with pytest.raises(InvalidArgument, match="at least one"):
        checked_grants("grants", [])
    many = [(CONN, f"r{i}") for i in range(MAX_GRANTS + 1)]
    with pytest.raises(InvalidArgument, match=f"at most {MAX_GRANTS}"):
        checked_grants("grants", many)
    with pytest.raises(InvalidArgument, match=r"grants\[1\].connection_id"):
        checked_grants("grants", [(CONN, "etl"), ("nope", "etl")])


def test_a_claim_round_trips_and_malformed_entries_grant_nothing() -> None:
    grants = checked_grants("grants", [(CONN, "readonly"), (OTHER, "etl")])
    claim = [g.claim() for g in grants]
    assert grants_from_claim(claim) == grants
    junk = [
        {"connection_id": CONN},
        "readonly",
        {"connection_id": 1, "role": "etl"},
        {"connection_id": CONN, "role": "Bad-Role"},
    ]
    assert grants_from_claim(junk) == ()
    assert grants_from_claim("readonly") == ()
    assert grants_from_claim(None) == ()


def test_may_borrow_only_granted_roles_within_the_ttl() -> None:
    grants = checked_grants("grants", [(CONN, "readonly")])
    assert may_borrow(grants, 3600, CONN, "readonly", 3600) is None
    assert may_borrow(grants, 3600, CONN, "readonly", 3601) == "TTL_OVER_WORKLOAD_MAXIMUM"
    assert may_borrow(grants, 3600, CONN, "etl", 60) == "ROLE_NOT_GRANTED"
    assert may_borrow(grants, 3600, OTHER, "readonly", 60) == "ROLE_NOT_GRANTED"
