-- A retry is the same requester, the same profile and the same CSR: a CSR issued on one profile
-- and posted again to another is a new request there, decided by that profile's policy (an
-- attestation-required profile must never hand back a certificate issued unattested elsewhere).
-- SQLite cannot change a primary key in place: the table is rebuilt. A claim without its
-- certificate decides nothing and is not carried over.
CREATE TABLE issued_requests_by_profile (
    requester   TEXT NOT NULL,
    profile     TEXT NOT NULL,
    csr_sha256  BLOB NOT NULL,
    serial      TEXT NOT NULL,
    issued_at   BIGINT NOT NULL,
    PRIMARY KEY (requester, profile, csr_sha256)
);
INSERT INTO issued_requests_by_profile (requester, profile, csr_sha256, serial, issued_at)
    SELECT r.requester, c.profile, r.csr_sha256, r.serial, r.issued_at
    FROM issued_requests r JOIN certificates c ON c.serial = r.serial;
DROP TABLE issued_requests;
ALTER TABLE issued_requests_by_profile RENAME TO issued_requests;
CREATE INDEX issued_requests_issued_at ON issued_requests (issued_at);
