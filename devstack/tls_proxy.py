"""A TLS-terminating TCP proxy, so plaintext-only dev servers can be reached over (m)TLS.

The Temporal dev server speaks plaintext only, but the agent must reach Temporal over TLS
and, optionally, mutual TLS, exactly as it would in production. This proxy listens on
127.0.0.1, terminates TLS with a certificate from devstack.pki and forwards raw bytes to
the plaintext upstream. It understands nothing above TCP, so gRPC (HTTP/2) passes through
untouched; it only advertises ALPN ``h2``, which gRPC clients require (see TlsProxy).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ssl
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog

from devstack.processes import run_from_environment, until_stop_signal
from sevvo.runtime import config as c

log = structlog.get_logger(__name__)

HOST = "127.0.0.1"
_CHUNK = 64 * 1024
# A client that opens a TCP connection and never finishes the handshake must not hold a
# task forever.
_HANDSHAKE_TIMEOUT = 10.0
# Closing a TLS side waits for the peer's close_notify, by default for 30 s; a peer that
# never answers must not hold up stop() that long.
DEFAULT_CLOSE_TIMEOUT = 2.0


def server_ssl_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """Build the proxy's server-side context: TLS 1.2+, ALPN ``h2``, client certs if asked.

    With ``client_ca`` the handshake fails unless the client presents a certificate issued
    by that CA (mutual TLS); without it no client certificate is requested.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    # gRPC runs over HTTP/2 and its clients negotiate it with ALPN; tonic (under
    # temporalio's Rust core) refuses a TLS connection on which the server chose no protocol.
    context.set_alpn_protocols(["h2"])
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=client_ca)
    return context


class TlsProxy:
    """Accepts TLS on 127.0.0.1 and relays the decrypted bytes to a plaintext ``upstream``.

    ``port=0`` lets the kernel pick a free port; ``address`` reports it once started. Each
    accepted connection gets its own upstream connection; bytes are copied in both
    directions with flow control (a slow reader on one side slows the writer on the other)
    and both sides are closed when either gives up; a TLS peer gets ``close_timeout``
    seconds to answer the closing close_notify before its connection is aborted. Failed
    handshakes (a plaintext client, a missing or untrusted client certificate) are logged
    at debug and cost only that connection. Runs on the caller's event loop; see
    ThreadedTlsProxy for sync code.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        cert: Path,
        key: Path,
        client_ca: Path | None = None,
        *,
        port: int = 0,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        self.upstream = upstream
        self._close_timeout = close_timeout
        self._context = server_ssl_context(cert, key, client_ca)
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        """The listening address, ``127.0.0.1:PORT``."""
        if self._port is None:
            raise RuntimeError("the proxy is not running")
        return f"{HOST}:{self._port}"

    async def start(self) -> None:
        """Bind and start accepting connections."""
        if self._server is not None:
            raise RuntimeError("the proxy is already running")
        # Plain TCP here and TLS per connection in _serve: asyncio's own ssl= listener
        # swallows handshake errors, and we want to log them.
        self._server = await asyncio.start_server(self._accept, HOST, self._requested_port)
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("devstack.tls_proxy.started", address=self.address, upstream=self._upstream_text)

    async def stop(self) -> None:
        """Stop listening, cut every open connection and wait until all are closed."""
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        # Python 3.11's wait_closed does not wait for accepted connections; we do.
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        log.info("devstack.tls_proxy.stopped", address=self.address)
        self._server = None
        self._port = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def _upstream_text(self) -> str:
        return f"{self.upstream[0]}:{self.upstream[1]}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # stream callbacks always run inside a task
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # Only stop() cancels these tasks, and it is waiting for exactly that. Python
            # 3.11's stream callback calls task.exception() on its handler, which raises
            # for a cancelled task and prints "Exception in callback", so end normally.
            pass
        finally:
            self._connections.discard(task)

    async def _serve(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        peer = client_writer.get_extra_info("peername")
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            try:
                await client_writer.start_tls(
                    self._context, ssl_handshake_timeout=_HANDSHAKE_TIMEOUT
                )
            except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
                log.debug(
                    "devstack.tls_proxy.handshake_failed",
                    peer=str(peer),
                    error=type(exc).__name__,
                    reason=getattr(exc, "reason", None) or str(exc),
                )
                return
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
            except OSError as exc:
                log.warning(
                    "devstack.tls_proxy.upstream_unreachable",
                    upstream=self._upstream_text,
                    error=type(exc).__name__,
                )
                return
            await asyncio.gather(
                _pipe(client_reader, upstream_writer),
                _pipe(upstream_reader, client_writer),
            )
        finally:
            await _close(client_writer, self._close_timeout)
            if upstream_writer is not None:
                await _close(upstream_writer, self._close_timeout)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until EOF, then pass the EOF on.

    drain() after every chunk is the backpressure: it waits while the writer's buffer is
    above its high-water mark, and meanwhile nothing more is read from the other side.
    """
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        # Plain TCP can half-close, which lets the other direction finish; TLS cannot
        # (close_notify ends the whole session), so that side is closed outright.
        if writer.can_write_eof():
            writer.write_eof()
        else:
            writer.close()
    except OSError:  # includes ConnectionResetError and ssl.SSLError
        # The peer went away mid-stream; closing both sides (in _serve) is all that is left.
        writer.close()


