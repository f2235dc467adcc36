-- Auto-captions: one row per caption job of a dataset image, written just
-- before its job (whose id is chosen first). When the job ends its text is
-- applied once: into an empty caption, or any caption when `overwrite`.
CREATE TABLE dataset_captions (
    job_id       TEXT PRIMARY KEY,
    run_id       TEXT NOT NULL,
    dataset_id   TEXT NOT NULL,
    account_id   TEXT NOT NULL,
    media_id     TEXT NOT NULL,
    overwrite    BOOLEAN NOT NULL DEFAULT FALSE,
    status       TEXT NOT NULL,
    caption      TEXT,
    error        TEXT,
    created_at   BIGINT NOT NULL,
    finished_at  BIGINT
);
CREATE INDEX dataset_captions_dataset ON dataset_captions (dataset_id, created_at);
CREATE INDEX dataset_captions_run ON dataset_captions (run_id);
CREATE INDEX dataset_captions_status ON dataset_captions (status, created_at);

-- Sample images of a finished training (training.samples): one ordinary
-- generation job each with the new LoRA's trigger word, written before the
-- job (whose id is chosen first).
CREATE TABLE training_samples (
    job_id       TEXT PRIMARY KEY,
    training_id  TEXT NOT NULL,
    position     BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX training_samples_training ON training_samples (training_id, position);
