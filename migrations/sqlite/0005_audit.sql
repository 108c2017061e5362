-- Operator actions: every call of the operator API (and `attestca revoke`) that changes or
-- attempts to change state, with who did it. Written in the same transaction as the change.
CREATE TABLE audit_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    occurred_at  BIGINT NOT NULL,
    operator     TEXT NOT NULL,                     -- "cert:<CN>", "token:<name>", "cli:<user>"
    action       TEXT NOT NULL,                     -- certificate.revoke | device.revoke
    target       TEXT NOT NULL,                     -- the serial or device identity acted on
    outcome      TEXT NOT NULL,                     -- done | refused
    reason       TEXT NOT NULL DEFAULT '',          -- RFC 5280 reason, or why it was refused
    detail       TEXT NOT NULL DEFAULT '',          -- e.g. the serials a device revocation hit
    peer         TEXT                               -- client address, when over the network
);
CREATE INDEX audit_events_occurred_at ON audit_events (occurred_at);
CREATE INDEX audit_events_target ON audit_events (target);

-- Operators list certificates newest first.
CREATE INDEX certificates_issued_at ON certificates (issued_at, serial);
