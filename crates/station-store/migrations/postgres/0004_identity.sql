-- Identity: API keys, link codes, one-time login tokens and web sessions.
-- Every secret here is stored as the hex SHA-256 of what the user holds, so a
-- copy of the database cannot be used to sign in. Times are Unix ms.

-- A merged account keeps its row (old ids in jobs and the ledger stay
-- meaningful) but points at the account it was joined into; it never
-- comes back to life.
ALTER TABLE accounts ADD COLUMN merged_into TEXT;
ALTER TABLE accounts ADD COLUMN merged_at BIGINT;

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL,
    name         TEXT NOT NULL,
    -- The first characters of the key, so people can tell their keys apart.
    prefix       TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    expires_at   BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_keys_account ON api_keys (account_id, created_at);

-- `/link` codes: single use, short-lived.
CREATE TABLE link_codes (
    code_hash   TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    used_by     TEXT
);
CREATE INDEX link_codes_expiry ON link_codes (expires_at);

-- One-time tokens that sign a person in to the web app (sent in chat).
CREATE TABLE login_tokens (
    token_hash  TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX login_tokens_expiry ON login_tokens (expires_at);

-- Web sessions. The CSRF token is kept as is: it is useless without the
-- session cookie and the web app must be able to put it in every form.
CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    csrf_token  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    ended_at    BIGINT
);
CREATE INDEX sessions_account ON sessions (account_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);
