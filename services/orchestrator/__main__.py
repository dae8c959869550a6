"""The orchestrator's command line: ``serve``, ``migrate`` and ``rewrap`` (re-seal its payload
and proof keys under the keyring's primary key; rotation steps in deploy/k8s/README.md)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from services.orchestrator import rewrap
from services.orchestrator.config import OrchestratorConfig
from services.orchestrator.server import serve
from services.orchestrator.store import OrchestratorStore
from sevvo.runtime.config import ConfigError
from sevvo.runtime.logs import configure_logging
from sevvo.runtime.migrations import MigrationError, migrate_command
from sevvo.runtime.rewrap import add_rewrap_command


def main(argv: list[str] | None = None) -> int:
    """Parses the command line and runs one command."""
    parser = argparse.ArgumentParser(prog="python -m services.orchestrator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the orchestrator gRPC service")
    commands.add_parser(
        "migrate", help="apply pending schema migrations, then exit (the chart's hook Job)"
    )
    add_rewrap_command(commands)
    args = parser.parse_args(argv)
    if args.command == "migrate":
        return migrate_command("orchestrator", OrchestratorStore.migration_sets(), os.environ)
    if args.command == "rewrap":
        return rewrap.main(os.environ, args.batch_size)
    try:
        config = OrchestratorConfig.load(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging("orchestrator", level=config.log_level)
    try:
        asyncio.run(serve(config))
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
