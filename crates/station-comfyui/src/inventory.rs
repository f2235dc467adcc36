//! A backend's model inventory: which model files it offers, by kind.
//!
//! Read from the loaders' option lists in `/object_info` (what a prompt may
//! name) and, where the server has the route, `GET /models/<folder>` (the
//! model folders as `folder_paths` lists them). Both come from the same
//! folder listing on a real server; the union is kept so a server whose
//! `/models` route is missing or whose custom loader is absent still lists
//! what it can run.

use std::collections::{BTreeSet, HashMap};

use crate::client::ComfyClient;
use crate::error::ComfyError;
use crate::protocol::ObjectInfo;

/// Loader node inputs whose options are model files: (class type, input, kind).
pub const LOADERS: [(&str, &str, &str); 6] = [
    ("CheckpointLoaderSimple", "ckpt_name", "checkpoint"),
    ("LoraLoader", "lora_name", "lora"),
    ("LoraLoaderModelOnly", "lora_name", "lora"),
    ("UpscaleModelLoader", "model_name", "upscale_model"),
    ("UNETLoader", "unet_name", "diffusion_model"),
    ("VAELoader", "vae_name", "vae"),
];

/// Model folders of `GET /models` and the kind of their files.
pub const FOLDERS: [(&str, &str); 5] = [
    ("checkpoints", "checkpoint"),
    ("loras", "lora"),
    ("upscale_models", "upscale_model"),
    ("diffusion_models", "diffusion_model"),
    ("vae", "vae"),
];

/// The model files of one backend as sorted `(kind, file name)` pairs.
pub type Inventory = BTreeSet<(String, String)>;

/// Whether `name` is a model file rather than a built-in option (VAELoader
/// offers `pixel_space` and the TAESD decoders by bare name).
fn is_file(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(stem, ext)| !stem.is_empty() && !ext.is_empty() && !ext.contains('/'))
}

/// The model files the loaders of `info` offer.
pub fn from_object_info(info: &ObjectInfo) -> Inventory {
    let mut out = Inventory::new();
    for (class, input, kind) in LOADERS {
        for name in info.choices(class, input).unwrap_or_default() {
            if is_file(&name) {
                out.insert((kind.to_owned(), name));
            }
        }
    }
    out
}

/// Adds the files of `GET /models/<folder>` for the folders Station knows,
/// when the server has that route.
pub async fn add_folders(client: &ComfyClient, out: &mut Inventory) -> Result<(), ComfyError> {
    let Some(folders) = client.model_folders().await? else { return Ok(()) };
    for (folder, kind) in FOLDERS {
        if !folders.iter().any(|f| f == folder) {
            continue;
        }
        for name in client.model_files(folder).await?.unwrap_or_default() {
            if is_file(&name) {
                out.insert((kind.to_owned(), name));
            }
        }
    }
    Ok(())
}

/// Everything a backend offers: its loaders' options plus its model folders.
pub async fn fetch(client: &ComfyClient, info: &ObjectInfo) -> Result<Inventory, ComfyError> {
    let mut out = from_object_info(info);
    add_folders(client, &mut out).await?;
    Ok(out)
}

/// Metadata lookups (`GET /view_metadata`) one health check makes at most
/// per backend; files past it are asked at the next checks.
pub const METADATA_LOOKUPS_PER_CHECK: usize = 16;

/// What a backend's files' metadata said, by `(kind, name)`: the base model
/// it names, or `None` when it names none (or the server has no metadata for
/// the file). A file in here is not asked again while the backend lists it.
pub type MetadataAnswers = HashMap<(String, String), Option<String>>;

/// The model folder of `GET /models/<folder>` and `/view_metadata/<folder>` for a kind.
pub fn folder_of(kind: &str) -> Option<&'static str> {
    FOLDERS.iter().find(|(_, k)| *k == kind).map(|(folder, _)| *folder)
}

/// The files of `inventory` whose base model is worth asking the backend's
/// metadata for (see [`station_core::models::wants_metadata`]) and that
/// `answered` has no answer for yet, at most [`METADATA_LOOKUPS_PER_CHECK`].
pub fn metadata_to_ask(inventory: &Inventory, answered: &MetadataAnswers) -> Vec<(String, String)> {
    inventory
        .iter()
        .filter(|(kind, name)| {
            folder_of(kind).is_some()
                && station_core::models::wants_metadata(kind, name)
                && !answered.contains_key(&(kind.clone(), name.clone()))
        })
        .take(METADATA_LOOKUPS_PER_CHECK)
        .cloned()
        .collect()
}

/// Asks the backend for the metadata of `files` (`GET /view_metadata`), one
/// at a time, and returns the base model each names (`None`: none). Stops at
/// the first failure (a timeout, a 500): the files not answered are asked
/// at a later check.
pub async fn ask_metadata(
    client: &ComfyClient,
    files: &[(String, String)],
) -> (Vec<((String, String), Option<String>)>, Option<ComfyError>) {
    let mut out = vec![];
    for (kind, name) in files {
        let Some(folder) = folder_of(kind) else { continue };
        match client.model_metadata(folder, name).await {
            Ok(meta) => {
                let base = meta.as_ref().and_then(station_core::models::base_model_from_metadata);
                out.push(((kind.clone(), name.clone()), base.map(str::to_owned)));
            }
            // An answer that is not a JSON object says nothing about the file.
            Err(ComfyError::Protocol { .. }) => out.push(((kind.clone(), name.clone()), None)),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// The inventory as stored: each file with the base model its metadata named.
pub fn with_metadata(inventory: &Inventory, answered: &MetadataAnswers) -> Vec<station_core::models::BackendFile> {
    inventory
        .iter()
        .map(|(kind, name)| {
            let base = answered.get(&(kind.clone(), name.clone())).cloned().flatten();
            (kind.clone(), name.clone(), base)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::is_file;

    #[test]
    fn built_in_options_are_not_files() {
        assert!(is_file("sd_xl_base_1.0.safetensors"));
        assert!(is_file("sub/dir/x.pth"));
        assert!(!is_file("pixel_space"));
        assert!(!is_file("taesd"));
        assert!(!is_file(".hidden"));
    }
}
