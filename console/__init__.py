"""The web console: HTML pages over the services' gRPC APIs, as the signed-in user.

A client of the control plane like the command line: it holds no database, applies no
business rule of its own, and calls auth, connections and orchestrator with the user's own
session token, so every check (tenancy, roles, validation) is the service's.
"""
