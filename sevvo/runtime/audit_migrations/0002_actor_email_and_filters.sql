-- The acting user's email, kept with each record so the log reads by person even after the
-- user is deleted (null for agents, the system, and records written before this column), and
-- indexes for ListAuditEvents' filters. Adding a nullable column leaves the previous release's
-- inserts valid (expand only).
alter table events add column actor_email text;

-- Filters by actor and by action (exact or prefix: text_pattern_ops serves LIKE 'prefix%'),
-- each newest first within an org.
create index events_actor_idx on events (org_id, actor_id, occurred_at desc);
create index events_actor_email_idx on events (org_id, actor_email, occurred_at desc)
    where actor_email is not null;
create index events_action_idx on events (org_id, action text_pattern_ops, occurred_at desc);
