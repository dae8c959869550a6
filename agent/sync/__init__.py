"""Syncs: a model's query streamed from the customer's source into their destination.

Everything here runs in the agent, inside the customer's network. What leaves it is a
``SyncReport`` (counts, bytes, durations, a schema fingerprint), never a row, a cursor value or
a database message that could quote one.
"""
