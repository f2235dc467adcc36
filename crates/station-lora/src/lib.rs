//! LoRA catalog records and trigger-word resolution of prompts.
//!
//! - [`LoraRecord`] is one catalog entry; [`LoraRecord::access`] says who may use it and
//!   [`is_compatible`] which tools it fits.
//! - [`parse_import`] validates the JSON import file into [`ImportRecord`]s.
//! - [`resolve`] rewrites a prompt's trigger words into `<lora:SLUG:WEIGHT>` tags.
//! - [`inject_loras`] adds the matching `LoraLoader` nodes to an API-format ComfyUI graph.
//!
//! Pure logic: no I/O, no async, no clock (callers pass `now_ms`).
//!
//! ```
//! use station_lora::{LoraRecord, Visibility, inject_loras, resolve};
//!
//! let milady = LoraRecord {
//!     id: "1".into(),
//!     slug: "milady-v1".into(),
//!     name: "Milady".into(),
//!     description: String::new(),
//!     trigger_words: vec!["milady".into()],
//!     cognates: vec![],
//!     default_weight: Some(0.8),
//!     checkpoint: "SD1.5".into(),
//!     filename: "milady_v1.safetensors".into(),
//!     tags: vec![],
//!     owner: None,
//!     visibility: Visibility::Public,
//!     updated_at: 0,
//!     grants: vec![],
//!     rating: None,
//!     preview_images: vec![],
//!     created_at: 0,
//! };
//! let catalog = [milady];
//! let r = resolve("a portrait in Milady! style", &catalog, None, Some("SDXL"), 0);
//! assert_eq!(r.prompt, "a portrait in <lora:milady-v1:1>milady style");
//!
//! let mut graph = serde_json::json!({
//!     "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
//!     "6": {"class_type": "CLIPTextEncode", "inputs": {"text": r.prompt, "clip": ["4", 1]}},
//! });
//! inject_loras(&mut graph, "4", &r.loader_inputs(&catalog)).unwrap();
//! assert_eq!(graph["6"]["inputs"]["clip"], serde_json::json!(["7", 1]));
//! assert_eq!(graph["7"]["inputs"]["lora_name"], "milady_v1.safetensors");
//! ```

mod import;
mod inject;
mod record;
mod resolve;

pub use import::{
    ImportCognate, ImportError, ImportGrant, ImportRecord, MAX_SLUG_LEN, SlugError, parse_import, validate_slug,
};
pub use inject::{InjectError, inject_loras};
pub use record::{Access, Grant, LoraRecord, Visibility, is_compatible};
pub use resolve::{Applied, Resolution, resolve};
