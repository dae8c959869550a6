"""connections: Postgres connection metadata and sealed credentials (issue #3, not built yet)."""
