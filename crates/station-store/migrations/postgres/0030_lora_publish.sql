-- Requests to make an owner's LoRA public, waiting for an administrator
-- when training.publish_needs_approval: one row per LoRA (a new request
-- after a refusal replaces it), decided once by an administrator.
CREATE TABLE lora_publish_requests (
    slug          TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    status        TEXT NOT NULL,
    requested_at  BIGINT NOT NULL,
    decided_at    BIGINT,
    decided_by    TEXT
);
CREATE INDEX lora_publish_requests_status ON lora_publish_requests (status, requested_at);
