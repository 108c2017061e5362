-- Stateless freshness nonces (attestca_core::nonce): the HMAC key every instance on this
-- database mints and checks them with, created once by the first instance that starts; and
-- the nonce a certificate was issued against, unique so that one nonce buys one certificate
-- across all instances (the commit of the second fails on this index, nothing else checks).
CREATE TABLE nonce_keys (
    id         INTEGER PRIMARY KEY,
    secret     BLOB NOT NULL,
    created_at BIGINT NOT NULL
);
ALTER TABLE certificates ADD COLUMN nonce BLOB;
CREATE UNIQUE INDEX certificates_nonce ON certificates (nonce) WHERE nonce IS NOT NULL;
