"""Entry point of the ``sevvo`` command."""

from __future__ import annotations


def main() -> None:
    """Runs the command line."""
    raise SystemExit("the sevvo command line is not built yet")


if __name__ == "__main__":
    main()
