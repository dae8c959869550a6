-- Proof of origin on workflow inputs (sevvo/runtime/work_proof.py). The orchestrator's Ed25519
-- signing keys, the private half sealed with the orchestrator's keyring; the newest signs.
create table proof_keys (
    key_id text primary key,
    kek_id text not null,
    sealed_key bytea not null,
    public_key bytea not null,
    created_at timestamptz not null
);
-- Whether the run's workflow input carried a proof. Runs recorded before this column existed
-- did not: the orchestrator vouches for those while they are still running (an upgrade).
alter table runs add column proved boolean not null default false;
create index runs_workflow_id_idx on runs (org_id, workflow_id);
