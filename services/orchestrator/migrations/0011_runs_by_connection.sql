-- ListRuns by connection (the console's connection page): the org's runs of one connection,
-- newest first, as runs_model_idx serves them by model.
create index runs_connection_idx on runs (org_id, connection_id, started_at desc, id desc)
    where connection_id is not null;
