//! Station's tool registry: what a tool is, loading and validating tool files, the live
//! registry with hot reload, parameter resolution, and binding parameters into ComfyUI
//! workflows. Every platform reads tools from here, so this crate is the single source of
//! truth for them. The file format is documented in `TOOLS.md`.

#![warn(missing_docs)]

mod bind;
mod def;
mod load;
mod params;
mod registry;
mod validate;

pub use bind::{BindError, bind_workflow};
pub use def::{
    BindingTarget, Category, ComfyUiSpec, Cost, DeploymentSpec, InputDef, InputType, LoraSpec, MediaOperation,
    MediaSpec, Names, Rule, SavedFileSpec, Service, ToolDef, Visibility,
};
pub use load::{
    BUILTIN_PREFIX, DEFAULT_MAX_FILE_BYTES, LoadOptions, ToolLoadError, builtin_tools, check_dir, check_dir_with,
    parse_tool,
};
pub use params::{
    FieldError, ParamErrors, ResolvedParams, check_input, coerce_text, coerce_value, is_media_ref, resolve_params,
    resolve_params_with_defaults,
};
pub use registry::{ToolRegistry, ToolWatcher, WatchError};
pub use validate::{MODEL_KINDS, is_valid_command, is_valid_id, is_valid_input_name};

#[cfg(test)]
mod tests;
