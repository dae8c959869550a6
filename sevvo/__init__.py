"""sevvo: connect customer Postgres to a hosted control plane that never holds its rows."""
