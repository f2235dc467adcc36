-- Feature flags: named switches the operator flips at run time. A flag's
-- rule (on, off, or on for some: a percentage of accounts, listed accounts,
-- groups or platforms, administrators) is JSON read by the core; a name
-- with no row means the feature is on.
CREATE TABLE feature_flags (
    name        TEXT PRIMARY KEY,
    rule        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    updated_at  BIGINT NOT NULL,
    updated_by  TEXT NOT NULL
);
