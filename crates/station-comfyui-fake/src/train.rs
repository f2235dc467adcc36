//! LoRA training support: the dataset folder reader, the save-path counter, the LoRA file and
//! the record of what each training run saw.
//!
//! Real training takes minutes per step; the fake "trains" in milliseconds, but reads the same
//! dataset layout (`input/<folder>/img.png` + `img.txt`), reports one `progress` per step and
//! writes a small valid safetensors file whose bytes depend on the images, captions and settings.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

/// What one `TrainLoraNode` run trained on, for tests (see [`crate::FakeComfy::trainings`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingRun {
    /// The prompt that ran the training.
    pub prompt_id: String,
    /// The `TrainLoraNode`'s node id.
    pub node_id: String,
    /// The `LoadImageTextDataSetFromFolder` folder feeding it (under `input/`), if any.
    pub folder: Option<String>,
    /// Image files of that folder in the order they were read, relative to it (`img0.png`).
    pub images: Vec<String>,
    /// The caption of each training image, as encoded for the trainer (`""` when an image had
    /// no `.txt`).
    pub captions: Vec<String>,
    /// The model trained on, as its loader named it (`CheckpointLoaderSimple`'s `ckpt_name`,
    /// `UNETLoader`'s `unet_name`).
    pub model: String,
    /// The text encoder(s) the captions were encoded with (`DualCLIPLoader`:
    /// `clip_l.safetensors+t5xxl_fp16.safetensors:flux`), one per distinct CLIP.
    pub clips: Vec<String>,
    /// Requested steps.
    pub steps: u64,
    /// Whether it was interrupted (`POST /interrupt`) before it ended.
    pub interrupted: bool,
    /// Steps done so far (less than `steps` when interrupted or still running).
    pub steps_done: u64,
    /// `learning_rate`.
    pub learning_rate: f64,
    /// `rank`.
    pub rank: u64,
    /// `batch_size`.
    pub batch_size: u64,
    /// `seed`.
    pub seed: u64,
    /// `optimizer`, `loss_function`, `algorithm`, `training_dtype`, `lora_dtype`, `existing_lora`
    /// and the other inputs as sent.
    pub settings: Map<String, Value>,
    /// Where `SaveLoRA` wrote the result, relative to the output folder
    /// (`loras/station_test_3_steps_00001_.safetensors`); `None` until saved.
    pub saved_file: Option<String>,
}

/// Image extensions `LoadImageTextDataSetFromFolder` reads.
const DATASET_EXTENSIONS: [&str; 4] = [".png", ".jpg", ".jpeg", ".webp"];

fn is_dataset_image(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    DATASET_EXTENSIONS.iter().any(|ext| lower.ends_with(ext))
}

/// One image of a dataset folder: its path relative to the folder, the file key and its caption.
pub(crate) struct DatasetItem {
    pub name: String,
    pub key: (String, String, String),
    pub caption: String,
}

