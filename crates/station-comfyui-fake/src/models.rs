//! The model inventory: ComfyUI's `folder_paths` model folders and the files in them.
//!
//! The real server answers `GET /models` with the names of its model folders (in registration
//! order), `GET /models/{folder}` with the sorted file names of one folder (404 for a name it does
//! not register) and fills the loaders' option lists from the same lists. `main.py` also registers
//! `<output>/checkpoints`, `clip`, `vae`, `diffusion_models` and `loras` as model folders, so a
//! file a node saves there (a LoRA written by `SaveLoRA`) is listed at once — by that server only.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// `GET /models` of a stock ComfyUI 0.8.0, in its order (recorded in `models_queue_text.json`).
const RECORDED_FOLDERS: [&str; 21] = [
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "latent_upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
];

/// Model folders `main.py` also registers under the output directory.
const OUTPUT_FOLDERS: [&str; 5] = ["checkpoints", "text_encoders", "vae", "diffusion_models", "loras"];

/// `folder_paths.supported_pt_extensions`: what the real server lists from a model folder.
const MODEL_EXTENSIONS: [&str; 8] = [".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"];

/// `folder_paths.map_legacy`: old folder names still accepted by loaders (not by `/models/{folder}`).
pub(crate) fn canonical(folder: &str) -> &str {
    match folder {
        "clip" => "text_encoders",
        "unet" => "diffusion_models",
        other => other,
    }
}

/// Configured files per model folder, folders in the real server's order.
#[derive(Debug, Clone)]
pub(crate) struct ModelFolders {
    folders: Vec<(String, BTreeSet<String>)>,
}

impl ModelFolders {
    /// The recorded folders, filled from the start options; unknown folder names are appended
    /// (like folders added by `extra_model_paths.yaml`).
    pub fn new(
        checkpoints: &[String],
        loras: &[String],
        upscale_models: &[String],
        more: &BTreeMap<String, Vec<String>>,
    ) -> Self {
        let mut models =
            ModelFolders { folders: RECORDED_FOLDERS.iter().map(|f| ((*f).to_owned(), BTreeSet::new())).collect() };
        for (folder, files) in [("checkpoints", checkpoints), ("loras", loras), ("upscale_models", upscale_models)] {
            models.folder_mut(folder).extend(files.iter().cloned());
        }
        for (folder, files) in more {
            models.folder_mut(folder).extend(files.iter().cloned());
        }
        models
    }

    fn folder_mut(&mut self, folder: &str) -> &mut BTreeSet<String> {
        let folder = canonical(folder);
        let at = match self.folders.iter().position(|(name, _)| name == folder) {
            Some(at) => at,
            None => {
                self.folders.push((folder.to_owned(), BTreeSet::new()));
                self.folders.len() - 1
            }
        };
        &mut self.folders[at].1
    }

    /// Folder names as `GET /models` lists them.
    pub fn names(&self) -> Vec<String> {
        self.folders.iter().map(|(name, _)| name.clone()).collect()
    }

    pub fn set(&mut self, folder: &str, files: impl IntoIterator<Item = String>) {
        let set = self.folder_mut(folder);
        set.clear();
        set.extend(files);
    }

    pub fn add(&mut self, folder: &str, file: &str) {
        self.folder_mut(folder).insert(file.to_owned());
    }

    pub fn remove(&mut self, folder: &str, file: &str) {
        self.folder_mut(folder).remove(file);
    }

    /// Files of `folder` (exact name, no legacy alias) as the real server lists them: the configured
    /// ones plus model files saved under `output/<folder>` for the folders `main.py` registers
    /// there, sorted. `None` when the server has no such folder.
    pub fn list(&self, folder: &str, files: &HashMap<(String, String, String), Vec<u8>>) -> Option<Vec<String>> {
        let (_, configured) = self.folders.iter().find(|(name, _)| name == folder)?;
        let mut out = configured.clone();
        if OUTPUT_FOLDERS.contains(&folder) {
            // The real output folder for `text_encoders` is `output/clip` (registered under its old name).
            let on_disk = if folder == "text_encoders" { "clip" } else { folder };
            out.extend(output_models(files, on_disk));
        }
        Some(out.into_iter().collect())
    }
}

/// Model files under `output/<folder>` (and its subfolders), named relative to that folder.
fn output_models<'a>(
    files: &'a HashMap<(String, String, String), Vec<u8>>,
    folder: &'a str,
) -> impl Iterator<Item = String> + 'a {
    files.keys().filter_map(move |(kind, sub, name)| {
        if kind != "output" || !is_model_file(name) {
            return None;
        }
        if sub == folder {
            return Some(name.clone());
        }
        let rest = sub.strip_prefix(folder)?.strip_prefix('/')?;
        Some(format!("{rest}/{name}"))
    })
}

fn is_model_file(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    MODEL_EXTENSIONS.iter().any(|ext| lower.ends_with(ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_sorted_with_saved_loras_and_aliases() {
        let mut more = BTreeMap::new();
        more.insert("clip".to_owned(), vec!["t5.safetensors".to_owned()]);
        let mut m = ModelFolders::new(&["b.safetensors".into(), "a.ckpt".into()], &[], &[], &more);
        let mut files = HashMap::new();
        files.insert(("output".into(), "loras".into(), "x_3_steps_00001_.safetensors".into()), vec![]);
        files.insert(("output".into(), "loras/sub".into(), "y.safetensors".into()), vec![]);
        files.insert(("output".into(), "loras".into(), "preview.png".into()), vec![]);
        assert_eq!(m.list("checkpoints", &files).unwrap(), ["a.ckpt", "b.safetensors"]);
        assert_eq!(m.list("loras", &files).unwrap(), ["sub/y.safetensors", "x_3_steps_00001_.safetensors"]);
        assert_eq!(m.list("text_encoders", &files).unwrap(), ["t5.safetensors"]);
        assert!(m.list("clip", &files).is_none());
        m.add("unet", "flux.safetensors");
        assert_eq!(m.list("diffusion_models", &files).unwrap(), ["flux.safetensors"]);
        assert_eq!(m.names().len(), 21);
        m.set("my_folder", ["z.bin".to_owned()]);
        assert_eq!(m.names().last().map(String::as_str), Some("my_folder"));
    }
}
