"""connections' command line: ``serve``, ``migrate`` and ``rewrap`` (re-seal payloads under
the primary key).

Key rotation: add a new key to the keyring file, wait until every replica has read it (the
services re-read a changed file within seconds of the kubelet updating it; no restart), then
make it primary so they seal under it, run ``rewrap``, and remove the old key once rewrap
reports none left. Adding before promoting keeps a replica that has not yet read the file from
meeting a payload sealed under a key it does not know.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from services.connections.config import ConnectionsConfig
from services.connections.server import ConnectionsApp, serve
from services.connections.store import ConnectionStore
from sevvo.runtime.config import ConfigError
from sevvo.runtime.errors import SevvoError
from sevvo.runtime.logs import configure_logging
from sevvo.runtime.migrations import MigrationError, migrate_command


def main(argv: list[str] | None = None) -> int:
    """Parses the command line and runs one command."""
    parser = argparse.ArgumentParser(prog="python -m services.connections", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the connections gRPC service")
    commands.add_parser(
        "migrate", help="apply pending schema migrations, then exit (the chart's hook Job)"
    )
    rewrap = commands.add_parser(
        "rewrap", help="re-wrap every sealed payload under the keyring's primary key"
    )
    rewrap.add_argument("--batch-size", type=int, default=200, help="rows per transaction")
    args = parser.parse_args(argv)
    if args.command == "migrate":
        return migrate_command("connections", ConnectionStore.migration_sets(), os.environ)
    try:
        config = ConnectionsConfig.load(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging("connections", level=config.log_level)
    if args.command == "serve":
        try:
            asyncio.run(serve(config))
        except MigrationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    app = ConnectionsApp(config)
    app.open()
    try:
        moved = app.domain.rewrap_all(batch_size=args.batch_size)
        remaining = {
            k: n for k, n in app.store.count_by_kek().items() if k != config.keyring.primary_id
        }
    except SevvoError as exc:
        print(f"error: {exc.message} ({exc.reason})", file=sys.stderr)
        return 1
    finally:
        app.close()
    print(f"re-wrapped {moved} payloads under {config.keyring.primary_id}")
    if remaining:
        print(f"still under older keys (being edited; run again): {remaining}", file=sys.stderr)
        return 1
    print("no payload remains under an older key; older keys may be removed from the keyring")
    return 0


if __name__ == "__main__":
    sys.exit(main())
