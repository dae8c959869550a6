"""Cross-tenant isolation and the user/deployment APIs of auth."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from sevvo.auth.v1 import auth_pb2, deployments_pb2, users_pb2
from sevvo.runtime.grpc_client import error_details
from tests.plugins.auth_stack import PASSWORD, AuthStack


@pytest.fixture
def auth_stack(module_auth_stack: AuthStack) -> AuthStack:
    """One auth service for the module: every test makes its own org, so none meet."""
    return module_auth_stack


def test_org_a_sees_nothing_of_org_b(auth_stack: AuthStack) -> None:
    """Org A's admin can neither read, list nor revoke org B's users or deployments."""
    a, b = auth_stack.create_org("Org A"), auth_stack.create_org("Org B")
    b_deployment, b_token = auth_stack.new_deployment(b)
    b_user = auth_stack.users(b.admin_token).ListUsers(users_pb2.ListUsersRequest()).users[0]

    users_a = auth_stack.users(a.admin_token)
    deployments_a = auth_stack.deployments(a.admin_token)
    listed = users_a.ListUsers(users_pb2.ListUsersRequest()).users
    assert [u.org_id for u in listed] == [a.org_id]
    assert deployments_a.ListDeployments(deployments_pb2.ListDeploymentsRequest()).deployments == []
    calls: list[Callable[[], object]] = [
        lambda: users_a.GetUser(users_pb2.GetUserRequest(id=b_user.id)),
        lambda: deployments_a.GetDeployment(deployments_pb2.GetDeploymentRequest(id=b_deployment)),
        lambda: deployments_a.RevokeDeployment(
            deployments_pb2.RevokeDeploymentRequest(id=b_deployment)
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    still = auth_stack.deployments(b.admin_token).GetDeployment(
        deployments_pb2.GetDeploymentRequest(id=b_deployment)
    )
    assert still.state == deployments_pb2.DEPLOYMENT_STATE_ACTIVE
    assert auth_stack.agent_bearer(b_token)


def test_agent_of_org_a_is_scoped_to_org_a(auth_stack: AuthStack) -> None:
    """An agent bearer resolves to its own org and cannot use user or admin methods."""
    a, _b = auth_stack.create_org("Org A"), auth_stack.create_org("Org B")
    deployment_id, token = auth_stack.new_deployment(a)
    bearer = auth_stack.agent_bearer(token)
    caller = auth_stack.auth(bearer).GetCaller(auth_pb2.GetCallerRequest())
    assert (caller.kind, caller.org_id, caller.subject_id) == (
        auth_pb2.PRINCIPAL_KIND_AGENT,
        a.org_id,
        deployment_id,
    )
    with pytest.raises(grpc.RpcError) as caught:
        auth_stack.deployments(bearer).ListDeployments(deployments_pb2.ListDeploymentsRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_missing_object_and_foreign_object_look_the_same(auth_stack: AuthStack) -> None:
    """A random id and another org's id give the same NOT_FOUND reason."""
    a, b = auth_stack.create_org("Org A"), auth_stack.create_org("Org B")
    b_deployment, _ = auth_stack.new_deployment(b)
    stub = auth_stack.deployments(a.admin_token)
    reasons = []
    for deployment_id in (b_deployment, "00000000-0000-4000-8000-000000000000"):
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetDeployment(deployments_pb2.GetDeploymentRequest(id=deployment_id))
        reasons.append((caught.value.code(), error_details(caught.value).reason))
    assert reasons[0] == reasons[1] == (grpc.StatusCode.NOT_FOUND, "DEPLOYMENT_NOT_FOUND")


def test_member_cannot_create_or_revoke_deployments(auth_stack: AuthStack) -> None:
    """Deployment management needs the admin role; members may list."""
    org = auth_stack.create_org()
    auth_stack.users(org.admin_token).CreateUser(
        users_pb2.CreateUserRequest(email="member@acme.example", password=PASSWORD)
    )
    member = (
        auth_stack.auth()
        .SignIn(auth_pb2.SignInRequest(email="member@acme.example", password=PASSWORD))
        .session_token
    )
    with pytest.raises(grpc.RpcError) as caught:
        auth_stack.deployments(member).CreateDeployment(
            deployments_pb2.CreateDeploymentRequest(display_name="x")
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(caught.value).reason == "ADMIN_REQUIRED"
    listed = auth_stack.deployments(member).ListDeployments(
        deployments_pb2.ListDeploymentsRequest()
    )
    assert list(listed.deployments) == []


def test_sign_in_failures_do_not_say_which_part_was_wrong(auth_stack: AuthStack) -> None:
    """Unknown email and wrong password fail identically."""
    org = auth_stack.create_org()
    outcomes = []
    for email, password in ((org.admin_email, "wrong password!!"), ("nobody@x.example", PASSWORD)):
        with pytest.raises(grpc.RpcError) as caught:
            auth_stack.auth().SignIn(auth_pb2.SignInRequest(email=email, password=password))
        outcomes.append((caught.value.code(), caught.value.details()))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == grpc.StatusCode.UNAUTHENTICATED


def test_sign_in_is_case_insensitive_on_email(auth_stack: AuthStack) -> None:
    """Emails are compared without case."""
    org = auth_stack.create_org()
    response = auth_stack.auth().SignIn(
        auth_pb2.SignInRequest(email=org.admin_email.upper(), password=PASSWORD)
    )
    assert response.org_id == org.org_id


@pytest.mark.parametrize(
    ("email", "password", "field"),
    [
        ("not-an-email", PASSWORD, "email"),
        ("", PASSWORD, "email"),
        ("ok@acme.example", "short", "password"),
        ("ok@acme.example", "x" * 2000, "password"),
    ],
)
def test_create_user_rejects_invalid_input(
    auth_stack: AuthStack, email: str, password: str, field: str
) -> None:
    """Bad emails and passwords get INVALID_ARGUMENT naming the field; nothing is created."""
    org = auth_stack.create_org()
    stub = auth_stack.users(org.admin_token)
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateUser(users_pb2.CreateUserRequest(email=email, password=password))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value).field == field
    assert password not in (caught.value.details() or "")
    assert len(stub.ListUsers(users_pb2.ListUsersRequest()).users) == 1


