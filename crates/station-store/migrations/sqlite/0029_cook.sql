-- Cook (issue 24, items 4-7): generative collections from a trait tree.
-- A collection's recipe, its cook (one per collection) and its pieces, each
-- written with its selected traits and parameter snapshot before its job is
-- submitted. Times are Unix ms.
CREATE TABLE cook_recipes (
    collection_id   TEXT PRIMARY KEY,
    recipe          TEXT NOT NULL,
    updated_by      TEXT NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- `status`: running, paused, stopped, done. `recipe` is the snapshot the
-- pieces were drawn from. The process driving it holds a lease (so one
-- process bounds the jobs in flight).
CREATE TABLE cooks (
    collection_id    TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL,
    status           TEXT NOT NULL,
    seed             INTEGER NOT NULL,
    total            INTEGER NOT NULL,
    recipe           TEXT NOT NULL,
    reason           TEXT,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX cooks_status ON cooks (status);

-- One piece per number. `status`: pending (not yet submitted), submitted
-- (its job queued or running), succeeded, failed, stopped. `attempt` moves
-- when a reviewer asks to regenerate it; the job's idempotency key is
-- cook:<collection>:<number>:<attempt>, so a piece is charged once per
-- attempt whatever crashes. `review`: unreviewed, accepted, rejected; a
-- reviewer's claim (`claimed_by` until `claim_expires_at`) hides it from the
-- others. `kept`: 1 unless culled.
CREATE TABLE cook_pieces (
    id               TEXT PRIMARY KEY,
    collection_id    TEXT NOT NULL,
    number           INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    seed             INTEGER NOT NULL,
    traits           TEXT NOT NULL,
    params           TEXT NOT NULL,
    status           TEXT NOT NULL,
    job_id           TEXT,
    media_id         TEXT,
    error            TEXT,
    review           TEXT NOT NULL DEFAULT 'unreviewed',
    reviewed_by      TEXT,
    claimed_by       TEXT,
    claim_expires_at INTEGER,
    kept             INTEGER NOT NULL DEFAULT 1,
    updated_at       INTEGER NOT NULL,
    UNIQUE (collection_id, number)
);
CREATE INDEX cook_pieces_status ON cook_pieces (collection_id, status, number);
CREATE INDEX cook_pieces_review ON cook_pieces (collection_id, review, number);

-- Export options (JSON: {"nft": true, "shuffle": true}) of a cook export.
ALTER TABLE collection_exports ADD COLUMN options TEXT;
