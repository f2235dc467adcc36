-- Idempotency of chat input. An adapter names each input it hands the flow
-- engine (`telegram:<bot>:<update>`, `discord:<interaction>`); the key is
-- written in the same transaction as what the input caused (the flow
-- transition, or the message it sends), so an input processed again after a
-- crash — the update was stored but not yet marked done — changes nothing.
CREATE TABLE flow_inputs (
    input_key   TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL
);
CREATE INDEX flow_inputs_created ON flow_inputs (created_at);

-- Keyed submissions: a job submitted with an idempotency key is queued (and
-- paid for) once; a second submit with the same key returns the first job.
-- Written in the transaction that inserts the job and its hold.
CREATE TABLE job_keys (
    idem_key    TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
