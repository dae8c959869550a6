-- Named roles of dynamic connections, and leases that say which role (and which workload)
-- they were minted for. Runs with search_path = connections.
--
-- A role's statements live where the single set always lived: in the connection's sealed
-- payload ("dynamic" is the role "default", "roles" the others). These rows are display
-- copies and lease checks, like default_ttl_seconds on connections, plus the role's life:
-- deleted_at marks a role removed with force whose leases are still being revoked; its
-- sealed statements stay until the last of them is, so the reaper can revoke with them.
create table connection_roles (
    id uuid primary key,
    org_id uuid not null,
    connection_id uuid not null references connections (id) on delete cascade,
    name text not null check (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    default_ttl_seconds integer not null,
    max_ttl_seconds integer not null,
    group_role text not null,
    creation_statement_count integer not null,
    revocation_statement_count integer not null,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    deleted_at timestamptz,
    check (default_ttl_seconds <= max_ttl_seconds)
);
create unique index connection_roles_name_key on connection_roles (connection_id, name);
create index connection_roles_page_idx on connection_roles (org_id, connection_id, created_at, id);

-- Every dynamic connection's single set becomes its role "default", nothing else changes: the
-- sealed payload already holds it as "dynamic".
insert into connection_roles (
    id, org_id, connection_id, name, default_ttl_seconds, max_ttl_seconds, group_role,
    creation_statement_count, revocation_statement_count, created_at, updated_at
)
select
    gen_random_uuid(), org_id, id, 'default', default_ttl_seconds, max_ttl_seconds, group_role,
    creation_statement_count, revocation_statement_count, created_at, updated_at
from connections
where credential_mode = 'dynamic';

-- Existing leases were minted from the single set, now "default". The column default also
-- covers a previous release still recording leases during a rollout.
alter table leases
    add column role text not null default 'default',
    add column workload_id uuid;
create index leases_role_idx on leases (org_id, connection_id, role, state);
create index leases_workload_idx on leases (org_id, workload_id, created_at desc, id desc)
    where workload_id is not null;
