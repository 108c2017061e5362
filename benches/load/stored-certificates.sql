-- Fills a load-test database with :n certificates issued over the past year, each with its
-- enrollment event and its issued_requests claim, copied from a certificate the CA issued (so
-- row sizes are real) with unique serials, keys, devices and CSR hashes: what a line's
-- database looks like after a year of production. For "throughput with 1,000,000 stored
-- certificates vs an empty database" (docs/performance.md; benches/load/stored-rows.sh runs
-- the whole comparison).
--
--   psql "$DATABASE_URL" -v n=1000000 -f benches/load/stored-certificates.sql
--
-- The rows name another issuer key (a CA key before a rollover), so the running CA's OCSP
-- responder does not pre-sign a million responses while it is measured: the database holds
-- the rows and every index over them, which is what this comparison is about. Run it after at
-- least one enrollment (the template row).
\set ON_ERROR_STOP on
BEGIN;
-- A serial as the CA issues them (crates/attestca-core/src/issuance/build.rs, serial_at):
-- 01 ‖ issue time / 16 as 4 octets ‖ 15 octets that differ per row.
CREATE FUNCTION pg_temp.serial_of(issued_at BIGINT, g BIGINT) RETURNS TEXT
    LANGUAGE SQL IMMUTABLE
    AS $$ SELECT '01' || lpad(to_hex(issued_at / 16), 8, '0') || substr(md5('serial' || g), 1, 30) $$;
CREATE TEMP TABLE template AS
    SELECT * FROM certificates WHERE profile <> 'ocsp-responder' ORDER BY issued_at LIMIT 1;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM template) THEN
        RAISE EXCEPTION 'enroll one device first: the template row is an issued certificate';
    END IF;
END $$;

INSERT INTO certificates (serial, der, issuer_key_id, subject, sans, spki_sha256, profile,
    not_before, not_after, status, requester, device_identity, csr_sha256, issued_at)
SELECT pg_temp.serial_of(t.issued_at - (g % 31536000), g),
       t.der, sha256('previous CA key'::bytea), t.subject, t.sans,
       sha256(('spki' || g)::bytea), t.profile,
       t.not_before - (g % 31536000), t.not_after - (g % 31536000), 'active', t.requester,
       'simulated-se:' || upper(md5('device' || g)), sha256(('csr' || g)::bytea),
       t.issued_at - (g % 31536000)
FROM generate_series(1, :n) AS g, template AS t;

INSERT INTO issued_requests (requester, profile, csr_sha256, serial, issued_at)
SELECT t.requester, t.profile, sha256(('csr' || g)::bytea), pg_temp.serial_of(t.issued_at - (g % 31536000), g),
       t.issued_at - (g % 31536000)
FROM generate_series(1, :n) AS g, template AS t;

INSERT INTO enrollment_events (occurred_at, requester, operation, profile, outcome, reason,
    detail, serial, csr_sha256, peer, evidence_sha256, attestation_format, vendor,
    device_identity)
SELECT t.issued_at - (g % 31536000), t.requester, 'simpleenroll', t.profile, 'issued',
       'enroll.issued', '', pg_temp.serial_of(t.issued_at - (g % 31536000), g), sha256(('csr' || g)::bytea), '127.0.0.1',
       sha256(('evidence' || g)::bytea), 'x509-chain', 'simulated-se',
       'simulated-se:' || upper(md5('device' || g))
FROM generate_series(1, :n) AS g, template AS t;
COMMIT;
VACUUM ANALYZE certificates;
VACUUM ANALYZE issued_requests;
VACUUM ANALYZE enrollment_events;
SELECT count(*) AS certificates FROM certificates;
