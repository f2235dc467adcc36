-- Prompts to cancel on a backend: a job's earlier prompt left on a backend
-- that could not be reached when the job moved elsewhere, or the prompt of a
-- job that timed out. Written in the fenced transaction that moves the job
-- on, so a restart forgets none; whichever process next sees the backend
-- healthy deletes (if queued) and interrupts (if running) the prompt there,
-- then removes the row.
CREATE TABLE remote_cancels (
    backend    TEXT NOT NULL,
    remote_id  TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (backend, remote_id)
);
