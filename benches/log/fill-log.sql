-- Fills a load-test database with :n certificates and their issuance-log entries, for the
-- transparency log at a million entries (benches/log/million.sh runs the whole measurement;
-- docs/transparency.md, "Cost"). Two stages, each its own psql run:
--
--   psql "$DATABASE_URL" -v stage=certificates -v n=1000000 -f benches/log/fill-log.sql
--   psql "$DATABASE_URL" -v stage=log -f benches/log/fill-log.sql
--
-- stage=certificates: as benches/load/stored-certificates.sql (:n certificates issued over the
-- past year, each with its issued_requests claim and its enrollment event, copied from a
-- certificate the CA issued, under another issuer key so that the running CA's OCSP responder
-- does not pre-sign them), except that each row's DER carries the row's own serial: the
-- template's serial octets are overwritten in place (same length, so the DER stays well
-- formed; the signature no longer matches, which nothing here checks). So the log's
-- certificates and the certificates table agree serial by serial, and
-- `attestca log verify --config` has a meaningful database cross-check.
--
-- stage=log: one log_pending row per filled certificate, the entry encoded in SQL exactly as
-- docs/transparency.md "The entry" specifies, in issuance order, in one transaction (the
-- running CA's integrator takes the backlog from its commit). Before that it re-encodes, in
-- SQL, every entry the CA has logged itself (read from the stored entry bundles) and stops if
-- one differs byte for byte from the CA's: the SQL encoding is checked against the real one.
-- Run it after the CA integrated what it issued (log_pending empty).
\set ON_ERROR_STOP on

-- The entry (docs/transparency.md): integers big-endian, opaque<..2^8-1> a one-octet length,
-- opaque<..2^16-1> a two-octet length. The fields copied here are far below their limits.
CREATE FUNCTION pg_temp.v8(b BYTEA) RETURNS BYTEA LANGUAGE SQL IMMUTABLE
    AS $$ SELECT substring(int4send(length(b)) FROM 4 FOR 1) || b $$;
CREATE FUNCTION pg_temp.v16(b BYTEA) RETURNS BYTEA LANGUAGE SQL IMMUTABLE
    AS $$ SELECT substring(int4send(length(b)) FROM 3 FOR 2) || b $$;
CREATE FUNCTION pg_temp.log_entry(logged_at BIGINT, der BYTEA, attested BOOLEAN,
        operation TEXT, profile TEXT, requester TEXT, format TEXT, vendor TEXT,
        device_identity TEXT, evidence_sha256 BYTEA) RETURNS BYTEA
    LANGUAGE SQL IMMUTABLE
    AS $$ SELECT '\x01'::bytea                                   -- version
              || int8send(logged_at)                             -- uint64 logged_at
              || pg_temp.v16(der)                                -- certificate<1..2^16-1>
              || CASE WHEN attested THEN '\x01'::bytea ELSE '\x00'::bytea END
              || pg_temp.v8(convert_to(operation, 'UTF8'))
              || pg_temp.v8(convert_to(profile, 'UTF8'))
              || pg_temp.v8(convert_to(requester, 'UTF8'))
              || pg_temp.v8(convert_to(format, 'UTF8'))
              || pg_temp.v8(convert_to(vendor, 'UTF8'))
              || pg_temp.v16(convert_to(device_identity, 'UTF8'))
              || pg_temp.v8(evidence_sha256) $$;
-- The entry of a stored certificate, from its row and its `issued` event (what the ledger
-- encodes in the certificate's commit: crates/attestca-server/src/store/ledger.rs, log_entry).
CREATE FUNCTION pg_temp.entry_of(c certificates, e enrollment_events) RETURNS BYTEA
    LANGUAGE SQL STABLE
    AS $$ SELECT pg_temp.log_entry(c.issued_at, c.der, e.attestation_format IS NOT NULL,
              e.operation, c.profile, c.requester, coalesce(e.attestation_format, ''),
              coalesce(e.vendor, ''), coalesce(c.device_identity, e.device_identity, ''),
              coalesce(e.evidence_sha256, ''::bytea)) $$;

SELECT :'stage' = 'certificates' AS certificates_stage, :'stage' = 'log' AS log_stage \gset
\if :certificates_stage
BEGIN;
-- A serial as the CA issues them (crates/attestca-core/src/issuance/build.rs, serial_at):
-- 01 ‖ issue time / 16 as 4 octets ‖ 15 octets that differ per row.
CREATE FUNCTION pg_temp.serial_of(issued_at BIGINT, g BIGINT) RETURNS TEXT
    LANGUAGE SQL IMMUTABLE
    AS $$ SELECT '01' || lpad(to_hex(issued_at / 16), 8, '0') || substr(md5('serial' || g), 1, 30) $$;
CREATE TEMP TABLE template AS
    SELECT *, position(decode(serial, 'hex') IN der) AS serial_at
    FROM certificates WHERE profile <> 'ocsp-responder' ORDER BY issued_at LIMIT 1;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM template) THEN
        RAISE EXCEPTION 'enroll one device first: the template row is an issued certificate';
    END IF;
    IF (SELECT length(decode(serial, 'hex')) <> 20 OR serial_at = 0 FROM template) THEN
        RAISE EXCEPTION 'the template''s serial is not 20 octets found in its DER';
    END IF;
END $$;

INSERT INTO certificates (serial, der, issuer_key_id, subject, sans, spki_sha256, profile,
    not_before, not_after, status, requester, device_identity, csr_sha256, issued_at)
SELECT s.serial, overlay(t.der PLACING decode(s.serial, 'hex') FROM t.serial_at FOR 20),
       sha256('previous CA key'::bytea), t.subject, t.sans,
       sha256(('spki' || g)::bytea), t.profile,
       t.not_before - (g % 31536000), t.not_after - (g % 31536000), 'active', t.requester,
       'simulated-se:' || upper(md5('device' || g)), sha256(('csr' || g)::bytea),
       t.issued_at - (g % 31536000)
FROM generate_series(1, :n) AS g, template AS t,
     LATERAL (SELECT pg_temp.serial_of(t.issued_at - (g % 31536000), g) AS serial) AS s;

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
\endif

\if :log_stage
-- An entry bundle's entries (each a uint16 length and the entry), numbered from 0.
CREATE FUNCTION pg_temp.bundle_entries(bundle BYTEA) RETURNS TABLE (k INTEGER, entry BYTEA)
    LANGUAGE plpgsql IMMUTABLE
    AS $$
DECLARE
    at INTEGER := 0;
    len INTEGER;
BEGIN
    k := 0;
    WHILE at < length(bundle) LOOP
        len := get_byte(bundle, at) * 256 + get_byte(bundle, at + 1);
        entry := substring(bundle FROM at + 3 FOR len);
        RETURN NEXT;
        at := at + 2 + len;
        k := k + 1;
    END LOOP;
END $$;

DO $$
DECLARE
    logged BIGINT;
    differing BIGINT;
BEGIN
    IF EXISTS (SELECT 1 FROM log_pending) THEN
        RAISE EXCEPTION 'entries are pending integration: run this once the CA integrated them';
    END IF;
    SELECT count(*), count(*) FILTER (WHERE ours IS DISTINCT FROM theirs)
    INTO logged, differing
    FROM (
        SELECT b.entry AS theirs,
               (SELECT pg_temp.entry_of(c, e)
                FROM certificates c JOIN enrollment_events e
                  ON e.serial = c.serial AND e.outcome = 'issued'
                WHERE c.serial = l.serial
                ORDER BY e.id LIMIT 1) AS ours
        FROM log_tiles t
        CROSS JOIN LATERAL pg_temp.bundle_entries(t.data) AS b
        JOIN log_leaves l ON l.idx = t.idx * 256 + b.k
        WHERE t.level = -1
    ) AS compared;
    IF logged = 0 THEN
        RAISE EXCEPTION 'the CA has logged nothing yet: no entry to check the encoding against';
    END IF;
    IF differing > 0 THEN
        RAISE EXCEPTION '% of the % entries the CA logged differ from their SQL encoding',
            differing, logged;
    END IF;
    RAISE NOTICE 'the SQL encoding reproduces all % entries the CA logged, byte for byte', logged;
END $$;

BEGIN;
WITH queued AS (
    INSERT INTO log_pending (serial, entry)
    SELECT c.serial, pg_temp.entry_of(c, e)
    FROM certificates c JOIN enrollment_events e ON e.serial = c.serial AND e.outcome = 'issued'
    WHERE c.issuer_key_id = sha256('previous CA key'::bytea)
    ORDER BY c.issued_at, c.serial
    RETURNING length(entry) AS len)
SELECT count(*) AS queued, max(len) AS longest, sum(len) AS octets FROM queued \gset
COMMIT;
\echo queued :queued entries (:octets octets, the longest :longest)
\endif
