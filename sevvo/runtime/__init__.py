"""Shared runtime for every sevvo process: config, logging, errors, gRPC, tokens."""
