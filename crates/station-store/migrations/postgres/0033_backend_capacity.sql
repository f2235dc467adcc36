-- A backend's capacity is shared by every process on this database: a
-- submission counts the jobs dispatched or running on the backend (the
-- predicate below, written the same in the query) before taking a slot.
CREATE INDEX jobs_active_backend ON jobs (backend) WHERE status IN ('dispatched','running');
