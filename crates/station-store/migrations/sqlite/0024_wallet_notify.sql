-- Deposit notices (issue 26): the private chat where each account last used
-- /wallet or /deposit; a deposit settled for the account from `since` on is
-- announced there once (the delivery's dedupe key is the deposit's key).
CREATE TABLE wallet_notify (
    account_id   TEXT PRIMARY KEY,
    platform     TEXT NOT NULL,
    conversation TEXT NOT NULL,
    conv_json    TEXT NOT NULL,
    since        BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX wallet_deposits_settled ON wallet_deposits (settled_at);
