-- Points. The ledger is append-only and is the truth; `balances` caches its
-- sums per account and is updated in the same transaction as each entry, so
-- the CHECKs below make an overdraft impossible rather than merely unlikely.
CREATE TABLE ledger (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idem_key    TEXT NOT NULL UNIQUE,
    account_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    -- Change to the balance (captures are negative).
    amount      BIGINT NOT NULL,
    -- Change to the points on hold (a hold is positive, its capture or release negative).
    held        BIGINT NOT NULL,
    job_id      TEXT,
    reason      TEXT,
    actor       TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX ledger_account ON ledger (account_id, seq);
CREATE INDEX ledger_job ON ledger (job_id);

CREATE TABLE balances (
    account_id  TEXT PRIMARY KEY,
    balance     BIGINT NOT NULL DEFAULT 0,
    held        BIGINT NOT NULL DEFAULT 0,
    updated_at  BIGINT NOT NULL,
    CHECK (held >= 0),
    CHECK (balance >= held)
);

-- One hold per job: points reserved at submit, settled once by a capture or a release.
CREATE TABLE holds (
    job_id      TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    amount      BIGINT NOT NULL CHECK (amount > 0),
    state       TEXT NOT NULL,
    charged     BIGINT,
    created_at  BIGINT NOT NULL,
    settled_at  BIGINT
);
CREATE INDEX holds_state ON holds (state, account_id);
