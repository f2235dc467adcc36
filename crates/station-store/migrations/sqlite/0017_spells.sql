-- Spells: saved linear chains of tools. `definition` is the validated JSON
-- (steps with their tool, fixed parameters and mappings; exposed inputs).
-- `broken` says why a spell can no longer run (a tool changed incompatibly).
CREATE TABLE spells (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    owner_id    TEXT NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    visibility  TEXT NOT NULL,
    definition  TEXT NOT NULL,
    broken      TEXT,
    casts       BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX spells_owner ON spells (owner_id, slug);
CREATE INDEX spells_public ON spells (visibility, casts);

-- One run of a spell: every step's job (and its hold) is written with the
-- cast in one transaction; steps after the first wait parked (queued, not
-- claimable) until the step before them succeeded and bound their inputs.
-- `current_step` (0-based) only moves in the transaction that unparks the
-- next step's job, so a crash between steps neither loses nor repeats one.
CREATE TABLE casts (
    id           TEXT PRIMARY KEY,
    spell_id     TEXT NOT NULL,
    account_id   TEXT NOT NULL,
    status       TEXT NOT NULL,
    steps        BIGINT NOT NULL,
    current_step BIGINT NOT NULL DEFAULT 0,
    inputs       TEXT NOT NULL,
    price        BIGINT NOT NULL,
    error        TEXT,
    callback_url TEXT,
    created_at   BIGINT NOT NULL,
    finished_at  BIGINT
);
CREATE INDEX casts_status ON casts (status);
CREATE INDEX casts_account ON casts (account_id, created_at);

-- A cast's steps: the job of each and the inputs to fill from earlier
-- steps' outputs when it is unparked (JSON {param: [step, output index]}).
CREATE TABLE cast_steps (
    cast_id  TEXT NOT NULL,
    step     BIGINT NOT NULL,
    job_id   TEXT NOT NULL UNIQUE,
    tool_id  TEXT NOT NULL,
    bindings TEXT NOT NULL,
    PRIMARY KEY (cast_id, step)
);

-- Webhooks: per-account subscriptions (the signing secret is kept to sign
-- with; it is shown once when created) and one durable row per delivery of
-- an event to a URL, written before anything is sent and retried with
-- backoff. (event_id, url) is unique: an event is enqueued once per URL.
CREATE TABLE webhook_subscriptions (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    url         TEXT NOT NULL,
    events      TEXT NOT NULL,
    secret      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    disabled_at BIGINT
);
CREATE INDEX webhook_subscriptions_account ON webhook_subscriptions (account_id);

CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL,
    event           TEXT NOT NULL,
    account_id      TEXT NOT NULL,
    subscription_id TEXT,
    url             TEXT NOT NULL,
    secret          TEXT NOT NULL,
    body            TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT,
    UNIQUE (event_id, url)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_account ON webhook_deliveries (account_id, created_at);
