"""Client channels: the bearer read on every call, for every kind of method, sync and asyncio."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from devstack.pki import DevPki
from sevvo.runtime.grpc_client import ClientTls, secure_aio_channel, secure_channel
from tests.plugins.auth_stack import BackgroundLoop

_SERVICE = "test.Echo"


def _authorization(context: grpc.aio.ServicerContext) -> bytes:
    """What the server saw: the authorization header and a caller's own header, or "-"."""
    metadata = dict(context.invocation_metadata() or ())
    return f"{metadata.get('authorization', '-')}|{metadata.get('x-own', '-')}".encode()


async def _unary_unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return _authorization(context)


async def _unary_stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield _authorization(context)


async def _stream_unary(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    async for _ in requests:
        pass
    return _authorization(context)


async def _stream_stream(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
) -> AsyncIterator[bytes]:
    async for _ in requests:
        pass
    yield _authorization(context)


@pytest.fixture
def target(dev_pki: DevPki, background_loop: BackgroundLoop) -> Iterator[str]:
    """A plain TLS server (no sevvo policy) that answers with the headers it received."""
    handler = grpc.method_handlers_generic_handler(
        _SERVICE,
        {
            "UnaryUnary": grpc.unary_unary_rpc_method_handler(_unary_unary),
            "UnaryStream": grpc.unary_stream_rpc_method_handler(_unary_stream),
            "StreamUnary": grpc.stream_unary_rpc_method_handler(_stream_unary),
            "StreamStream": grpc.stream_stream_rpc_method_handler(_stream_stream),
        },
    )

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        credentials = grpc.ssl_server_credentials(
            [(dev_pki.server_key.read_bytes(), dev_pki.server_cert.read_bytes())]
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        return server, port

    server, port = background_loop.run(start())
    yield f"localhost:{port}"
    background_loop.run(server.stop(grace=0))


def _sync_calls(channel: grpc.Channel) -> list[bytes]:
    own = (("x-own", "kept"),)
    return [
        channel.unary_unary(f"/{_SERVICE}/UnaryUnary")(b"", metadata=own, timeout=5),
        *channel.unary_stream(f"/{_SERVICE}/UnaryStream")(b"", metadata=own, timeout=5),
        channel.stream_unary(f"/{_SERVICE}/StreamUnary")(iter([b""]), metadata=own, timeout=5),
        *channel.stream_stream(f"/{_SERVICE}/StreamStream")(iter([b""]), metadata=own, timeout=5),
    ]


async def _aio_calls(channel: grpc.aio.Channel) -> list[bytes]:
    own = grpc.aio.Metadata(("x-own", "kept"))

    async def requests() -> AsyncIterator[bytes]:
        yield b""

    return [
        await channel.unary_unary(f"/{_SERVICE}/UnaryUnary")(b"", metadata=own, timeout=5),
        *[
            r
            async for r in channel.unary_stream(f"/{_SERVICE}/UnaryStream")(
                b"", metadata=own, timeout=5
            )
        ],
        await channel.stream_unary(f"/{_SERVICE}/StreamUnary")(requests(), metadata=own, timeout=5),
        *[
            r
            async for r in channel.stream_stream(f"/{_SERVICE}/StreamStream")(
                requests(), metadata=own, timeout=5
            )
        ],
    ]


def test_blocking_channel_sends_the_current_bearer_on_every_kind_of_call(
    target: str, dev_pki: DevPki
) -> None:
    """Each call reads the bearer anew, and the caller's own metadata goes along."""
    tokens = (f"token-{n}" for n in itertools.count())
    with secure_channel(target, ClientTls(dev_pki.ca_cert), lambda: next(tokens)) as channel:
        seen = _sync_calls(channel)
    assert seen == [f"Bearer token-{n}|kept".encode() for n in range(4)]


def test_blocking_channel_without_a_bearer_sends_no_authorization(
    target: str, dev_pki: DevPki
) -> None:
    """No bearer source, or one with nothing yet, adds no header at all."""
    with secure_channel(target, ClientTls(dev_pki.ca_cert)) as channel:
        assert _sync_calls(channel) == [b"-|kept"] * 4
    with secure_channel(target, ClientTls(dev_pki.ca_cert), lambda: None) as channel:
        assert _sync_calls(channel) == [b"-|kept"] * 4


def test_asyncio_channel_sends_the_current_bearer_on_every_kind_of_call(
    target: str, dev_pki: DevPki
) -> None:
    """The asyncio channel behaves as the blocking one does."""
    tokens = (f"token-{n}" for n in itertools.count())

    async def run() -> tuple[list[bytes], list[bytes]]:
        tls = ClientTls(dev_pki.ca_cert)
        async with secure_aio_channel(target, tls, lambda: next(tokens)) as with_bearer:
            first = await _aio_calls(with_bearer)
        async with secure_aio_channel(target, tls) as without:
            second = await _aio_calls(without)
        return first, second

    with_bearer, without = asyncio.run(run())
    assert with_bearer == [f"Bearer token-{n}|kept".encode() for n in range(4)]
    assert without == [b"-|kept"] * 4
