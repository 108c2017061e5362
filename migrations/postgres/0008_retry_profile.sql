-- A retry is the same requester, the same profile and the same CSR: a CSR issued on one profile
-- and posted again to another is a new request there, decided by that profile's policy (an
-- attestation-required profile must never hand back a certificate issued unattested elsewhere).
ALTER TABLE issued_requests ADD COLUMN profile TEXT;
UPDATE issued_requests SET profile = c.profile
    FROM certificates c WHERE c.serial = issued_requests.serial;
-- A claim without its certificate decides nothing.
DELETE FROM issued_requests WHERE profile IS NULL;
ALTER TABLE issued_requests ALTER COLUMN profile SET NOT NULL;
ALTER TABLE issued_requests DROP CONSTRAINT issued_requests_pkey;
ALTER TABLE issued_requests ADD PRIMARY KEY (requester, profile, csr_sha256);
