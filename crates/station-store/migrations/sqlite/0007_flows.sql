-- Conversations: flow instances, the action records behind buttons, and the
-- outbox of messages to send (written before anything is sent).
CREATE TABLE flow_instances (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    conversation  TEXT NOT NULL,
    conv_json     TEXT NOT NULL,
    flow          TEXT NOT NULL,
    flow_version  INTEGER NOT NULL,
    step          TEXT NOT NULL,
    state         TEXT NOT NULL,
    history       TEXT NOT NULL,
    rev           INTEGER NOT NULL,
    status        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX flow_instances_conv ON flow_instances (conversation, account_id, status);
CREATE INDEX flow_instances_idle ON flow_instances (status, updated_at);

CREATE TABLE flow_actions (
    token        TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL,
    instance_id  TEXT,
    rev          INTEGER,
    name         TEXT NOT NULL,
    args         TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY,
    conversation    TEXT NOT NULL,
    conv_json       TEXT NOT NULL,
    platform        TEXT NOT NULL,
    account_id      TEXT NOT NULL,
    kind            TEXT NOT NULL,
    dedupe_key      TEXT UNIQUE,
    view            TEXT NOT NULL,
    version         INTEGER NOT NULL DEFAULT 1,
    replace_ref     TEXT,
    message_ref     TEXT,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    error           TEXT,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER
);
CREATE INDEX deliveries_due ON deliveries (status, platform, next_attempt_at);
CREATE INDEX deliveries_conv ON deliveries (conversation, status);

CREATE TABLE job_marks (
    job_id      TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    rating      INTEGER,
    hidden      INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL
);
