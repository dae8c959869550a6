"""SEVVO_WARM_POOL: which (connection, role) pools the agent keeps, and clear refusals."""

from __future__ import annotations

import pytest

from agent.config import AgentConfig
from agent.warm_pool import MAX_POOL_SIZE, PoolSpec, parse_warm_pool
from sevvo.runtime import deployment_token
from sevvo.runtime.config import ConfigError

VAR = "SEVVO_WARM_POOL"
UUID = "0b0e7a7e-0000-4000-8000-0000000000aa"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ()),
        (" , ", ()),
        ("reporting-db:readonly=5", (PoolSpec("reporting-db", "readonly", 5),)),
        ("reporting-db=2", (PoolSpec("reporting-db", "default", 2),)),
        (
            "reporting-db:readonly=5, other:etl=2",
            (PoolSpec("reporting-db", "readonly", 5), PoolSpec("other", "etl", 2)),
        ),
        (f"{UUID}:readonly = 3", (PoolSpec(UUID, "readonly", 3),)),
        ("Reporting DB:readonly=1", (PoolSpec("Reporting DB", "readonly", 1),)),
        ("db:readonly=1,db:etl=1", (PoolSpec("db", "readonly", 1), PoolSpec("db", "etl", 1))),
    ],
    ids=["empty", "blank", "one", "default-role", "two", "uuid", "spaces-in-name", "two-roles"],
)
def test_pool_specs_parse(value: str, expected: tuple[PoolSpec, ...]) -> None:
    """CONNECTION[:ROLE]=SIZE entries, comma-separated; ROLE defaults to "default"."""
    assert parse_warm_pool(VAR, value) == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("reporting-db:readonly", "has no size"),
        (":readonly=5", "names no connection"),
        ("db:ReadOnly=5", "lowercase letters"),
        ("db:=5", "lowercase letters"),
        ("db:readonly=five", "is not a whole number"),
        ("db:readonly=0", f"between 1 and {MAX_POOL_SIZE}"),
        (f"db:readonly={MAX_POOL_SIZE + 1}", f"between 1 and {MAX_POOL_SIZE}"),
        ("db:readonly=-1", f"between 1 and {MAX_POOL_SIZE}"),
        ("a:b:c=1", "by its UUID"),
        ("a=b=1", "by its UUID"),
        ("db:readonly=2,db:readonly=3", "configured twice"),
        ("db=1,db:default=1", "configured twice"),
        (",".join(f"db{i}=50" for i in range(5)), "at most 200"),
    ],
    ids=[
        "no-size",
        "no-connection",
        "upper-case-role",
        "empty-role",
        "size-not-a-number",
        "size-zero",
        "size-too-big",
        "size-negative",
        "two-colons",
        "two-equals",
        "duplicate",
        "duplicate-default",
        "too-many-in-all",
    ],
)
def test_bad_pool_specs_are_refused_with_a_reason(value: str, says: str) -> None:
    """Each malformed entry fails naming the variable, the entry and what to fix."""
    with pytest.raises(ConfigError) as caught:
        parse_warm_pool(VAR, value)
    assert VAR in str(caught.value)
    assert says in str(caught.value)


def test_agent_config_reads_the_pool_and_names_the_variable_when_bad() -> None:
    """AgentConfig.load carries the parsed pools; a bad value fails at start, token unechoed."""
    token = deployment_token.wrap(
        deployment_token.DeploymentCredentials(
            "0b0e7a7e-0000-4000-8000-000000000001", deployment_token.new_secret()
        )
    )
    base = {
        "SEVVO_DEPLOYMENT_TOKEN": token,
        "SEVVO_CONTROL_PLANE_ENDPOINT": "cp.example",
        "SEVVO_TEMPORAL_ADDRESS": "temporal.example",
    }
    assert AgentConfig.load(base).warm_pool == ()
    config = AgentConfig.load(
        {**base, VAR: "db:readonly=2", "SEVVO_WARM_POOL_REFILL_SECONDS": "1.5"}
    )
    assert config.warm_pool == (PoolSpec("db", "readonly", 2),)
    assert config.warm_pool_refill_seconds == 1.5
    for bad in ({VAR: "db:readonly=x"}, {"SEVVO_WARM_POOL_REFILL_SECONDS": "0"}):
        with pytest.raises(ConfigError) as caught:
            AgentConfig.load({**base, **bad})
        assert next(iter(bad)) in str(caught.value)
        assert token not in str(caught.value)
