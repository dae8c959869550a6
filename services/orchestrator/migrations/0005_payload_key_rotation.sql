-- Payload keys rotate. An org's current key stays its newest (created_at, key_id), as before,
-- so the previous release reads the same current key from the same table; a key stopped being
-- current when the next one was created. Retiring a key deletes its row.
-- Who fetched which key: a revoked deployment whose agent holds the current key forces a rotation.
create table payload_key_fetches (
    org_id uuid not null,
    deployment_id text not null,
    key_id text not null,
    first_fetched_at timestamptz not null default now(),
    primary key (org_id, deployment_id, key_id),
    foreign key (org_id, key_id) references payload_keys (org_id, key_id) on delete cascade
);
create index payload_key_fetches_deployment_idx on payload_key_fetches (deployment_id);
-- Deployments known revoked: refused every payload key, old or new, by GetPayloadKeys.
create table payload_key_refused_deployments (
    org_id uuid not null,
    deployment_id text not null,
    refused_at timestamptz not null,
    primary key (org_id, deployment_id)
);
