-- Operators' usage statistics read jobs and ledger entries by time range
-- (`station stats`, /api/v1/admin/stats); without these a week's figures
-- scan every row ever written.
CREATE INDEX jobs_created ON jobs (created_at);
CREATE INDEX ledger_created ON ledger (created_at);
