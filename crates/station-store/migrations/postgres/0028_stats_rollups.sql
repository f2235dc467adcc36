-- Daily rollups of the usage statistics (issue 27 item 3): one set of rows
-- per closed UTC day, computed from jobs and the ledger in one transaction
-- (delete the day's rows, insert its aggregates, mark it in stats_days), so
-- a 30-day report reads ~30 × the distinct keys instead of every job.
-- `day` is days since 1970-01-01 (UTC), as created_at / 86400000.
-- Days not in stats_days (today, days still holding unfinished jobs) are
-- read from the raw rows. Invariant: a report from these equals the one
-- from raw rows (crates/station-core/tests/stats_rollups.rs).
CREATE TABLE stats_days (
    day        BIGINT PRIMARY KEY,
    rolled_at  BIGINT NOT NULL
);
-- Jobs created that day by tool, platform, model and status.
CREATE TABLE stats_jobs_daily (
    day        BIGINT NOT NULL,
    tool_id    TEXT NOT NULL,
    platform   TEXT NOT NULL,
    model      TEXT,
    status     TEXT NOT NULL,
    jobs       BIGINT NOT NULL,
    started    BIGINT NOT NULL,
    wait_ms    BIGINT NOT NULL,
    ran        BIGINT NOT NULL,
    run_ms     BIGINT NOT NULL
);
CREATE INDEX stats_jobs_daily_day ON stats_jobs_daily (day);
-- Ledger entries written that day by kind (holds and releases left out).
CREATE TABLE stats_points_daily (
    day        BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    amount     BIGINT NOT NULL,
    entries    BIGINT NOT NULL,
    PRIMARY KEY (day, kind)
);
-- Per account: jobs created and points captured that day (for the busiest accounts).
CREATE TABLE stats_accounts_daily (
    day           BIGINT NOT NULL,
    account_id    TEXT NOT NULL,
    jobs          BIGINT NOT NULL,
    points_spent  BIGINT NOT NULL,
    PRIMARY KEY (day, account_id)
);
-- Failed jobs created that day by error code, with the greatest message.
CREATE TABLE stats_failures_daily (
    day        BIGINT NOT NULL,
    code       TEXT NOT NULL,
    jobs       BIGINT NOT NULL,
    example    TEXT,
    PRIMARY KEY (day, code)
);
