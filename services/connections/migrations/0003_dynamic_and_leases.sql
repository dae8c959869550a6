-- Dynamic credentials: a third credential mode, its non-secret settings for display, and the
-- leases the agent creates through it. Runs with search_path = connections.
alter table connections drop constraint connections_credential_mode_check;
alter table connections add constraint connections_credential_mode_check
    check (credential_mode in ('fields', 'dsn', 'dynamic'));
-- Copies of the sealed dynamic settings for listing and lease checks, like host and port;
-- the agent reads only the sealed payload. Set exactly when credential_mode is dynamic.
alter table connections
    add column default_ttl_seconds integer,
    add column max_ttl_seconds integer,
    add column group_role text,
    add column creation_statement_count integer,
    add column revocation_statement_count integer,
    add constraint connections_dynamic_settings_check check (
        (credential_mode = 'dynamic') = (
            default_ttl_seconds is not null and max_ttl_seconds is not null
            and group_role is not null and creation_statement_count is not null
            and revocation_statement_count is not null
        )
    );

-- Lease metadata only: which login role an agent made, for what, until when. Never a password.
create table leases (
    id uuid primary key,
    org_id uuid not null,
    connection_id uuid not null references connections (id) on delete cascade,
    role_name text not null,
    purpose text not null,
    state text not null check (
        state in ('creating', 'active', 'revoke_requested', 'revoking', 'revoked', 'failing')
    ),
    created_at timestamptz not null,
    updated_at timestamptz not null,
    expires_at timestamptz not null,
    max_expires_at timestamptz not null,
    revoked_at timestamptz,
    failure_reason text,
    failure_count integer not null default 0,
    check (expires_at <= max_expires_at),
    check ((state = 'revoked') = (revoked_at is not null))
);
create unique index leases_role_key on leases (connection_id, role_name);
create index leases_org_page_idx on leases (org_id, created_at desc, id desc);
create index leases_connection_idx on leases (org_id, connection_id, state);
-- The reaper's question: live leases by expiry, and the ones users asked to revoke.
create index leases_reap_idx on leases (org_id, expires_at, id) where state <> 'revoked';
