-- LoRA training: datasets (images with captions) and trainings (one ComfyUI
-- job each, whose result becomes a private catalog LoRA). Times are Unix ms.
CREATE TABLE datasets (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    name          TEXT NOT NULL,
    slug          TEXT NOT NULL,
    trigger_word  TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (account_id, slug)
);

CREATE TABLE dataset_images (
    dataset_id  TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    media_id    TEXT NOT NULL,
    hash        TEXT NOT NULL,
    caption     TEXT NOT NULL,
    PRIMARY KEY (dataset_id, position),
    UNIQUE (dataset_id, hash)
);

CREATE TABLE trainings (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL,
    dataset_id   TEXT NOT NULL REFERENCES datasets(id),
    definition   TEXT NOT NULL,
    job_id       TEXT NOT NULL UNIQUE,
    lora_slug    TEXT NOT NULL,
    settings     TEXT NOT NULL,
    price        INTEGER NOT NULL,
    status       TEXT NOT NULL,
    error        TEXT,
    file_hash    TEXT,
    file_name    TEXT,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER
);
CREATE INDEX trainings_account ON trainings (account_id, created_at);
CREATE INDEX trainings_open ON trainings (status);
