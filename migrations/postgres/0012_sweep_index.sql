-- The OCSP sweep pages through one issuer's certificates in (issued_at, serial) order: with
-- the serial in this index, a page is a range of it. Paging over the primary key instead
-- (serial order, filtered by issuer) walked every row of every issuer to find one issuer's:
-- with 10,000,000 certificates of a previous CA key, each sweep read all of them
-- (docs/performance.md, "stored certificates"). Same index count as before: the poll for new
-- certificates (issuer_key_id, issued_at >= since) uses its prefix.
DROP INDEX certificates_issued;
CREATE INDEX certificates_issued ON certificates (issuer_key_id, issued_at, serial);
