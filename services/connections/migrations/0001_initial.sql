-- Connections: non-secret metadata in columns, credentials sealed. Runs with search_path = connections.
create table connections (
    id uuid primary key,
    org_id uuid not null,
    display_name text not null,
    type text not null default 'postgres' check (type in ('postgres')),
    credential_mode text not null check (credential_mode in ('fields', 'dsn')),
    -- Copies for listing and display; the agent uses only the sealed payload, so editing
    -- these columns in the database cannot redirect credentials to another host.
    host text not null,
    port integer not null check (port between 1 and 65535),
    database text not null,
    username text not null,
    ssl_mode text not null check (ssl_mode in ('disable', 'require')),
    -- Envelope encryption: kek_id names the key-encryption key that wraps the data key.
    kek_id text not null,
    sealed_credentials bytea not null,
    status text not null default 'pending' check (status in ('pending', 'connected', 'error')),
    last_test_at timestamptz,
    last_test_category text,
    created_at timestamptz not null,
    updated_at timestamptz not null
);
create unique index connections_name_key on connections (org_id, lower(display_name));
create index connections_org_page_idx on connections (org_id, created_at, id);
create index connections_kek_idx on connections (kek_id);
