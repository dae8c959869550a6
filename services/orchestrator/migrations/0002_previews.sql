-- Preview runs: metadata only (row count and the truncated flag), never the rows.
alter table runs drop constraint runs_kind_check;
alter table runs add constraint runs_kind_check check (kind in ('credential_test', 'preview'));
alter table runs add column row_count integer;
alter table runs add column truncated boolean;
