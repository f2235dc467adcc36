-- Alerts (issue 27 item 4). The evaluator keeps one row per rule and
-- subject whose condition holds (or held and was announced): `pending`
-- until it has held long enough, then `firing`, then `resolved` once it
-- stops. A transition and the messages it owes are written in one
-- transaction, so each firing is announced once per sink and each
-- resolution once.
CREATE TABLE alert_states (
    rule        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    state       TEXT NOT NULL,
    since       BIGINT NOT NULL,
    fired_at    BIGINT,
    resolved_at BIGINT,
    reminded_at BIGINT,
    value       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (rule, subject)
);

-- One message to one sink, written before anything is sent and sent by
-- whichever process can reach that kind of sink; `(event_id, sink)` is
-- unique so an announcement is never enqueued twice.
CREATE TABLE alert_messages (
    id              TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL,
    rule            TEXT NOT NULL,
    subject         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    sink            TEXT NOT NULL,
    sink_kind       TEXT NOT NULL,
    target          TEXT NOT NULL,
    text            TEXT NOT NULL,
    body            TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT,
    UNIQUE (event_id, sink)
);
CREATE INDEX alert_messages_due ON alert_messages (state, sink_kind, next_attempt_at);

-- Named leases for work one process at a time does across processes (the
-- alert evaluator): held by `owner` until `expires_at`, renewed by it,
-- taken over by another once expired.
CREATE TABLE process_leases (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- The failure-rate rule counts jobs that ended in the last minutes.
CREATE INDEX jobs_finished ON jobs (finished_at);
