"""The embedded development stack: a dev CA, PostgreSQL and Temporal run from Python packages."""
