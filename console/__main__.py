"""``python -m console``: the web console's HTTPS server (configuration: console/config.py)."""

from __future__ import annotations

import asyncio
import os
import sys

from console.config import ConsoleConfig
from console.server import ConsoleServer
from sevvo.runtime.config import ConfigError
from sevvo.runtime.logs import configure_logging


def main() -> int:
    """Reads the configuration from the environment and serves until SIGTERM; exits 2
    naming a bad variable, as the services do (make images-check relies on it)."""
    try:
        config = ConsoleConfig.load(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging("console", level=config.log_level)
    # Embedded: serve_forever handles SIGTERM itself and returns, so the exit code is 0.
    asyncio.run(ConsoleServer(config).serve_forever())
    return 0


if __name__ == "__main__":
    sys.exit(main())
