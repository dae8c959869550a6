"""auth's command line: ``serve``, ``migrate``, ``create-org`` (bootstrap),
``rotate-signing-key``, ``rotate-temporal-key``, ``rewrap`` (re-seal the signing keys under the
current key-encryption key; rotation steps in deploy/k8s/README.md).

Configuration comes from the environment (see services/auth/config.py); passwords come from a
file, standard input or a prompt, never from a flag.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from pathlib import Path

from services.auth import rewrap
from services.auth.config import AuthConfig
from services.auth.server import AuthApp, serve
from services.auth.store import AuthStore
from sevvo.runtime.config import ConfigError
from sevvo.runtime.errors import SevvoError
from sevvo.runtime.logs import configure_logging
from sevvo.runtime.migrations import MigrationError, migrate_command
from sevvo.runtime.rewrap import add_rewrap_command


def _read_password(path: Path | None) -> str:
    if path is not None:
        return path.read_text(encoding="utf-8").rstrip("\n")
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Admin password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise SystemExit("passwords do not match")
    return first


def main(argv: list[str] | None = None) -> int:
    """Parses the command line and runs one command."""
    parser = argparse.ArgumentParser(prog="python -m services.auth", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the auth gRPC service")
    commands.add_parser(
        "migrate", help="apply pending schema migrations, then exit (the chart's hook Job)"
    )
    create = commands.add_parser(
        "create-org",
        help="create an org and its first admin",
        description="Example: python -m services.auth create-org --org Acme "
        "--email ada@acme.example --password-file ./pw",
    )
    create.add_argument("--org", required=True, help="the org's display name")
    create.add_argument("--email", required=True, help="the admin's email")
    create.add_argument(
        "--password-file", type=Path, help="file holding the admin's password (else stdin/prompt)"
    )
    commands.add_parser("rotate-signing-key", help="publish a new signing key now")
    commands.add_parser(
        "rotate-temporal-key", help="publish a new key for Temporal's tokens (ES256) now"
    )
    add_rewrap_command(commands)
    args = parser.parse_args(argv)
    if args.command == "migrate":
        return migrate_command("auth", AuthStore.migration_sets(), os.environ)
    if args.command == "rewrap":
        return rewrap.main(os.environ, args.batch_size)

    try:
        config = AuthConfig.load(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging("auth", level=config.log_level)

    if args.command == "serve":
        try:
            asyncio.run(serve(config))
        except MigrationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    app = AuthApp(config)
    app.store.open()
    try:
        app.keys.ensure_key()
        app.temporal_keys.ensure_key()
        if args.command == "create-org":
            user = app.domain.create_org_with_admin(
                args.org, args.email, _read_password(args.password_file)
            )
            print(f"created org {user.org_id} with admin {user.email} ({user.id})")
        else:
            keys = app.temporal_keys if args.command == "rotate-temporal-key" else app.keys
            print(f"new signing key {keys.rotate()} activates in {keys.publish_delay}")
    except SevvoError as exc:
        print(f"error: {exc.message} ({exc.reason})", file=sys.stderr)
        return 1
    finally:
        app.store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
