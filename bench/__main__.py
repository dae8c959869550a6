"""``make bench``: every benchmark, each printing ratios against a baseline from the same run.

``python -m bench tokens`` (or ``preview``, ``dynamic_credentials``, ``request_log``,
``rpc_auth``, ``exchange``, ``sign_in``, ``load``, ``payload_keys``, ``warm_pool``, ``sync``,
``parquet``)
runs one.
"""

from __future__ import annotations

import sys

from bench import (
    dynamic_credentials,
    exchange,
    load,
    parquet,
    payload_keys,
    preview,
    request_log,
    rpc_auth,
    sign_in,
    sync,
    tokens,
    warm_pool,
)

BENCHMARKS = {
    "tokens": tokens.main,
    "preview": preview.main,
    "dynamic_credentials": dynamic_credentials.main,
    "request_log": request_log.main,
    "rpc_auth": rpc_auth.main,
    "exchange": exchange.main,
    "sign_in": sign_in.main,
    "load": load.main,
    "payload_keys": payload_keys.main,
    "warm_pool": warm_pool.main,
    "sync": sync.main,
    "parquet": parquet.main,
}


def main(argv: list[str]) -> int:
    """Runs the named benchmarks, or all of them."""
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
        return 2
    for name in names:
        print(f"\n== {name}")
        BENCHMARKS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
