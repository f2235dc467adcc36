//! LoRA catalog records and trigger-word resolution of prompts.
//!
//! - [`LoraRecord`] is one catalog entry; [`LoraRecord::access`] says who may use it and
//!   [`is_compatible`] which tools it fits.
//! - [`parse_import`] validates the JSON import file into [`ImportRecord`]s.
//! - [`resolve`] rewrites a prompt's trigger words into `<lora:SLUG:WEIGHT>` tags.
//! - [`inject_loras`] adds the matching `LoraLoader` nodes to an API-format ComfyUI graph.
//!
//! Pure logic: no I/O, no async, no clock (callers pass `now_ms`).

mod import;
mod inject;
mod record;
mod resolve;

pub use import::{
    ImportCognate, ImportError, ImportGrant, ImportRecord, MAX_SLUG_LEN, SlugError, parse_import,
    validate_slug,
};
pub use inject::{InjectError, inject_loras};
pub use record::{Access, Grant, LoraRecord, Visibility, is_compatible};
pub use resolve::{Applied, Resolution, resolve};
