"""What commands read from the user: secrets from stdin or a prompt, durations, times, pages."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Generic, Protocol, TypeVar

import typer

from cli.client import Cli
from cli.errors import usage_error

T = TypeVar("T")


def cli_of(ctx: typer.Context) -> Cli:
    """The invocation's state, set up by the root callback."""
    state = ctx.find_object(Cli)
    assert state is not None, "the root callback sets up Cli"
    return state


def read_secret(label: str, *, from_stdin: bool, confirm: bool = False) -> str:
    """A secret from one line of stdin, or a hidden prompt; never from a flag value.

    Without ``--password-stdin`` and without a terminal to prompt on, this is a usage error
    rather than a silent read, so a forgotten flag does not hang a script.
    """
    if from_stdin:
        value = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        if not value:
            raise usage_error(f"{label}: standard input was empty")
        return value
    if not sys.stdin.isatty():
        raise usage_error(
            f"{label} needed: pipe it with --password-stdin, or run in a terminal to be prompted"
        )
    value = typer.prompt(label, hide_input=True, confirmation_prompt=confirm, err=True)
    if not isinstance(value, str) or not value:
        raise usage_error(f"{label} must not be empty")
    return value


_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(option: str, text: str) -> int:
    """Seconds in ``90``, ``90s``, ``15m``, ``1h`` or ``7d``."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise usage_error(f"{option}: {text!r} is not a duration such as 90s, 15m, 1h or 7d")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_interval(option: str, text: str) -> int:
    """Seconds between scheduled runs: a duration (see ``parse_duration``), or 0 for ``off``."""
    return 0 if text.strip().lower() == "off" else parse_duration(option, text)


def format_duration(seconds: int) -> str:
    """The shortest of ``30d``, ``12h``, ``15m`` or ``90s`` that is exact; ``off`` for 0."""
    if seconds <= 0:
        return "off"
    for unit in ("d", "h", "m"):
        if seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


def parse_time(option: str, text: str, now: datetime | None = None) -> datetime:
    """A moment: ISO-8601 (``2025-05-01``, ``2025-05-01T09:30:00Z``; no offset means UTC, as
    tables show times), or a duration ago (``90s``, ``15m``, ``1h``, ``7d``)."""
    text = text.strip()
    if _DURATION.match(text.lower()):
        return (now or datetime.now(UTC)) - timedelta(seconds=parse_duration(option, text))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise usage_error(
            f"{option}: {text!r} is not a time such as 2025-05-01, 2025-05-01T09:30:00Z,"
            " or a duration ago such as 15m, 1h or 7d"
        ) from None
    return when if when.utcoffset() is not None else when.replace(tzinfo=UTC)


class Page(Protocol):
    """A List response: its items are in a repeated field; the next page token beside them."""

    @property
    def next_page_token(self) -> str: ...


PageT = TypeVar("PageT", bound=Page)


def pages(fetch: Callable[[str], PageT], *, max_pages: int = 1000) -> Iterator[PageT]:
    """Every page of a List call, following next_page_token."""
    token = ""
    for _ in range(max_pages):
        page = fetch(token)
        yield page
        token = page.next_page_token
        if not token:
            return


Limit = Annotated[int, typer.Option("--limit", min=1, max=10_000, help="At most this many.")]
PageToken = Annotated[
    str,
    typer.Option(
        "--page-token",
        metavar="TOKEN",
        help="Continue where an earlier list stopped (it prints the token).",
    ),
]
TokenFile = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        metavar="PATH",
        dir_okay=False,
        help="Write the token to this new file (mode 0600) instead of printing it.",
    ),
]
"""Where a token shown only once goes instead of the screen (deployments, workloads)."""


def refuse_existing_token_file(token_file: Path | None) -> None:
    """A usage error when ``--token-file`` names a file that exists: overwriting it could
    destroy the only copy of another token."""
    if token_file is not None and token_file.exists():
        raise usage_error(f"--token-file: {token_file} exists; remove it or name a new file")


AllPages = Annotated[bool, typer.Option("--all", help="Every item, following every page.")]


@dataclass(frozen=True)
class Listing(Generic[T]):
    """The items one list command shows, and the token of what follows ("" when nothing)."""

    items: list[T]
    next_page_token: str


def collect(
    fetch: Callable[[str, int], PageT],
    items_of: Callable[[PageT], Iterable[T]],
    *,
    limit: int,
    page_token: str = "",
    everything: bool = False,
    max_page_size: int = 500,
) -> Listing[T]:
    """Up to ``limit`` items (every item with ``everything``) from ``page_token`` on.

    Each page asks for no more than is still wanted, so the list stops on a page boundary and
    the server's next token is exactly where the next list starts: nothing is skipped or
    shown twice. ``items_of`` may drop items (a client-side filter); pages are followed until
    enough are kept.
    """
    items: list[T] = []
    token = page_token
    while True:
        wanted = max_page_size if everything else min(limit - len(items), max_page_size)
        page = fetch(token, wanted)
        items.extend(items_of(page))
        token = page.next_page_token
        if not token or (not everything and len(items) >= limit):
            return Listing(items, token)
