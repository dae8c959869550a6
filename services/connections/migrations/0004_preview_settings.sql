-- A copy of the sealed preview settings (functions opted in, plan cost budget), for display
-- like host and port; the agent reads only the sealed payload. Null when none were set.
alter table connections add column preview_settings jsonb;
