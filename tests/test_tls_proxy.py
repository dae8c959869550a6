"""The TLS-terminating proxy in front of plaintext dev servers (Temporal's in particular)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
import structlog
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.service import TLSConfig

from devstack.pki import DevPki
from devstack.temporal import TemporalDevServer
from devstack.tls_proxy import ThreadedTlsProxy, TlsProxy
from sevvo.runtime.logs import configure_logging
from tests.plugins.log_setup import configure_test_logging


def _upstream(server: TemporalDevServer) -> tuple[str, int]:
    host, _, port = server.address.rpartition(":")
    return host, int(port)


@pytest.fixture(scope="module")
def temporal_server() -> Iterator[TemporalDevServer]:
    with TemporalDevServer() as server:
        yield server


@pytest.fixture(scope="module")
def tls_proxy(temporal_server: TemporalDevServer, dev_pki: DevPki) -> Iterator[ThreadedTlsProxy]:
    """TLS in front of the Temporal dev server; no client certificate asked for."""
    with ThreadedTlsProxy(
        _upstream(temporal_server), dev_pki.server_cert, dev_pki.server_key
    ) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def mtls_proxy(temporal_server: TemporalDevServer, dev_pki: DevPki) -> Iterator[ThreadedTlsProxy]:
    """Mutual TLS in front of the Temporal dev server: a dev-CA client certificate is required."""
    with ThreadedTlsProxy(
        _upstream(temporal_server),
        dev_pki.server_cert,
        dev_pki.server_key,
        client_ca=dev_pki.ca_cert,
    ) as proxy:
        yield proxy


def _tls(dev_pki: DevPki, *, client_cert: bool = False) -> TLSConfig:
    return TLSConfig(
        server_root_ca_cert=dev_pki.ca_cert.read_bytes(),
        domain="localhost",
        client_cert=dev_pki.client_cert.read_bytes() if client_cert else None,
        client_private_key=dev_pki.client_key.read_bytes() if client_cert else None,
    )


def _healthy(address: str, tls: TLSConfig | bool) -> bool:
    async def check() -> bool:
        client = await Client.connect(address, tls=tls)
        return await client.service_client.check_health()

    return asyncio.run(check())


def _client_context(dev_pki: DevPki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=dev_pki.ca_cert)
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def _wait_for_event(events: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    """The proxy logs from its own thread, possibly just after the client saw the failure."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for event in list(events):
            if event["event"] == name:
                return event
        time.sleep(0.01)
    raise AssertionError(f"no {name!r} event in {events}")


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


# --- Temporal through the proxy ------------------------------------------------------


def test_temporal_client_trusting_the_ca_reaches_temporal_through_the_proxy(
    tls_proxy: ThreadedTlsProxy, dev_pki: DevPki
) -> None:
    """temporalio connects over TLS (verifying the dev CA) and the frontend reports healthy."""
    assert _healthy(tls_proxy.address, _tls(dev_pki))


def test_async_proxy_on_the_callers_loop_serves_temporal(
    temporal_server: TemporalDevServer, dev_pki: DevPki
) -> None:
    """TlsProxy runs on the caller's event loop and relays gRPC calls to Temporal."""

    async def server_version() -> str:
        async with TlsProxy(
            _upstream(temporal_server), dev_pki.server_cert, dev_pki.server_key
        ) as proxy:
            client = await Client.connect(proxy.address, tls=_tls(dev_pki))
            info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
            version: str = info.server_version
            return version

    assert asyncio.run(server_version()) != ""


def test_proxy_selects_h2_with_alpn(tls_proxy: ThreadedTlsProxy, dev_pki: DevPki) -> None:
    """The proxy picks ALPN h2, without which temporalio's core refuses the connection."""
    host, _, port = tls_proxy.address.rpartition(":")
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        _client_context(dev_pki).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"


def test_plaintext_temporal_client_is_refused(tls_proxy: ThreadedTlsProxy) -> None:
    """A client speaking plaintext gRPC to the proxy fails to connect."""
    with pytest.raises(RuntimeError, match="Failed client connect"):
        _healthy(tls_proxy.address, False)


def test_proxy_keeps_serving_after_a_failed_handshake(
    tls_proxy: ThreadedTlsProxy, dev_pki: DevPki
) -> None:
    """A failed handshake costs only that connection; the next TLS client is served."""
    with pytest.raises(RuntimeError):
        _healthy(tls_proxy.address, False)
    assert _healthy(tls_proxy.address, _tls(dev_pki))


def test_mtls_proxy_accepts_the_dev_client_cert(
    mtls_proxy: ThreadedTlsProxy, dev_pki: DevPki
) -> None:
    """With client_ca set, a temporalio client presenting the dev client cert gets through."""
    assert _healthy(mtls_proxy.address, _tls(dev_pki, client_cert=True))


def test_mtls_proxy_refuses_a_client_without_cert(
    mtls_proxy: ThreadedTlsProxy, dev_pki: DevPki
) -> None:
    """With client_ca set, a temporalio client that trusts the CA but has no cert fails."""
    with pytest.raises(RuntimeError, match="Failed client connect"):
        _healthy(mtls_proxy.address, _tls(dev_pki))


