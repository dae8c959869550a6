"""A benchmark tenant: an org with its admin session, a running agent and one connection."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc

from devstack.postgres import EmbeddedPostgres
from devstack.source_db import SourceDatabase
from devstack.stack import RunningStack
from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc, deployments_pb2, deployments_pb2_grpc
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.connections.v1 import connections_pb2_grpc as cpb_grpc
from sevvo.runtime.grpc_client import ClientTls, secure_aio_channel


@dataclass
class Tenant:
    """A benchmark org: its admin's session channel and a connection its agent can reach."""

    channel: grpc.aio.Channel
    connection_id: str


async def create_tenant(
    stack: RunningStack,
    source_pg: EmbeddedPostgres,
    source: SourceDatabase,
    name: str,
    password: str,
) -> Tenant:
    """Creates an org named ``name``, starts its agent and saves a connection to ``source``.

    ``password`` is both the admin's and the source reader's; the caller closes the channel.
    """
    email = f"bench@{name}.example"
    stack.auth.domain.create_org_with_admin(name, email, password)
    tls = ClientTls(stack.pki.ca_cert)
    anonymous = secure_aio_channel(stack.grpc_target, tls)
    session = await auth_pb2_grpc.AuthServiceStub(anonymous).SignIn(
        auth_pb2.SignInRequest(email=email, password=password)
    )
    await anonymous.close()
    user = secure_aio_channel(stack.grpc_target, tls, lambda: session.session_token)
    created = await deployments_pb2_grpc.DeploymentServiceStub(user).CreateDeployment(
        deployments_pb2.CreateDeploymentRequest(display_name=f"{name}-agent")
    )
    agent = stack.start_agent(created.deployment_token, name=f"{name}-agent", wait=False)
    await asyncio.to_thread(agent.wait_until_ready, timeout=60)
    connection = await cpb_grpc.ConnectionServiceStub(user).CreateConnection(
        cpb.CreateConnectionRequest(
            display_name="shop",
            fields=cpb.PostgresFields(
                host="localhost",
                port=source_pg.port,
                database=source.database,
                username=source.reader,
                password=password,
                ssl_mode=cpb.SSL_MODE_DISABLE,
            ),
        )
    )
    return Tenant(user, connection.id)
