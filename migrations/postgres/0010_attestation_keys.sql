-- Attestation-key certification (TPM2_MakeCredential challenges): the SHA-256 of the secret
-- the CA encrypted to a TPM's endorsement key, bound to the rig that asked and to the EK
-- certificate and AK public area it was made for (binding = SHA-256 of both). Spent once,
-- by one conditional UPDATE; expired ones are purged with the nonces.
CREATE TABLE ak_challenges (
    secret_sha256 BYTEA PRIMARY KEY,
    requester     TEXT NOT NULL,
    binding       BYTEA NOT NULL,
    issued_at     BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    consumed_at   BIGINT
);
CREATE INDEX ak_challenges_expires_at ON ak_challenges (expires_at);
