-- Front ends' storage becomes platform-neutral: the Telegram tables
-- (0008) and the Discord one (0009) are replaced by an inbox, a key–value
-- state per scope and per-group tool switches that any adapter can use.
-- Existing rows are copied over, then the old tables dropped.

-- A durable inbox: every event an adapter receives is a row before it is
-- acknowledged, so a crash loses none; the primary key makes a redelivered
-- event a no-op, so none is processed twice. Events of one lane (a chat)
-- are processed one at a time, in `seq` order.
CREATE TABLE inbox (
    -- Who sent it: `telegram:<bot>`.
    source       TEXT NOT NULL,
    -- The source's own sequence number (Telegram's update id).
    seq          INTEGER NOT NULL,
    -- Events with the same lane are processed one at a time, in order.
    lane         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    -- pending | processing | done | failed
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    claimed_by   TEXT,
    error        TEXT,
    received_at  INTEGER NOT NULL,
    done_at      INTEGER,
    PRIMARY KEY (source, seq)
);
CREATE INDEX inbox_state ON inbox (source, state, seq);

INSERT INTO inbox (source, seq, lane, payload, state, attempts, claimed_by, error, received_at, done_at)
SELECT 'telegram:' || bot_id, update_id, chat_key, payload, state, attempts, claimed_by, error, received_at, done_at
FROM telegram_updates;

-- Small facts an adapter keeps per scope (`telegram:<bot>`): the command
-- menu last set, remembered album captions, file ids of media already
-- uploaded (`file:<kind>:<media id>`, so a result is sent again without
-- uploading the bytes twice).
CREATE TABLE adapter_state (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);

INSERT INTO adapter_state (scope, key, value, updated_at)
SELECT 'telegram:' || bot_id, key, value, updated_at FROM telegram_meta;
INSERT INTO adapter_state (scope, key, value, updated_at)
SELECT 'telegram:' || bot_id, 'file:' || kind || ':' || media_id, file_id, created_at FROM telegram_files;

-- Which tools the operators of a group (`discord-guild:<id>`) switched on
-- or off there. A tool without a row follows the default (enabled).
CREATE TABLE group_tools (
    scope       TEXT NOT NULL,
    tool_id     TEXT NOT NULL,
    enabled     INTEGER NOT NULL,
    updated_by  TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (scope, tool_id)
);

INSERT INTO group_tools (scope, tool_id, enabled, updated_by, updated_at)
SELECT 'discord-guild:' || guild_id, tool_id, enabled, updated_by, updated_at FROM discord_guild_tools;

DROP TABLE telegram_updates;
DROP TABLE telegram_files;
DROP TABLE telegram_meta;
DROP TABLE discord_guild_tools;