/// What `LoadImageTextDataSetFromFolder` reads from `input/<folder>`: the images directly in it
/// and, kohya-style, those in its subfolders (`10_name/` repeats its images 10 times); each
/// image's caption is the trimmed text of the same-named `.txt`, or `""`. The real node lists
/// the folder in file-system order; the fake sorts names so runs are repeatable.
pub(crate) fn read_dataset(files: &HashMap<(String, String, String), Vec<u8>>, folder: &str) -> Vec<DatasetItem> {
    let folder = folder.trim_end_matches('/');
    // Entries directly in the folder: files, and immediate subfolders (named once).
    let mut entries: Vec<(String, bool)> = Vec::new();
    for (kind, sub, name) in files.keys() {
        if kind != "input" {
            continue;
        }
        if sub == folder {
            entries.push((name.clone(), false));
        } else if let Some(rest) = sub.strip_prefix(folder).and_then(|r| r.strip_prefix('/')) {
            let dir = rest.split('/').next().unwrap_or(rest).to_owned();
            if !entries.iter().any(|(n, is_dir)| *is_dir && *n == dir) {
                entries.push((dir, true));
            }
        }
    }
    entries.sort();
    let caption = |sub: &str, image: &str| {
        let stem = image.rsplit_once('.').map(|(s, _)| s).unwrap_or(image);
        files
            .get(&("input".to_owned(), sub.to_owned(), format!("{stem}.txt")))
            .map(|b| String::from_utf8_lossy(b).trim().to_owned())
            .unwrap_or_default()
    };
    let mut items = Vec::new();
    for (entry, is_dir) in entries {
        if !is_dir {
            if is_dataset_image(&entry) {
                items.push(DatasetItem {
                    caption: caption(folder, &entry),
                    key: ("input".into(), folder.to_owned(), entry.clone()),
                    name: entry,
                });
            }
            continue;
        }
        let sub = format!("{folder}/{entry}");
        let repeat = entry.split('_').next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(1);
        let mut images: Vec<&String> = files
            .keys()
            .filter(|(k, s, n)| k == "input" && *s == sub && is_dataset_image(n))
            .map(|(_, _, n)| n)
            .collect();
        images.sort();
        for _ in 0..repeat {
            for image in &images {
                items.push(DatasetItem {
                    name: format!("{entry}/{image}"),
                    key: ("input".into(), sub.clone(), (*image).clone()),
                    caption: caption(&sub, image),
                });
            }
        }
    }
    items
}

/// `folder_paths.get_input_subfolders`: every folder under `input/`, recursively, sorted. A stock
/// server has `3d` (made by the 3D loader nodes at start), as the recording shows.
pub(crate) fn input_subfolders(files: &HashMap<(String, String, String), Vec<u8>>) -> Vec<String> {
    let mut folders = vec!["3d".to_owned()];
    for (kind, sub, _) in files.keys() {
        if kind != "input" || sub.is_empty() {
            continue;
        }
        let mut path = String::new();
        for part in sub.split('/') {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(part);
            if !folders.contains(&path) {
                folders.push(path.clone());
            }
        }
    }
    folders.sort();
    folders
}

/// `folder_paths.get_save_image_path`: splits `prefix` into (subfolder, base name) and picks the
/// counter: one more than the largest number after `base_` among the folder's files, else 1.
/// Faithfully quirky: `x_3_steps_00001_.safetensors` counts as 3 for prefix `x`, so the next
/// `x` LoRA trained for 3 steps is `x_3_steps_00004_.safetensors`, as on a real server.
pub(crate) fn save_path(
    files: &HashMap<(String, String, String), Vec<u8>>,
    kind: &str,
    prefix: &str,
) -> (String, String, i64) {
    let (sub, base) = match prefix.rsplit_once('/') {
        Some((s, b)) => (s.to_owned(), b.to_owned()),
        None => (String::new(), prefix.to_owned()),
    };
    let highest = files
        .keys()
        .filter(|(k, s, _)| k == kind && *s == sub)
        .filter_map(|(_, _, f)| {
            let rest = f.strip_prefix(base.as_str())?.strip_prefix('_')?;
            Some(rest.split('_').next().and_then(|d| d.trim().parse::<i64>().ok()).unwrap_or(0))
        })
        .max();
    (sub, base, highest.map(|h| h + 1).unwrap_or(1))
}

/// FNV-1a over byte chunks: a stable fingerprint of what the trainer saw.
pub(crate) fn fingerprint<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for chunk in chunks {
        for b in chunk.iter().chain(&[0xff]) {
            hash = (hash ^ *b as u64).wrapping_mul(0x100000001b3);
        }
    }
    hash
}

