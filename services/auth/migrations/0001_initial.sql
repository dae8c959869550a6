-- Orgs, users, agent deployments and token signing keys. Runs with search_path = auth.
create table orgs (
    id uuid primary key,
    name text not null,
    created_at timestamptz not null default now()
);

create table users (
    id uuid primary key,
    org_id uuid not null references orgs (id),
    email text not null,
    password_hash text not null,
    role text not null check (role in ('admin', 'member')),
    created_at timestamptz not null default now()
);
-- Emails are unique across orgs so that sign-in needs only email and password.
create unique index users_email_key on users (lower(email));
create index users_org_page_idx on users (org_id, created_at, id);

create table deployments (
    id uuid primary key,
    org_id uuid not null references orgs (id),
    display_name text not null,
    -- SHA-256 of the 256-bit random secret; the secret itself is never stored.
    secret_hash bytea not null,
    creator_user_id uuid references users (id),
    created_at timestamptz not null default now(),
    revoked_at timestamptz
);
create index deployments_org_page_idx on deployments (org_id, created_at, id);
create index deployments_revoked_idx on deployments (revoked_at) where revoked_at is not null;

create table signing_keys (
    kid text primary key,
    public_key bytea not null,
    -- AES-256-GCM under the key-encryption key named by kek_id, with the kid as associated data.
    sealed_private_key bytea not null,
    kek_id text not null,
    created_at timestamptz not null default now(),
    -- Published from creation; used for signing from activates_at (after verifiers have it).
    activates_at timestamptz not null,
    -- Set when a newer key takes over: no token it signed is valid after this.
    verify_until timestamptz
);
