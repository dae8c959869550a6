-- ES256 keys that sign the tokens Temporal's JWT authorizer accepts (its JWKS key provider
-- takes RSA and ECDSA keys, not Ed25519). Same life as signing_keys: sealed under the
-- key-encryption key with the kid as associated data, published before they sign, retired
-- once the last token they signed has expired.
create table temporal_signing_keys (
    kid text primary key,
    public_key bytea not null,
    sealed_private_key bytea not null,
    kek_id text not null,
    created_at timestamptz not null default now(),
    activates_at timestamptz not null,
    verify_until timestamptz
);
