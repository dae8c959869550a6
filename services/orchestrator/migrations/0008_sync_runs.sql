-- Runs of the sync workflow: which model each synced (no foreign key: a deleted model's runs
-- stay on record), and the metadata its agent reported, as the allow-listed fields of
-- sevvo.workflows.v1.SyncResult (counts, durations, flags, a fingerprint; never a row value).
alter table runs drop constraint runs_kind_check;
alter table runs add constraint runs_kind_check
    check (kind in ('credential_test', 'preview', 'root_rotation', 'sync'));
alter table runs add column model_id uuid;
alter table runs add column sync_report jsonb;
create index runs_model_idx on runs (org_id, model_id, started_at desc, id desc)
    where model_id is not null;
-- One sync of a model at a time: a second start while one runs is refused by the store itself,
-- whichever replica takes it (the agent's lock on the model is the second line).
create unique index runs_one_running_sync on runs (model_id)
    where kind = 'sync' and state = 'running';
