-- Paying for jobs: free daily allowances, group sponsors and quote thresholds.

-- Where a hold's points come from. `amount` stays the job's whole price;
-- `allowance` of it is drawn from the payer's free daily allowance (never
-- from a balance), so `amount - allowance` is what `balances.held` carries.
-- A sponsored hold is on the sponsor's account (`account_id`) for the member
-- in `beneficiary`. `day` (UTC days since 1970-01-01) is the day whose
-- allowance or sponsorship cap the hold counts against.
ALTER TABLE holds ADD COLUMN allowance BIGINT NOT NULL DEFAULT 0 CHECK (allowance >= 0);
ALTER TABLE holds ADD COLUMN beneficiary TEXT;
ALTER TABLE holds ADD COLUMN sponsor_scope TEXT;
ALTER TABLE holds ADD COLUMN day BIGINT;

-- Ledger entries record their change to the free allowance in use (a hold
-- draws, a release or partial capture returns) and, for sponsored jobs, the
-- member the sponsor paid for.
ALTER TABLE ledger ADD COLUMN allowance BIGINT NOT NULL DEFAULT 0;
ALTER TABLE ledger ADD COLUMN beneficiary TEXT;

-- Points counted against a daily limit, per account and UTC day: pool `free`
-- is the free allowance in use (held or spent), pool `sponsor:<scope>` a
-- member's sponsored spending in that group. Rows of past days are history.
CREATE TABLE daily_usage (
    pool        TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    day         BIGINT NOT NULL,
    used        BIGINT NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (pool, account_id, day)
);

-- A group (`telegram:-100123`, `discord-guild:987`) whose sponsor pays for
-- its members' jobs, up to a per-member daily cap.
CREATE TABLE sponsors (
    scope                 TEXT PRIMARY KEY,
    account_id            TEXT NOT NULL,
    per_member_daily_cap  BIGINT NOT NULL CHECK (per_member_daily_cap > 0),
    created_by            TEXT NOT NULL,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);

-- Per-account pricing preferences. No row: the operator's default threshold;
-- a NULL threshold: never ask before queueing.
CREATE TABLE account_pricing (
    account_id       TEXT PRIMARY KEY,
    quote_threshold  BIGINT CHECK (quote_threshold >= 0),
    updated_at       BIGINT NOT NULL
);
