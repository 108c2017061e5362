-- attestca core schema (PostgreSQL). Times are Unix seconds (BIGINT) so that the same queries
-- run on PostgreSQL and SQLite; use to_timestamp(col) to read them as timestamps.

-- Every certificate the CA has issued. Sized for tens of millions of rows: the primary key
-- serves lookups by serial (OCSP, revocation); the other indexes serve the lookups named.
CREATE TABLE certificates (
    serial            TEXT PRIMARY KEY,             -- lower-case hex of the serial number octets
    der               BYTEA NOT NULL,
    issuer_key_id     BYTEA NOT NULL,               -- SKI of the issuing CA (rollover, CRL per CA)
    subject           TEXT NOT NULL,                -- RFC 4514 string
    sans              TEXT NOT NULL DEFAULT '',     -- "DNS:a, IP:b, ..." for operators
    spki_sha256       BYTEA NOT NULL,
    profile           TEXT NOT NULL,
    not_before        BIGINT NOT NULL,
    not_after         BIGINT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    revoked_at        BIGINT,
    revocation_reason TEXT,
    requester         TEXT NOT NULL,                -- rig identity, e.g. "tls:rig-01" or "basic:line-3"
    device_identity   TEXT,                         -- hardware identity when attested
    csr_sha256        BYTEA NOT NULL,
    issued_at         BIGINT NOT NULL
);
CREATE INDEX certificates_spki_sha256 ON certificates (spki_sha256);
CREATE INDEX certificates_device_identity ON certificates (device_identity) WHERE device_identity IS NOT NULL;
CREATE INDEX certificates_not_after ON certificates (not_after);
CREATE INDEX certificates_revoked ON certificates (issuer_key_id, revoked_at) WHERE status = 'revoked';

-- Every enrollment attempt, successful or not.
CREATE TABLE enrollment_events (
    id           BIGSERIAL PRIMARY KEY,
    occurred_at  BIGINT NOT NULL,
    requester    TEXT,                              -- NULL when the request was not authenticated
    operation    TEXT NOT NULL,                     -- simpleenroll, ...
    profile      TEXT NOT NULL,
    outcome      TEXT NOT NULL,                     -- issued | retried | refused | failed
    reason       TEXT NOT NULL,                     -- stable reason code, e.g. csr.bad_signature
    detail       TEXT NOT NULL DEFAULT '',
    serial       TEXT,                              -- certificate issued or re-sent
    csr_sha256   BYTEA,
    peer         TEXT                               -- client address
);
CREATE INDEX enrollment_events_occurred_at ON enrollment_events (occurred_at);
CREATE INDEX enrollment_events_requester ON enrollment_events (requester, occurred_at);
CREATE INDEX enrollment_events_serial ON enrollment_events (serial) WHERE serial IS NOT NULL;

-- Idempotent retries: the certificate issued for a CSR from a rig, within the retry window.
-- The primary key makes "issue once" atomic across instances sharing the database.
CREATE TABLE issued_requests (
    requester   TEXT NOT NULL,
    csr_sha256  BYTEA NOT NULL,
    serial      TEXT NOT NULL,
    issued_at   BIGINT NOT NULL,
    PRIMARY KEY (requester, csr_sha256)
);
CREATE INDEX issued_requests_issued_at ON issued_requests (issued_at);
