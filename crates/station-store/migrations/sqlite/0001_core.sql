-- Accounts: one per person; identities link platform users (telegram:123, local:alice) to it.
CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL DEFAULT 'user',
    suspended   INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);
CREATE TABLE identities (
    provider    TEXT NOT NULL,
    subject     TEXT NOT NULL,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (provider, subject)
);

-- The durable job queue. A job is a row before anything is sent anywhere.
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL,
    tool_id          TEXT NOT NULL,
    service          TEXT NOT NULL,
    params           TEXT NOT NULL,
    status           TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    fair_key         INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 3,
    run_after        INTEGER NOT NULL,
    timeout_ms       INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    backend          TEXT,
    remote_id        TEXT,
    progress         REAL NOT NULL DEFAULT 0,
    outputs          TEXT,
    error_code       TEXT,
    error            TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    source           TEXT,
    created_at       INTEGER NOT NULL,
    dispatched_at    INTEGER,
    started_at       INTEGER,
    finished_at      INTEGER
);
CREATE INDEX jobs_claim ON jobs (service, status, priority DESC, fair_key, created_at);
CREATE INDEX jobs_account ON jobs (account_id, status);
CREATE INDEX jobs_account_created ON jobs (account_id, created_at DESC);
CREATE INDEX jobs_lease ON jobs (status, lease_expires_at);

-- Start-time fair queuing: each account's next job gets max(last key + 1, virtual clock).
CREATE TABLE queue_accounts (
    account_id    TEXT NOT NULL,
    service       TEXT NOT NULL,
    last_fair_key INTEGER NOT NULL,
    PRIMARY KEY (account_id, service)
);
CREATE TABLE queue_clock (
    service TEXT PRIMARY KEY,
    vtime   INTEGER NOT NULL
);

-- Media: unguessable ids pointing at content-addressed blobs.
CREATE TABLE media (
    id          TEXT PRIMARY KEY,
    hash        TEXT NOT NULL,
    mime        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    account_id  TEXT,
    job_id      TEXT,
    kind        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX media_job ON media (job_id);

-- Saved per-tool preferences: the middle layer of parameter precedence.
CREATE TABLE tool_settings (
    account_id  TEXT NOT NULL,
    tool_id     TEXT NOT NULL,
    params      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (account_id, tool_id)
);

-- Backends added at run time (config ones are not stored).
CREATE TABLE backends (
    name        TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    max_concurrent INTEGER NOT NULL,
    tags        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
