-- The model files each ComfyUI backend offers (its loaders' option lists and
-- GET /models/<folder>), replaced at every successful health check, so every
-- process and the API see which backend has which file. `online` is false
-- while the backend fails its health checks (its files are remembered, not
-- offered).
CREATE TABLE backend_models (
    backend  TEXT NOT NULL,
    kind     TEXT NOT NULL,
    name     TEXT NOT NULL,
    online   INTEGER NOT NULL DEFAULT 1,
    seen_at  BIGINT NOT NULL,
    PRIMARY KEY (backend, kind, name)
);
CREATE INDEX backend_models_by_name ON backend_models (kind, name);

-- What the operator says about a model (`station models set`): its base
-- model, a label, whether it is hidden, the default of its base model, and a
-- price multiplier. Keyed by file name, as the backends name it.
CREATE TABLE model_catalog (
    name              TEXT PRIMARY KEY,
    base_model        TEXT,
    label             TEXT,
    hidden            INTEGER NOT NULL DEFAULT 0,
    is_default        INTEGER NOT NULL DEFAULT 0,
    price_multiplier  REAL NOT NULL DEFAULT 1,
    updated_at        BIGINT NOT NULL
);
