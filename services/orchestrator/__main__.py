"""The orchestrator's command line: ``serve``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from services.orchestrator.config import OrchestratorConfig
from services.orchestrator.server import serve
from sevvo.runtime.config import ConfigError
from sevvo.runtime.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    """Parses the command line and runs the service."""
    parser = argparse.ArgumentParser(prog="python -m services.orchestrator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the orchestrator gRPC service")
    parser.parse_args(argv)
    try:
        config = OrchestratorConfig.load(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging("orchestrator", level=config.log_level)
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
