"""connections' command line: ``serve``, ``migrate`` and ``rewrap`` (re-seal payloads under
the primary key).

Key rotation: add a new key to the keyring file, wait until every replica has read it (the
services re-read a changed file within seconds of the kubelet updating it; no restart), then
make it primary so they seal under it, run ``rewrap`` (the chart's rewrap Job), and remove the
old key once rewrap exits 0. Adding before promoting keeps a replica that has not yet read the
file from meeting a payload sealed under a key it does not know. deploy/k8s/README.md has the
steps.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from services.connections.config import KEYRING_VARIABLE, ConnectionsConfig
from services.connections.domain import SealedConnections
from services.connections.server import serve
from services.connections.store import ConnectionStore
from sevvo.runtime.config import ConfigError
from sevvo.runtime.logs import configure_logging
from sevvo.runtime.migrations import MigrationError, migrate_command
from sevvo.runtime.rewrap import add_rewrap_command, rewrap_command


def main(argv: list[str] | None = None) -> int:
    """Parses the command line and runs one command."""
    parser = argparse.ArgumentParser(prog="python -m services.connections", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the connections gRPC service")
    commands.add_parser(
        "migrate", help="apply pending schema migrations, then exit (the chart's hook Job)"
    )
    add_rewrap_command(commands)
    args = parser.parse_args(argv)
    if args.command == "migrate":
        return migrate_command("connections", ConnectionStore.migration_sets(), os.environ)
    if args.command == "rewrap":
        return rewrap_command(
            "connections",
            KEYRING_VARIABLE,
            ConnectionStore,
            lambda store: [SealedConnections(store)],
            os.environ,
            args.batch_size,
        )
    try:
        config = ConnectionsConfig.load(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging("connections", level=config.log_level)
    try:
        asyncio.run(serve(config))
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
