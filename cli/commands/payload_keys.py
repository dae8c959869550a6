"""``sevvo payload-keys``: the keys that encrypt your org's Temporal payloads (admins only)."""

from __future__ import annotations

import typer

from cli.client import CALL_TIMEOUT
from cli.inputs import cli_of
from cli.output import Column, key, message_dict
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb

app = typer.Typer(
    help="Manage the keys that encrypt your org's workflow payloads.", no_args_is_help=True
)

COLUMNS: list[Column] = [
    ("current key", key("current_key_id")),
    ("previous key", key("previous_key_id")),
    ("rotated", key("rotated")),
    ("current since", key("current_since_time")),
]


@app.command(epilog="Example: sevvo payload-keys rotate")
def rotate(ctx: typer.Context) -> None:
    """Make a new key current now (admins only; audited).

    Work started afterwards uses the new key; running work finishes under the old one.
    """
    cli = cli_of(ctx)
    response = cli.payload_keys().RotatePayloadKey(
        opb.RotatePayloadKeyRequest(), timeout=CALL_TIMEOUT
    )
    data = message_dict(response)
    cli.output.record(data, data, COLUMNS)
