-- Curated collections (issue 24): an owner's ordered set of generation
-- outputs and LoRAs, share links and ZIP exports. Times are Unix ms.
CREATE TABLE collections (
    id              TEXT PRIMARY KEY,
    owner_id        TEXT NOT NULL,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    visibility      TEXT NOT NULL,
    cover_item_id   TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX collections_owner ON collections (owner_id, created_at);
CREATE INDEX collections_visibility ON collections (visibility, created_at);

-- Items in order (`position` ascending). `kind` is `media` (a generation's
-- output, `ref_id` its media id) or `lora` (`ref_id` the LoRA's slug).
CREATE TABLE collection_items (
    id              TEXT PRIMARY KEY,
    collection_id   TEXT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,
    ref_id          TEXT NOT NULL,
    position        BIGINT NOT NULL,
    added_by        TEXT NOT NULL,
    added_at        BIGINT NOT NULL,
    UNIQUE (collection_id, kind, ref_id)
);
CREATE INDEX collection_items_order ON collection_items (collection_id, position);

-- Share links: the token is kept only as its SHA-256. `permission` is
-- `view` (anyone holding the link) or `add` (the named accounts, signed
-- in, may also add their own results). Links always expire.
CREATE TABLE collection_shares (
    id              TEXT PRIMARY KEY,
    collection_id   TEXT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    token_hash      TEXT NOT NULL UNIQUE,
    permission      TEXT NOT NULL,
    accounts        TEXT NOT NULL DEFAULT '[]',
    created_by      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    revoked_at      BIGINT
);
CREATE INDEX collection_shares_collection ON collection_shares (collection_id);

-- ZIP exports: durable background work claimed with a lease like jobs.
-- `status`: queued, running, succeeded, failed; `file` the ZIP's name in
-- the exports folder once succeeded; `expires_at` when the download ends.
CREATE TABLE collection_exports (
    id               TEXT PRIMARY KEY,
    collection_id    TEXT NOT NULL,
    account_id       TEXT NOT NULL,
    status           TEXT NOT NULL,
    done             BIGINT NOT NULL DEFAULT 0,
    total            BIGINT NOT NULL DEFAULT 0,
    error            TEXT,
    file             TEXT,
    size             BIGINT,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    created_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    expires_at       BIGINT
);
CREATE INDEX collection_exports_status ON collection_exports (status, lease_expires_at);
CREATE INDEX collection_exports_account ON collection_exports (account_id, created_at);
