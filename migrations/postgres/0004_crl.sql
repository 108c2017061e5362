-- The latest CRL of each issuing CA. crl_number only ever grows (RFC 5280 5.2.3), also across
-- restarts and instances: it is allocated in the same transaction that stores the CRL.
CREATE TABLE crls (
    issuer_key_id  BYTEA PRIMARY KEY,
    crl_number     BIGINT NOT NULL,
    der            BYTEA NOT NULL,
    this_update    BIGINT NOT NULL,
    next_update    BIGINT NOT NULL
);
