-- leases keyed by id in one B-tree (WITHOUT ROWID) instead of a rowid table
-- plus a separate unique index on id: every grant and release writes one
-- page fewer.
CREATE TABLE leases_new (
    id              TEXT    PRIMARY KEY NOT NULL,
    limit_name      TEXT    NOT NULL,
    slots           INTEGER NOT NULL CHECK (slots >= 1),
    holder          TEXT    NOT NULL DEFAULT '',
    fence           INTEGER NOT NULL CHECK (fence >= 1),
    acquired_at_ns  INTEGER NOT NULL,
    expires_at_ns   INTEGER NOT NULL,
    ttl_ns          INTEGER NOT NULL CHECK (ttl_ns > 0),
    idempotency_key TEXT    NOT NULL DEFAULT ''
) STRICT, WITHOUT ROWID;
INSERT INTO leases_new SELECT id, limit_name, slots, holder, fence, acquired_at_ns, expires_at_ns, ttl_ns, idempotency_key FROM leases;
DROP TABLE leases;
ALTER TABLE leases_new RENAME TO leases;
CREATE INDEX leases_by_limit ON leases (limit_name);
