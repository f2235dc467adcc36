-- Wallets and on-chain deposits (issue 26). Addresses are lower-case 0x hex;
-- amounts are decimal text in the asset's smallest unit (they exceed 64 bits).
-- One account per (chain, address): linking never moves an address silently.
CREATE TABLE wallet_links (
    chain_id   BIGINT NOT NULL,
    address    TEXT NOT NULL,
    account_id TEXT NOT NULL,
    method     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (chain_id, address)
);
CREATE INDEX wallet_links_account ON wallet_links (account_id);

-- Sign-in-with-Ethereum challenges: the exact message issued, used once.
CREATE TABLE wallet_challenges (
    nonce      TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    chain_id   BIGINT NOT NULL,
    address    TEXT NOT NULL,
    message    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

-- Magic-deposit quotes: a unique native amount that links `address` when a
-- deposit of exactly that amount arrives from that address before expiry.
CREATE TABLE wallet_quotes (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    chain_id   BIGINT NOT NULL,
    address    TEXT NOT NULL,
    amount     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE UNIQUE INDEX wallet_quotes_amount ON wallet_quotes (chain_id, amount);

-- Deposits seen on chain, one row per (chain, transaction, log index); a
-- native transfer has log index -1. States: pending (waiting for its
-- confirmations), credited, unclaimed (confirmed, sender not linked yet),
-- below_minimum, removed (its block left the chain before confirmation).
CREATE TABLE wallet_deposits (
    chain_id     BIGINT NOT NULL,
    tx_hash      TEXT NOT NULL,
    log_index    BIGINT NOT NULL,
    block_number BIGINT NOT NULL,
    block_hash   TEXT NOT NULL,
    block_time   BIGINT NOT NULL,
    from_address TEXT NOT NULL,
    asset        TEXT NOT NULL,
    amount       TEXT NOT NULL,
    points       BIGINT NOT NULL,
    state        TEXT NOT NULL,
    account_id   TEXT,
    seen_at      BIGINT NOT NULL,
    settled_at   BIGINT,
    PRIMARY KEY (chain_id, tx_hash, log_index)
);
CREATE INDEX wallet_deposits_state ON wallet_deposits (chain_id, state, block_number);
CREATE INDEX wallet_deposits_from ON wallet_deposits (chain_id, from_address);
CREATE INDEX wallet_deposits_account ON wallet_deposits (account_id, seen_at);

-- Each chain's watcher: the next block to read, the head last seen and the
-- last RPC error (shared by every process watching the chain).
CREATE TABLE wallet_cursors (
    chain_id   BIGINT PRIMARY KEY,
    next_block BIGINT NOT NULL,
    head       BIGINT NOT NULL,
    last_error TEXT,
    updated_at BIGINT NOT NULL
);

-- Hashes of recently read blocks, to notice a reorganisation.
CREATE TABLE wallet_blocks (
    chain_id    BIGINT NOT NULL,
    number      BIGINT NOT NULL,
    hash        TEXT NOT NULL,
    parent_hash TEXT NOT NULL,
    PRIMARY KEY (chain_id, number)
);
