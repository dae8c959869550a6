"""The customer-side agent: a dial-out gRPC client and Temporal worker (issue #4, not built yet)."""
