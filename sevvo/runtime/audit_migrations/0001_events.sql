-- The append-only audit log shared by every service. Runs with search_path = audit.
create table events (
    id uuid primary key,
    org_id uuid not null,
    occurred_at timestamptz not null default clock_timestamp(),
    actor_kind text not null check (actor_kind in ('user', 'agent', 'system')),
    actor_id text not null,
    action text not null,
    target_type text not null,
    target_id text not null,
    outcome text not null check (outcome in ('success', 'failure')),
    reason text,
    details jsonb not null default '{}'::jsonb
);
create index events_org_page_idx on events (org_id, occurred_at desc, id desc);
create index events_target_idx on events (org_id, target_id, occurred_at desc);

-- Append-only: an audit record, once written, is never changed or removed by the services.
create function reject_change() returns trigger language plpgsql as $$
begin
    raise exception 'audit events are append-only' using errcode = 'insufficient_privilege';
end;
$$;
create trigger events_append_only before update or delete on events
    for each row execute function reject_change();
create trigger events_no_truncate before truncate on events
    for each statement execute function reject_change();
