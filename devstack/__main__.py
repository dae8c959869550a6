"""``make dev``: run the whole system on embedded defaults until Ctrl-C (devstack.launcher)."""

from __future__ import annotations

import sys

from devstack.launcher import main

if __name__ == "__main__":
    sys.exit(main())
