-- OCSP: each instance polls for certificates issued since its last look (revocations are
-- found through certificates_revoked), so that new certificates get a pre-signed response.
CREATE INDEX certificates_issued ON certificates (issuer_key_id, issued_at);
