-- Telegram: every update is a row before it is acknowledged (the getUpdates
-- offset advances / the webhook answers 200 only after the insert), so a
-- crash loses none; the primary key makes a redelivered update a no-op, so
-- none is processed twice. Rows are processed in update order within a chat.
CREATE TABLE telegram_updates (
    bot_id       TEXT NOT NULL,
    update_id    BIGINT NOT NULL,
    -- Updates with the same key are processed one at a time, in order.
    chat_key     TEXT NOT NULL,
    payload      TEXT NOT NULL,
    -- pending | processing | done | failed
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    claimed_by   TEXT,
    error        TEXT,
    received_at  BIGINT NOT NULL,
    done_at      BIGINT,
    PRIMARY KEY (bot_id, update_id)
);
CREATE INDEX telegram_updates_state ON telegram_updates (bot_id, state, update_id);

-- Telegram file ids of media already uploaded, so a result is sent again
-- (rerun, history) without uploading the bytes twice.
CREATE TABLE telegram_files (
    bot_id      TEXT NOT NULL,
    media_id    TEXT NOT NULL,
    -- photo | document
    kind        TEXT NOT NULL,
    file_id     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (bot_id, media_id, kind)
);

-- Small per-bot facts (the command menu last set, the webhook registered).
CREATE TABLE telegram_meta (
    bot_id      TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (bot_id, key)
);
