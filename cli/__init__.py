"""The ``sevvo`` command line: one client over every service's gRPC API."""

import os

# gRPC's C core logs TLS handshake failures and the like to stderr on its own, in its own
# format, next to the one sentence the command prints about the same failure. It reads this
# setting when it starts, so it is set before anything imports grpc; a user debugging the
# transport can still set GRPC_VERBOSITY themselves.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
