"""The ``sevvo`` command line: one client over every service's gRPC API."""
