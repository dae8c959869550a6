-- Revocable sessions: disabled users, signed-out sessions and per-user session cutoffs.
-- Additive only, so the previous release keeps running on this schema.

-- Set while an admin has disabled the user: no sign-in, and their sessions are cut off.
alter table users add column disabled_at timestamptz;

-- Deleting a user keeps the deployments they created; only the link to the creator goes.
alter table deployments drop constraint deployments_creator_user_id_fkey;
alter table deployments add constraint deployments_creator_user_id_fkey
    foreign key (creator_user_id) references users (id) on delete set null;

-- One signed-out session each; a row is useless, and deleted, once its token has expired.
create table revoked_sessions (
    token_id text primary key,
    user_id uuid not null,
    expires_at timestamptz not null
);
create index revoked_sessions_expires_idx on revoked_sessions (expires_at);

-- Every session issued to the user at or before valid_after is void (sign out everywhere,
-- a disabled or deleted user, a password change). No foreign key: the cutoff must outlive a
-- deleted user until keep_until, when the last session it can refuse has expired.
create table session_cutoffs (
    user_id uuid primary key,
    valid_after timestamptz not null,
    keep_until timestamptz not null
);
create index session_cutoffs_keep_idx on session_cutoffs (keep_until);