async def _close(writer: asyncio.StreamWriter, timeout: float) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), timeout)
    except TimeoutError:
        writer.transport.abort()
    except OSError:
        pass  # the peer reset the connection first: it is closed either way


class ThreadedTlsProxy:
    """A TlsProxy hosted on its own event loop in a daemon thread, for sync code and tests.

    ``start()`` returns once the proxy listens (or raises what its start raised);
    ``stop()`` closes every connection, ends the loop and joins the thread.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        cert: Path,
        key: Path,
        client_ca: Path | None = None,
        *,
        port: int = 0,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        # Built here, not in the thread, so a bad certificate path fails in the caller.
        self.proxy = TlsProxy(
            upstream, cert, key, client_ca, port=port, close_timeout=close_timeout
        )
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    @property
    def address(self) -> str:
        """The listening address, ``127.0.0.1:PORT``."""
        return self.proxy.address

    def start(self) -> Self:
        """Start the loop thread and wait until the proxy listens."""
        if self._thread is not None:
            raise RuntimeError("the proxy is already running")
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=asyncio.run,
            args=(self._main(started),),
            name=f"tls-proxy-{self.proxy.upstream[1]}",
            daemon=True,
        )
        self._thread.start()
        try:
            started.result()
        except BaseException:
            self._thread.join()
            self._thread = self._loop = self._stop_event = None
            raise
        return self

    def stop(self) -> None:
        """Stop the proxy and its loop; returns when the thread has exited."""
        if self._thread is None:
            return
        if self._loop is not None and self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join()
        self._thread = None
        self._loop = None
        self._stop_event = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _main(self, started: concurrent.futures.Future[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        try:
            await self.proxy.start()
        except BaseException as exc:
            started.set_exception(exc)
            return
        started.set_result(None)
        try:
            await self._stop_event.wait()
        finally:
            await self.proxy.stop()


@dataclass(frozen=True)
class ProxyConfig:
    """The proxy as its own process (``python -m devstack.tls_proxy``), read from the environment.

    Run that way, it can be killed and restarted on the same port like any other component
    of devstack.process_stack.
    """

    upstream: tuple[str, int]
    cert: Path
    key: Path
    client_ca: Path | None
    port: int
    log_level: str = "INFO"

    @classmethod
    def load(cls, env: Mapping[str, str]) -> ProxyConfig:
        """Reads SEVVO_PROXY_UPSTREAM (host:port), SEVVO_PROXY_PORT, the TLS files and an
        optional SEVVO_PROXY_CLIENT_CA_FILE (mutual TLS); raises ConfigError naming a bad one."""
        upstream = c.string(env, "SEVVO_PROXY_UPSTREAM")
        host, _, port = upstream.rpartition(":")
        if not host or not port.isdigit():
            raise c.ConfigError(f"SEVVO_PROXY_UPSTREAM must be host:port, got {upstream!r}")
        return cls(
            upstream=(host, int(port)),
            cert=c.existing_file(env, "SEVVO_TLS_CERT_FILE"),
            key=c.existing_file(env, "SEVVO_TLS_KEY_FILE"),
            client_ca=c.optional_file(env, "SEVVO_PROXY_CLIENT_CA_FILE"),
            port=c.integer(env, "SEVVO_PROXY_PORT", 0, minimum=0, maximum=65535),
            log_level=c.log_level(env),
        )


async def _serve(config: ProxyConfig) -> None:
    proxy = TlsProxy(config.upstream, config.cert, config.key, config.client_ca, port=config.port)
    await proxy.start()
    await until_stop_signal()
    await proxy.stop()


def main() -> int:
    """Runs the proxy until SIGINT or SIGTERM, configured from the environment."""
    return run_from_environment("tls-proxy", ProxyConfig.load, _serve)


if __name__ == "__main__":
    sys.exit(main())