def test_duplicate_email_is_already_exists(auth_stack: AuthStack) -> None:
    """Creating a user whose email is taken (in any org) fails with ALREADY_EXISTS."""
    a, b = auth_stack.create_org("Org A"), auth_stack.create_org("Org B")
    with pytest.raises(grpc.RpcError) as caught:
        auth_stack.users(b.admin_token).CreateUser(
            users_pb2.CreateUserRequest(email=a.admin_email, password=PASSWORD)
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize(
    "name", ["", "   ", "x" * 101, "bad\x00name", "bell\x07", "rtl\u202eoverride"]
)
def test_create_deployment_rejects_bad_names(auth_stack: AuthStack, name: str) -> None:
    """Deployment names must be 1-100 printable characters."""
    org = auth_stack.create_org()
    with pytest.raises(grpc.RpcError) as caught:
        auth_stack.deployments(org.admin_token).CreateDeployment(
            deployments_pb2.CreateDeploymentRequest(display_name=name)
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value).field == "display_name"


def test_deployments_page_through_in_creation_order(auth_stack: AuthStack) -> None:
    """ListDeployments pages with next_page_token and returns each deployment once."""
    org = auth_stack.create_org()
    created = [auth_stack.new_deployment(org, f"cluster-{i}")[0] for i in range(5)]
    stub = auth_stack.deployments(org.admin_token)
    seen: list[str] = []
    token = ""
    while True:
        page = stub.ListDeployments(
            deployments_pb2.ListDeploymentsRequest(page_size=2, page_token=token)
        )
        assert len(page.deployments) <= 2
        seen.extend(d.id for d in page.deployments)
        token = page.next_page_token
        if not token:
            break
    assert seen == created


def test_bad_page_token_is_invalid_argument(auth_stack: AuthStack) -> None:
    """A page token that this method never issued is rejected, not crashed on."""
    org = auth_stack.create_org()
    with pytest.raises(grpc.RpcError) as caught:
        auth_stack.users(org.admin_token).ListUsers(
            users_pb2.ListUsersRequest(page_token="!!not-a-token!!")
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value).field == "page_token"


def test_deployment_token_is_shown_once_and_stored_hashed(auth_stack: AuthStack) -> None:
    """The token appears only in the create response; the store holds no form of the secret."""
    import psycopg

    from sevvo.runtime import deployment_token

    org = auth_stack.create_org()
    deployment_id, token = auth_stack.new_deployment(org)
    fetched = auth_stack.deployments(org.admin_token).GetDeployment(
        deployments_pb2.GetDeploymentRequest(id=deployment_id)
    )
    secret = deployment_token.unwrap(token).secret
    assert secret not in str(fetched) and token not in str(fetched)
    with psycopg.connect(auth_stack.app.config.database_url) as conn:
        row = conn.execute(
            "select row_to_json(d)::text from auth.deployments d where id = %s", (deployment_id,)
        ).fetchone()
    assert row is not None
    assert secret not in row[0]
    assert secret.encode().hex() not in row[0]


def test_exchange_rejects_a_wrong_secret(auth_stack: AuthStack) -> None:
    """A token with the right deployment id but another secret is refused."""
    from sevvo.runtime import deployment_token

    org = auth_stack.create_org()
    deployment_id, _ = auth_stack.new_deployment(org)
    forged = deployment_token.wrap(
        deployment_token.DeploymentCredentials(deployment_id, deployment_token.new_secret())
    )
    with pytest.raises(grpc.RpcError) as caught:
        auth_stack.agent_bearer(forged)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_details(caught.value).reason == "INVALID_DEPLOYMENT_TOKEN"


def test_exchange_rejects_garbage_as_invalid_argument(auth_stack: AuthStack) -> None:
    """A string that is not a deployment token is INVALID_ARGUMENT and is not echoed."""
    garbage = "sevvo_dt_" + "A" * 40
    with pytest.raises(grpc.RpcError) as caught:
        auth_stack.agent_bearer(garbage)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert garbage not in (caught.value.details() or "")
