-- Who started each run: "user:<id>" for a user's request (a preview, a test, a rotation) and
-- empty for runs recorded before this column existed. Scheduled rotations are started by
-- Temporal, not through a run row.
alter table runs add column creator text not null default '';
