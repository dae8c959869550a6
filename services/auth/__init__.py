"""auth: orgs, users, signed sessions, agent deployments and the keys that sign their tokens."""
