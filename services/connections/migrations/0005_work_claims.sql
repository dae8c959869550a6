-- Proof of origin (sevvo/runtime/work_proof.py): the first Temporal run that resolved
-- credentials under a proved workflow id. Another run presenting the same workflow id (a copy
-- started under that id after the first ended) is refused. Kept until the proof expires, after
-- which the proof itself is refused.
create table work_claims (
    org_id uuid not null,
    workflow_id text not null,
    run_id text not null,
    workflow_type text not null,
    claimed_at timestamptz not null,
    keep_until timestamptz not null,
    primary key (org_id, workflow_id)
);
create index work_claims_keep_until_idx on work_claims (keep_until);
