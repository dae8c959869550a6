"""``python -m agent``: run the sevvo agent until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from agent.config import AgentConfig
from agent.worker import EXIT_REVOKED, EXIT_UNAUTHORISED, run_agent
from sevvo.runtime.config import ConfigError
from sevvo.runtime.logs import configure_logging


async def _main(config: AgentConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await run_agent(config, stop)


def main() -> int:
    """Loads configuration, runs the agent, and explains a revoked token on exit."""
    try:
        config = AgentConfig.load(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging("agent", level=config.log_level)
    code = asyncio.run(_main(config))
    logging.getLogger(__name__).debug("event loop closed")
    if code == EXIT_REVOKED:
        print(
            "sevvo agent: the control plane no longer accepts this deployment token "
            "(revoked or unknown). Create a new deployment and configure its token.",
            file=sys.stderr,
        )
    elif code == EXIT_UNAUTHORISED:
        print(
            "sevvo agent: stopped because it could not prove it is still authorised (the"
            " control plane refused its bearer token, or was unreachable until it expired)."
            " Its log says which; restart it once the control plane answers.",
            file=sys.stderr,
        )
    return code


if __name__ == "__main__":
    exit_code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    # Everything is closed and flushed; skip interpreter teardown, where gRPC's C core can
    # abort (SIGABRT in its epoll poller) while its threads are being torn down, which would
    # replace the exit code a supervisor relies on (3 = deployment revoked, 4 = authorisation
    # lost; see agent.worker).
    os._exit(exit_code)
