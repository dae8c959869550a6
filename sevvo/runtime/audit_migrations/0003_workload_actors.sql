-- Workloads act too (issue 15): a refused workload-token exchange is recorded with the
-- workload as its actor, and so will be its lease requests. Widening the check leaves the
-- previous release's inserts valid (expand only).
alter table events drop constraint events_actor_kind_check;
alter table events add constraint events_actor_kind_check
    check (actor_kind in ('user', 'agent', 'workload', 'system'));
