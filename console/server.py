"""The console's HTTPS server: uvicorn serving the app with the console's certificate."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket

import uvicorn

from console.app import create_app
from console.backend import Backend
from console.config import ConsoleConfig
from sevvo.runtime.logs import get_logger

log = get_logger(__name__)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside a process that handles its own signals (the dev stack, tests)."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


class ConsoleServer:
    """The console listening on ``config.host:config.port`` (0: a free port, see ``port``)."""

    def __init__(self, config: ConsoleConfig, *, embedded: bool = True) -> None:
        self.config = config
        # The backend's channel belongs to the event loop that serves: made at start.
        self.backend: Backend | None = None
        server_class = _EmbeddedServer if embedded else uvicorn.Server
        self._server = server_class(
            uvicorn.Config(
                create_app(self._backend),
                host=config.host,
                port=config.port,
                ssl_certfile=str(config.tls.cert),
                ssl_keyfile=str(config.tls.key),
                # structlog already writes a line per request worth keeping (sign-in, errors);
                # uvicorn's access log would add query strings, which may hold a next= path.
                access_log=False,
                log_config=None,
                log_level=logging.WARNING,
                server_header=False,
                proxy_headers=False,
                lifespan="off",
            )
        )
        self._task: asyncio.Task[None] | None = None

    def _backend(self) -> Backend:
        if self.backend is None:
            self.backend = Backend.connect(
                self.config.services_endpoint,
                self.config.ca_file,
                call_timeout=self.config.call_timeout,
                agent_timeout=self.config.agent_timeout,
            )
        return self.backend

    def _request_exit(self) -> None:
        self._server.should_exit = True

    @property
    def port(self) -> int:
        """The port bound (after ``start``)."""
        sockets = [s for server in self._server.servers for s in server.sockets]
        return int(sockets[0].getsockname()[1]) if sockets else self.config.port

    @property
    def url(self) -> str:
        """The console's address on loopback, for tests and the dev stack."""
        return f"https://localhost:{self.port}"

    async def start(self) -> None:
        """Starts serving; returns once the socket is bound (raises OSError if it could not
        be: uvicorn's own bind would exit the whole process, the dev stack's included)."""
        listener = _bind(self.config.host, self.config.port)
        self._task = asyncio.create_task(
            self._server.serve(sockets=[listener]), name="sevvo-console"
        )
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError(f"the console could not listen on port {self.config.port}")
            await asyncio.sleep(0.02)
        log.info("console.started", url=self.url)

    async def stop(self) -> None:
        """Stops accepting, finishes requests in flight, closes the services' channel."""
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.backend is not None:
            await self.backend.close()

    async def serve_forever(self) -> None:
        """Serves until SIGTERM or SIGINT, finishes the requests in flight, closes the
        services' channel and returns, so the process exits 0 as the services do. (With
        ``embedded=False`` uvicorn's own handlers run instead, and re-raise the signal once
        done: the process then dies of it, exit 143.)"""
        loop = asyncio.get_running_loop()
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(stop_signal, self._request_exit)
        await self._server.serve()
        if self.backend is not None:
            await self.backend.close()


def _bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: a free port), for uvicorn to listen on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except OSError:
        listener.close()
        raise
    return listener
