-- Reconciliation: runs left running by a dead watcher are found by state, and finished previews
-- whose Temporal history (the org's rows, encrypted) is not yet confirmed deleted by this column.
alter table runs add column history_deleted_at timestamptz;
-- When deletion was last asked for: Temporal deletes asynchronously, so a request is checked
-- once some seconds later rather than repeated on every pass.
alter table runs add column history_delete_requested_at timestamptz;
create index runs_running_idx on runs (started_at) where state = 'running';
create index runs_history_pending_idx on runs (finished_at)
    where kind = 'preview' and state <> 'running' and history_deleted_at is null;
