-- ES256 keys that sign the tokens Temporal's JWT authorizer accepts (its JWKS key provider
-- takes RSA and ECDSA keys, not Ed25519). The same columns and life as signing_keys: sealed
-- under the key-encryption key with the kid as associated data, published before they sign,
-- retired once the last token they signed has expired.
create table temporal_signing_keys (like signing_keys including all);
