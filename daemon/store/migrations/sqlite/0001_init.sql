-- hangard's first schema. Times are TEXT in one fixed-width UTC layout
-- (2006-01-02T15:04:05.000000Z) so that they sort and compare as strings.
-- No column ever holds a credential: API keys and tickets are stored as
-- SHA-256 hashes only.

CREATE TABLE tenants (
    id                      TEXT    PRIMARY KEY,
    name                    TEXT    NOT NULL UNIQUE,
    pools                   TEXT,                        -- JSON array of pool names
    max_sessions            INTEGER NOT NULL DEFAULT 0,
    max_session_duration_ns INTEGER NOT NULL DEFAULT 0,
    key_hash                BLOB    UNIQUE,
    created_at              TEXT    NOT NULL
);

CREATE TABLE sessions (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,  -- creation order
    id               TEXT    NOT NULL UNIQUE,
    tenant_id        TEXT    NOT NULL,
    pool             TEXT    NOT NULL,
    tenant_image     TEXT    NOT NULL DEFAULT '',
    region           TEXT    NOT NULL DEFAULT '',
    state            TEXT    NOT NULL,
    reason           TEXT    NOT NULL DEFAULT '',
    machine_id       TEXT    NOT NULL DEFAULT '',
    app_name         TEXT    NOT NULL DEFAULT '',
    repo             TEXT    NOT NULL DEFAULT '',
    branch           TEXT    NOT NULL DEFAULT '',
    session_branch   TEXT    NOT NULL DEFAULT '',
    mode             TEXT    NOT NULL DEFAULT '',
    command          TEXT,                               -- JSON array
    env              TEXT,                               -- JSON object
    term_cols        INTEGER NOT NULL DEFAULT 0,
    term_rows        INTEGER NOT NULL DEFAULT 0,
    git_author_name  TEXT    NOT NULL DEFAULT '',
    git_author_email TEXT    NOT NULL DEFAULT '',
    owner            TEXT    NOT NULL DEFAULT '',
    created_at       TEXT    NOT NULL,
    ready_at         TEXT,
    ended_at         TEXT,
    push             TEXT,                               -- JSON object
    cost_usd         REAL    NOT NULL DEFAULT 0,
    updated_at       TEXT    NOT NULL
);
CREATE INDEX sessions_tenant_state ON sessions (tenant_id, state);
CREATE INDEX sessions_pool_state   ON sessions (pool, state, seq);
CREATE INDEX sessions_owner_state  ON sessions (owner, state);
CREATE INDEX sessions_state        ON sessions (state);

CREATE TABLE tickets (
    hash       BLOB    PRIMARY KEY,                      -- SHA-256 of the ticket
    session_id TEXT    NOT NULL,
    tenant_id  TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    expires_at TEXT    NOT NULL,
    uses_left  INTEGER NOT NULL
);
CREATE INDEX tickets_expires_at ON tickets (expires_at);
CREATE INDEX tickets_tenant     ON tickets (tenant_id);

CREATE TABLE daemons (
    id        TEXT PRIMARY KEY,
    last_seen TEXT NOT NULL
);
