-- The issuance log (docs/transparency.md). Every certificate the ledger commits gets its log
-- entry here in the same transaction (nothing issued without an entry); the integrator, one
-- instance at a time, appends pending entries to the Merkle tree, stores the changed tiles
-- and entry bundles, signs a checkpoint and deletes what it integrated, in one transaction.
CREATE TABLE log_pending (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    serial TEXT NOT NULL,
    entry  BYTEA NOT NULL
);
-- level 0..63: hash tiles; level -1: entry bundles. `data` is the widest the tile has grown
-- to; a partial tile `.p/W` is served as its first W hashes (or entries).
CREATE TABLE log_tiles (
    level INTEGER NOT NULL,
    idx   BIGINT NOT NULL,
    width INTEGER NOT NULL,
    data  BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);
-- Where each certificate is in the log (inclusion proofs by serial).
CREATE TABLE log_leaves (
    idx    BIGINT PRIMARY KEY,
    serial TEXT NOT NULL UNIQUE
);
CREATE TABLE log_checkpoints (
    size       BIGINT PRIMARY KEY,
    root       BYTEA NOT NULL,
    note       BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
