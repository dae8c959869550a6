"""``python -m console``: the web console's HTTPS server (configuration: console/config.py)."""

from __future__ import annotations

import asyncio
import os
import sys

from console.config import ConsoleConfig
from console.server import ConsoleServer
from sevvo.runtime.config import ConfigError
from sevvo.runtime.logs import configure_logging


def main() -> None:
    """Reads the configuration from the environment and serves until SIGTERM."""
    try:
        config = ConsoleConfig.load(os.environ)
    except ConfigError as exc:
        sys.exit(f"sevvo console: {exc}")
    configure_logging("console", level=config.log_level)
    asyncio.run(ConsoleServer(config, embedded=False).serve_forever())


if __name__ == "__main__":
    main()
