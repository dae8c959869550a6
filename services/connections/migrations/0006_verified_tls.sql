-- Certificate verification: the verify-ca and verify-full SSL modes, and a display copy of
-- the CA bundle's certificates. Runs with search_path = connections.
alter table connections drop constraint connections_ssl_mode_check;
alter table connections add constraint connections_ssl_mode_check
    check (ssl_mode in ('disable', 'require', 'verify-ca', 'verify-full'));
-- Subject, SHA-256 fingerprint and expiry of each CA certificate, for display like host and
-- port; the bundle itself is sealed with the credentials, which is the only copy the agent
-- reads, so editing this column cannot change whom the agent trusts. Null for the modes
-- that verify nothing.
alter table connections add column ssl_root_certs jsonb;
