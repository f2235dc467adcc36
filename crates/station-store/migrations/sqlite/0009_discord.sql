-- Discord: which tools each server (guild) has switched on or off.
-- A tool without a row follows the default (enabled).
CREATE TABLE discord_guild_tools (
    guild_id    TEXT NOT NULL,
    tool_id     TEXT NOT NULL,
    enabled     INTEGER NOT NULL,
    updated_by  TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (guild_id, tool_id)
);