/// A small but valid safetensors LoRA: two layers' `lora_down`/`lora_up` weights of `rank`,
/// values drawn from `fingerprint`. Layout: 8-byte little-endian header length, JSON header
/// (`dtype`, `shape`, `data_offsets` per tensor, padded with spaces to 8 bytes), tensor data.
pub(crate) fn lora_file(fingerprint: u64, rank: u64, bf16: bool) -> Vec<u8> {
    const WIDTH: u64 = 320;
    let layers = [
        "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q",
        "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_k",
    ];
    let rank = rank.clamp(1, 128);
    let elem = if bf16 { 2 } else { 4 };
    let mut rng = rand::rngs::StdRng::seed_from_u64(fingerprint);
    let mut header = Map::new();
    let mut data = Vec::new();
    for layer in layers {
        for (suffix, shape) in [("lora_down.weight", [rank, WIDTH]), ("lora_up.weight", [WIDTH, rank])] {
            let start = data.len();
            for _ in 0..shape[0] * shape[1] {
                let v: f32 = rng.random_range(-0.05..0.05);
                if bf16 {
                    data.extend_from_slice(&v.to_le_bytes()[2..]);
                } else {
                    data.extend_from_slice(&v.to_le_bytes());
                }
            }
            debug_assert_eq!(data.len() - start, (shape[0] * shape[1] * elem) as usize);
            header.insert(
                format!("{layer}.{suffix}"),
                json!({"dtype": if bf16 { "BF16" } else { "F32" }, "shape": shape, "data_offsets": [start, data.len()]}),
            );
        }
    }
    let mut header = Value::Object(header).to_string().into_bytes();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&header);
    file.extend_from_slice(&data);
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &str, &str)]) -> HashMap<(String, String, String), Vec<u8>> {
        entries.iter().map(|(k, s, n)| (((*k).into(), (*s).into(), (*n).into()), n.as_bytes().to_vec())).collect()
    }

    #[test]
    fn save_counter_is_comfyuis() {
        let f = files(&[("output", "loras", "x_3_steps_00001_.safetensors"), ("output", "", "x_00007_.png")]);
        assert_eq!(save_path(&f, "output", "loras/x"), ("loras".into(), "x".into(), 4));
        assert_eq!(save_path(&f, "output", "loras/y"), ("loras".into(), "y".into(), 1));
        assert_eq!(save_path(&f, "output", "x"), (String::new(), "x".into(), 8));
    }

    #[test]
    fn dataset_pairs_images_with_captions() {
        let mut f = files(&[
            ("input", "ds", "b.png"),
            ("input", "ds", "a.jpg"),
            ("input", "ds", "notes.md"),
            ("input", "ds/2_extra", "c.webp"),
            ("input", "other", "z.png"),
        ]);
        f.insert(("input".into(), "ds".into(), "a.txt".into()), b"  a caption \n".to_vec());
        let items = read_dataset(&f, "ds");
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["2_extra/c.webp", "2_extra/c.webp", "a.jpg", "b.png"]);
        assert_eq!(items[2].caption, "a caption");
        assert_eq!(items[3].caption, "");
        assert_eq!(input_subfolders(&f), ["3d", "ds", "ds/2_extra", "other"]);
    }

    #[test]
    fn lora_file_is_valid_safetensors() {
        let file = lora_file(42, 4, false);
        let len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        let header: Value = serde_json::from_slice(&file[8..8 + len]).unwrap();
        let data = file.len() - 8 - len;
        let mut end = 0;
        for (_, t) in header.as_object().unwrap() {
            let shape: Vec<u64> = serde_json::from_value(t["shape"].clone()).unwrap();
            let [a, b] = [t["data_offsets"][0].as_u64().unwrap(), t["data_offsets"][1].as_u64().unwrap()];
            assert_eq!(b - a, shape.iter().product::<u64>() * 4);
            end = end.max(b);
        }
        assert_eq!(end as usize, data);
        assert_ne!(lora_file(43, 4, false), file);
        assert_eq!(lora_file(42, 4, false), file);
    }
}
