-- Models: an org's definitions of what to sync from a source connection into a destination
-- table (services/orchestrator/models.py). Definitions only: no row of customer data and no
-- credential; the statement is the customer's own text. Runs with search_path = orchestrator.
create table models (
    id uuid primary key,
    org_id uuid not null,
    name text not null,
    source_connection_id uuid not null,
    sql text not null,
    destination_connection_id uuid not null,
    destination_schema text not null,
    destination_table text not null,
    load_mode text not null check (load_mode in ('full_refresh', 'incremental')),
    cursor_column text,
    primary_key text[] not null default '{}',
    allow_schema_evolution boolean not null default false,
    -- Null without a schedule; the domain keeps the bounds (5 minutes to 365 days).
    schedule_interval_seconds bigint check (schedule_interval_seconds > 0),
    created_at timestamptz not null,
    updated_at timestamptz not null,
    -- The domain checks these first, naming the field; the database holds them for every writer.
    constraint models_incremental_check check (
        (load_mode = 'incremental') = (cursor_column is not null)
        and (load_mode = 'incremental') = (cardinality(primary_key) > 0)
    )
);
-- Names are unique per org; ListModels pages through an org's models by name on this index.
create unique index models_name_key on models (org_id, name);
-- Two models filling one table would replace or merge each other's rows: one model per table.
create unique index models_destination_key
    on models (org_id, destination_connection_id, destination_schema, destination_table);
