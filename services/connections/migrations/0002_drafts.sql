-- Unsaved credentials awaiting test-before-save: sealed like connections, kept minutes only.
create table drafts (
    id uuid primary key,
    org_id uuid not null,
    kek_id text not null,
    sealed_credentials bytea not null,
    created_at timestamptz not null,
    expires_at timestamptz not null
);
create index drafts_expiry_idx on drafts (expires_at);
