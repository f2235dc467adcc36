-- The base model a backend's ComfyUI reports for a model file in the file's
-- own metadata (GET /view_metadata/<folder>: the safetensors header's
-- `modelspec.architecture`, `ss_base_model_version`, `ss_sd_model_name`),
-- asked once per file (only when its name gives no hint) and kept with the
-- inventory until the file leaves that backend. NULL: not reported.
ALTER TABLE backend_models ADD COLUMN metadata_base_model TEXT;
