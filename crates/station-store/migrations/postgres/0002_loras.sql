-- LoRA catalog. List-valued fields are JSON array text; times are Unix ms.
CREATE TABLE loras (
    id              TEXT PRIMARY KEY,
    slug            TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    trigger_words   TEXT NOT NULL DEFAULT '[]',
    cognates        TEXT NOT NULL DEFAULT '[]',
    default_weight  DOUBLE PRECISION,
    checkpoint      TEXT NOT NULL,
    filename        TEXT NOT NULL,
    tags            TEXT NOT NULL DEFAULT '[]',
    owner_id        TEXT,
    visibility      TEXT NOT NULL,
    rating          DOUBLE PRECISION,
    preview_images  TEXT NOT NULL DEFAULT '[]',
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- Who may use a private LoRA besides its owner.
CREATE TABLE lora_grants (
    lora_id     TEXT NOT NULL REFERENCES loras(id) ON DELETE CASCADE,
    account_id  TEXT NOT NULL,
    expires_at  BIGINT,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (lora_id, account_id)
);
CREATE INDEX lora_grants_account ON lora_grants (account_id);

-- Bumped by every catalog write, so each process can tell whether its cached
-- catalog is stale with one cheap read (several processes share one database).
CREATE TABLE lora_catalog (
    id       BIGINT PRIMARY KEY,
    version  BIGINT NOT NULL
);
INSERT INTO lora_catalog (id, version) VALUES (1, 0);
