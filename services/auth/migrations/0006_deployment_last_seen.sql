-- When each deployment's agent last exchanged its token (the console's "last seen"). Written
-- at most once a minute per deployment per replica (services/auth/last_seen.py), never on the
-- exchange's own path. A table of its own, not a column of deployments: every update of a
-- deployments row is announced to every replica's cache (0003), which drops the deployment and
-- reads it again, and the sightings would do that once a minute per agent.
-- Additive only, so the previous release keeps running on this schema.
create table deployment_sightings (
    deployment_id uuid primary key references deployments (id) on delete cascade,
    seen_at timestamptz not null
);
