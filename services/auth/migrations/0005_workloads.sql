-- Workload identities (issue 15): the customer services that may borrow credentials of named
-- roles of dynamic connections, each with a token shown once and stored as a hash, like a
-- deployment's. Additive only, so the previous release keeps running on this schema.
create table workloads (
    id uuid primary key,
    org_id uuid not null references orgs (id),
    display_name text not null,
    description text not null default '',
    -- [{"connection_id": uuid, "role": name}, ...], sorted and distinct
    -- (sevvo/runtime/workload_grants.py). Checked for form only: connections live in
    -- another schema, and a grant of a connection or role that does not exist grants nothing.
    grants jsonb not null,
    -- The longest lease the workload may ask for (services/auth/workloads.py says why these).
    max_ttl_seconds integer not null check (max_ttl_seconds between 60 and 86400),
    -- SHA-256 of the 256-bit random secret; the secret itself is never stored.
    secret_hash bytea not null,
    creator_user_id uuid references users (id) on delete set null,
    created_at timestamptz not null,
    updated_at timestamptz,
    -- Bumped by every change to grants or max_ttl_seconds; bearers carry the generation they
    -- were issued at, and verifiers refuse older ones once they learn of the change.
    generation integer not null default 1,
    -- When grants or max_ttl_seconds last changed; null until they first do.
    grants_changed_at timestamptz,
    revoked_at timestamptz
);
create index workloads_org_page_idx on workloads (org_id, created_at, id);
create index workloads_revoked_idx on workloads (revoked_at) where revoked_at is not null;
create index workloads_grants_changed_idx on workloads (grants_changed_at)
    where grants_changed_at is not null;

-- Every change to a workload is announced on sevvo_auth_workloads, as migration 0003 does for
-- deployments, so each auth replica drops its in-memory copy (services/auth/deployment_cache.py)
-- the moment the change commits.
create function notify_workload_change() returns trigger
language plpgsql as $$
begin
    perform pg_notify('sevvo_auth_workloads', old.id::text);
    return null;
end
$$;

create trigger workloads_notify_change
    after update or delete on workloads
    for each row execute function notify_workload_change();

create function notify_workloads_truncated() returns trigger
language plpgsql as $$
begin
    perform pg_notify('sevvo_auth_workloads', '');
    return null;
end
$$;

create trigger workloads_notify_truncate
    after truncate on workloads
    for each statement execute function notify_workloads_truncated();
