-- ETAs read the last successful runs of a tool, newest first
-- (`Store::recent_run_ms`): without this index that is a scan of the tool's
-- whole history on every (uncached) read.
CREATE INDEX jobs_tool_finished ON jobs (tool_id, status, finished_at);
