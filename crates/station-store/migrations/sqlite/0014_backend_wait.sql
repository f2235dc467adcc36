-- Waiting on a backend vs running there: a dispatched job's prompt sits in
-- the backend's own queue until the backend starts it. `backend_ahead` is
-- how many prompts were ahead of it there at the executor's last look
-- (GET /queue), NULL once it runs or when unknown. Written fenced by the
-- lease, like every write a worker makes for its job.
ALTER TABLE jobs ADD COLUMN backend_ahead BIGINT;
