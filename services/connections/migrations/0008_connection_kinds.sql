-- Connection kinds (services/connections/kinds): a connection is a Postgres database or
-- another kind, such as a Parquet directory. Runs with search_path = connections.
--
-- The type is any kind's name, so a new kind needs no migration; the kind's module decides
-- what its rows hold. The Postgres columns are set exactly on Postgres rows (they stay required
-- there, as the previous release reads them); another kind keeps its display copy in details.
alter table connections drop constraint connections_type_check;
alter table connections add constraint connections_type_check
    check (type ~ '^[a-z][a-z0-9_]{0,62}$');
-- "none": a kind without credentials (a Parquet directory names a path, nothing secret).
alter table connections drop constraint connections_credential_mode_check;
alter table connections add constraint connections_credential_mode_check
    check (credential_mode in ('fields', 'dsn', 'dynamic', 'none'));
alter table connections
    alter column host drop not null,
    alter column port drop not null,
    alter column database drop not null,
    alter column username drop not null,
    alter column ssl_mode drop not null,
    -- A display copy of another kind's non-secret details (a Parquet directory's path), like
    -- host and port; the agent reads only the sealed payload.
    add column details jsonb,
    add constraint connections_postgres_columns_check check (
        (type = 'postgres') = (
            host is not null and port is not null and database is not null
            and username is not null and ssl_mode is not null
        )
    );

-- Which kind a draft's sealed payload is; drafts written before kinds are Postgres.
alter table drafts add column type text not null default 'postgres';
