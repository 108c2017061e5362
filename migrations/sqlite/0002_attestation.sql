-- Attestation: freshness nonces, supply-chain manifests, and evidence facts on events.

-- Nonces from /.well-known/est/nonce: bound to the rig that asked, single use, expiring.
-- Consumed by one conditional UPDATE, so two enrollments racing on one nonce cannot both win.
CREATE TABLE nonces (
    nonce        BLOB PRIMARY KEY,
    requester    TEXT NOT NULL,
    issued_at    BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    consumed_at  BIGINT
);
CREATE INDEX nonces_expires_at ON nonces (expires_at);

-- Parts delivered to this factory, from verified vendor manifests.
CREATE TABLE manifest_parts (
    vendor        TEXT NOT NULL,
    unique_id     TEXT NOT NULL,                    -- as the device identity displays it
    part_number   TEXT NOT NULL DEFAULT '',
    manifest_sha256 BLOB NOT NULL,
    imported_at   BIGINT NOT NULL,
    PRIMARY KEY (vendor, unique_id)
);
CREATE TABLE manifest_keys (
    vendor        TEXT NOT NULL,
    unique_id     TEXT NOT NULL,
    spki_sha256   BLOB NOT NULL,
    PRIMARY KEY (vendor, unique_id, spki_sha256)
);

ALTER TABLE enrollment_events ADD COLUMN evidence_sha256 BLOB;
ALTER TABLE enrollment_events ADD COLUMN attestation_format TEXT;
ALTER TABLE enrollment_events ADD COLUMN vendor TEXT;
ALTER TABLE enrollment_events ADD COLUMN device_identity TEXT;
CREATE INDEX enrollment_events_device ON enrollment_events (device_identity) WHERE device_identity IS NOT NULL;