def test_mtls_handshake_failure_is_logged_at_debug(
    mtls_proxy: ThreadedTlsProxy, dev_pki: DevPki
) -> None:
    """A client without a certificate is logged at debug with the TLS reason."""
    # The suite logs at INFO; debug events must reach the capture for this one test.
    configure_logging("tests", level="DEBUG", json=True, stream=sys.stderr)
    try:
        with structlog.testing.capture_logs() as events:
            with pytest.raises(RuntimeError):
                _healthy(mtls_proxy.address, _tls(dev_pki))
            # The proxy logs from its own thread, possibly after the client gave up.
            event = _wait_for_event(events, "devstack.tls_proxy.handshake_failed")
    finally:
        configure_test_logging()
    assert (event["log_level"], event["reason"]) == ("debug", "PEER_DID_NOT_RETURN_A_CERTIFICATE")


# --- byte relay ----------------------------------------------------------------------


def test_proxy_relays_a_large_stream_intact(dev_pki: DevPki) -> None:
    """8 MiB sent through the proxy to an echo server come back byte for byte."""
    payload = os.urandom(8 * 1024 * 1024)

    async def round_trip() -> bytes:
        echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
        port = echo.sockets[0].getsockname()[1]
        try:
            async with TlsProxy(
                ("127.0.0.1", port), dev_pki.server_cert, dev_pki.server_key
            ) as proxy:
                host, _, proxy_port = proxy.address.rpartition(":")
                reader, writer = await asyncio.open_connection(
                    host, int(proxy_port), ssl=_client_context(dev_pki), server_hostname="localhost"
                )
                writer.write(payload)
                echoed = await reader.readexactly(len(payload))
                writer.close()
                await writer.wait_closed()
                return echoed
        finally:
            echo.close()
            await echo.wait_closed()

    assert hashlib.sha256(asyncio.run(round_trip())).digest() == hashlib.sha256(payload).digest()


def test_client_leaving_closes_the_upstream_connection(dev_pki: DevPki) -> None:
    """When the TLS client disconnects, the proxy closes its upstream connection too."""

    async def upstream_sees_eof() -> bytes:
        seen: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.set_result(await reader.read())  # read() returns at EOF only
            writer.close()
            await writer.wait_closed()

        upstream = await asyncio.start_server(record, "127.0.0.1", 0)
        port = upstream.sockets[0].getsockname()[1]
        try:
            async with TlsProxy(
                ("127.0.0.1", port), dev_pki.server_cert, dev_pki.server_key
            ) as proxy:
                host, _, proxy_port = proxy.address.rpartition(":")
                _, writer = await asyncio.open_connection(
                    host, int(proxy_port), ssl=_client_context(dev_pki), server_hostname="localhost"
                )
                writer.write(b"bye")
                await writer.drain()
                writer.close()
                await writer.wait_closed()
                return await asyncio.wait_for(seen, 5)
        finally:
            upstream.close()
            await upstream.wait_closed()

    assert asyncio.run(upstream_sees_eof()) == b"bye"


def test_stop_closes_open_connections(dev_pki: DevPki) -> None:
    """stop() ends every relayed connection: the client then reads EOF."""

    async def client_read_after_stop() -> bytes:
        upstream = await asyncio.start_server(_echo, "127.0.0.1", 0)
        port = upstream.sockets[0].getsockname()[1]
        proxy = TlsProxy(("127.0.0.1", port), dev_pki.server_cert, dev_pki.server_key)
        await proxy.start()
        host, _, proxy_port = proxy.address.rpartition(":")
        reader, writer = await asyncio.open_connection(
            host, int(proxy_port), ssl=_client_context(dev_pki), server_hostname="localhost"
        )
        try:
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            await proxy.stop()
            return await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
            await writer.wait_closed()
            upstream.close()
            await upstream.wait_closed()

    assert asyncio.run(client_read_after_stop()) == b""


def test_threaded_proxy_start_raises_in_the_caller(dev_pki: DevPki) -> None:
    """A ThreadedTlsProxy that cannot bind raises OSError from start(), not in its thread."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proxy = ThreadedTlsProxy(
            ("127.0.0.1", 1), dev_pki.server_cert, dev_pki.server_key, port=port
        )
        with pytest.raises(OSError):
            proxy.start()


def test_stop_does_not_wait_long_for_a_silent_client(dev_pki: DevPki) -> None:
    """stop() aborts a client that never answers close_notify after close_timeout."""
    with socket.socket() as upstream:
        upstream.bind(("127.0.0.1", 0))
        upstream.listen()
        proxy = ThreadedTlsProxy(
            upstream.getsockname(), dev_pki.server_cert, dev_pki.server_key, close_timeout=0.1
        ).start()
        host, _, port = proxy.address.rpartition(":")
        raw = socket.create_connection((host, int(port)), timeout=5)
        # Handshaken and then never read from again, so the proxy's close_notify goes unanswered.
        with _client_context(dev_pki).wrap_socket(raw, server_hostname="localhost") as silent:
            silent.sendall(b"hello")
            accepted, _ = upstream.accept()
            with accepted:
                accepted.recv(5)
                started = time.monotonic()
                proxy.stop()
                elapsed = time.monotonic() - started
    assert elapsed < 1.0
