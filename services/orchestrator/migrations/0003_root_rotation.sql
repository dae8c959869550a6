-- Runs of the root rotation workflow, which rotates a dynamic connection's privileged password.
alter table runs drop constraint runs_kind_check;
alter table runs add constraint runs_kind_check
    check (kind in ('credential_test', 'preview', 'root_rotation'));
