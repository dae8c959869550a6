-- Run metadata and per-org Temporal payload keys. Runs with search_path = orchestrator.
create table runs (
    id uuid primary key,
    org_id uuid not null,
    kind text not null check (kind in ('credential_test')),
    state text not null check (state in ('running', 'succeeded', 'failed', 'timed_out')),
    connection_id uuid,
    draft_id uuid,
    workflow_id text not null,
    outcome_category text,
    message text,
    started_at timestamptz not null,
    finished_at timestamptz,
    duration_ms bigint
);
create index runs_org_page_idx on runs (org_id, started_at desc, id desc);

create table payload_keys (
    org_id uuid not null,
    key_id text not null,
    -- Sealed with the orchestrator's keyring; org id and key id are the associated data.
    kek_id text not null,
    sealed_key bytea not null,
    created_at timestamptz not null default now(),
    primary key (org_id, key_id)
);
