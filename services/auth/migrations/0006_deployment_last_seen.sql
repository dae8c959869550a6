-- When each deployment's agent last exchanged its token (the console's "last seen"). Written
-- at most once a minute per deployment per replica (services/auth/last_seen.py), never on the
-- exchange's own path. Additive only, so the previous release keeps running on this schema.
alter table deployments add column last_seen_at timestamptz;
