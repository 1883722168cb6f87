-- limits: one row per named limit. default_ttl_ns 0 means "the server's default".
CREATE TABLE limits (
    name           TEXT    PRIMARY KEY NOT NULL,
    capacity       INTEGER NOT NULL CHECK (capacity BETWEEN 0 AND 1000000),
    default_ttl_ns INTEGER NOT NULL DEFAULT 0 CHECK (default_ttl_ns >= 0),
    description    TEXT    NOT NULL DEFAULT '',
    created_at_ns  INTEGER NOT NULL,
    updated_at_ns  INTEGER NOT NULL
) STRICT;

-- leases: one row per live lease; released and expired leases are deleted.
CREATE TABLE leases (
    id              TEXT    PRIMARY KEY NOT NULL,
    limit_name      TEXT    NOT NULL,
    slots           INTEGER NOT NULL CHECK (slots >= 1),
    holder          TEXT    NOT NULL DEFAULT '',
    fence           INTEGER NOT NULL CHECK (fence >= 1),
    acquired_at_ns  INTEGER NOT NULL,
    expires_at_ns   INTEGER NOT NULL,
    ttl_ns          INTEGER NOT NULL CHECK (ttl_ns > 0),
    idempotency_key TEXT    NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX leases_by_limit ON leases (limit_name);

-- meta: small server-wide values; "fence" is the highest fence ever handed
-- out, kept so fences grow across restarts even after every lease is gone.
CREATE TABLE meta (
    key   TEXT    PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) STRICT;
