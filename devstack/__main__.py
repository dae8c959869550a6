"""``make dev``: run the whole control plane on embedded defaults until Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from devstack.stack import StackSettings, start_stack
from sevvo.runtime.config import ConfigError
from sevvo.runtime.logs import configure_logging


async def _run(settings: StackSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stack = await start_stack(settings)
    try:
        print(
            "\nsevvo dev stack is up\n"
            f"  gRPC (TLS)        {stack.grpc_target}\n"
            f"  CA certificate    {stack.pki.ca_cert}\n"
            f"  Temporal          {stack.temporal_address}\n"
            f"  admin             {stack.admin_email}\n"
            f"  admin password    in {stack.admin_password_file}\n"
            f"  agents            {', '.join(str(a.log_file) for a in stack.agents) or 'none'}\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        await stop.wait()
    finally:
        await stack.stop()


def main() -> int:
    """Starts the stack and blocks until SIGINT or SIGTERM."""
    try:
        settings = StackSettings.load(os.environ, Path.cwd() / ".dev")
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging("devstack", level=os.environ.get("SEVVO_LOG_LEVEL", "INFO").upper())
    asyncio.run(_run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
