-- A per-second training's quote is learnt from the latest successful
-- trainings of its definition (their measured backend time per step):
-- this index finds them without reading every training.
CREATE INDEX trainings_runs ON trainings (definition, status, finished_at);
