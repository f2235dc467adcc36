-- callback_url on generations and trainings (casts keep theirs in
-- casts.callback_url): one row per job or training, written before the job
-- is queued, so its end is always owed to the URL.
CREATE TABLE callbacks (
    kind        TEXT NOT NULL,
    subject_id  TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    url         TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (kind, subject_id)
);

-- The secret callback_url deliveries are signed with: one per account,
-- made when it first gives a callback_url (or asks for it).
CREATE TABLE callback_secrets (
    account_id  TEXT PRIMARY KEY,
    secret      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
