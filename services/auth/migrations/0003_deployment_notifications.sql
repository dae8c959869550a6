-- Every change to a deployment is announced on the sevvo_auth_deployments channel (payload:
-- the deployment's id; empty after a TRUNCATE, meaning "all of them"), so each auth replica
-- can drop its in-memory copy the moment the change commits (services/auth/deployment_cache.py).
-- A trigger rather than the revoke code path: a revocation made by hand in SQL is heard too.
-- New deployments need no announcement, as replicas cache only deployments they have read.
-- Additive only, so the previous release keeps running on this schema.

create function notify_deployment_change() returns trigger
language plpgsql as $$
begin
    perform pg_notify('sevvo_auth_deployments', old.id::text);
    return null;
end
$$;

create trigger deployments_notify_change
    after update or delete on deployments
    for each row execute function notify_deployment_change();

create function notify_deployments_truncated() returns trigger
language plpgsql as $$
begin
    perform pg_notify('sevvo_auth_deployments', '');
    return null;
end
$$;

create trigger deployments_notify_truncate
    after truncate on deployments
    for each statement execute function notify_deployments_truncated();
