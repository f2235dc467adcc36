-- Conversations: flow instances, the action records behind buttons, and the
-- outbox of messages to send (written before anything is sent).
CREATE TABLE flow_instances (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    conversation  TEXT NOT NULL,
    conv_json     TEXT NOT NULL,
    flow          TEXT NOT NULL,
    flow_version  BIGINT NOT NULL,
    step          TEXT NOT NULL,
    state         TEXT NOT NULL,
    history       TEXT NOT NULL,
    rev           BIGINT NOT NULL,
    status        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX flow_instances_conv ON flow_instances (conversation, account_id, status);
CREATE INDEX flow_instances_idle ON flow_instances (status, updated_at);

CREATE TABLE flow_actions (
    token        TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL,
    instance_id  TEXT,
    rev          BIGINT,
    name         TEXT NOT NULL,
    args         TEXT NOT NULL,
    created_at   BIGINT NOT NULL
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
    version         BIGINT NOT NULL DEFAULT 1,
    replace_ref     TEXT,
    message_ref     TEXT,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    error           TEXT,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT
);
CREATE INDEX deliveries_due ON deliveries (status, platform, next_attempt_at);
CREATE INDEX deliveries_conv ON deliveries (conversation, status);

CREATE TABLE job_marks (
    job_id      TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    rating      BIGINT,
    hidden      BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at  BIGINT NOT NULL
);
