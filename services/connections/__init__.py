"""connections: Postgres connection metadata, sealed credentials, test-before-save, audit."""
