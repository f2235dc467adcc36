//! Adding `LoraLoader` nodes to an API-format ComfyUI graph.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

/// Why LoRA loaders could not be added to a graph. The graph is left unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InjectError {
    /// The graph is not a JSON object of nodes.
    #[error("workflow graph must be a JSON object of nodes")]
    NotAnObject,
    /// The named loader node is absent.
    #[error("workflow has no node {node:?} to load LoRAs after")]
    MissingNode {
        /// The requested node id.
        node: String,
    },
    /// The named loader node is not an object with a `class_type`.
    #[error("workflow node {node:?} is not a node object with a class_type")]
    NotANode {
        /// The requested node id.
        node: String,
    },
    /// One LoRA entry is unusable.
    #[error("LoRA {index} ({filename:?}): {reason}")]
    InvalidLora {
        /// 0-based position in the `applied` list.
        index: usize,
        /// Its file name as given.
        filename: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Inserts one `LoraLoader` per `(filename, weight)` after the checkpoint loader node
/// `loader_after_node` of an API-format ComfyUI `graph`, and rewires its consumers.
///
/// The loader must output MODEL at index 0 and CLIP at index 1 (as `CheckpointLoaderSimple`
/// does). The LoRA loaders are chained in the given order, the first one reading the
/// checkpoint loader; each gets `lora_name = filename` and the weight as both
/// `strength_model` and `strength_clip`. Every other input that read `[loader, 0]` or
/// `[loader, 1]` then reads the same output of the last LoRA loader; other outputs (e.g. the
/// VAE at index 2) stay wired to the checkpoint loader. New node ids continue the graph's
/// numbering (largest numeric id + 1, …), skipping ids in use. An empty list changes nothing.
///
/// Everything is checked before the graph is touched, so on error it is unchanged.
pub fn inject_loras<S: AsRef<str>>(
    graph: &mut Value,
    loader_after_node: &str,
    applied: &[(S, f64)],
) -> Result<(), InjectError> {
    let nodes = graph.as_object_mut().ok_or(InjectError::NotAnObject)?;
    let loader =
        nodes.get(loader_after_node).ok_or_else(|| InjectError::MissingNode { node: loader_after_node.to_owned() })?;
    if !loader.get("class_type").is_some_and(Value::is_string) {
        return Err(InjectError::NotANode { node: loader_after_node.to_owned() });
    }
    for (index, (filename, weight)) in applied.iter().enumerate() {
        let filename = filename.as_ref();
        let invalid =
            |reason: &str| InjectError::InvalidLora { index, filename: filename.to_owned(), reason: reason.to_owned() };
        if filename.trim().is_empty() {
            return Err(invalid("file name is empty"));
        }
        if !weight.is_finite() {
            return Err(invalid("weight is not a finite number"));
        }
    }
    if applied.is_empty() {
        return Ok(());
    }

    let new_ids = fresh_ids(nodes, applied.len());
    let mut prev = loader_after_node.to_owned();
    for ((filename, weight), id) in applied.iter().zip(&new_ids) {
        nodes.insert(
            id.clone(),
            json!({
                "class_type": "LoraLoader",
                "inputs": {
                    "model": [prev, 0],
                    "clip": [prev, 1],
                    "lora_name": filename.as_ref(),
                    "strength_model": weight,
                    "strength_clip": weight,
                }
            }),
        );
        prev = id.clone();
    }
    let last = prev;
    let ours: HashSet<&String> = new_ids.iter().collect();
    for (id, node) in nodes.iter_mut() {
        if ours.contains(id) {
            continue;
        }
        let Some(inputs) = node.get_mut("inputs").and_then(Value::as_object_mut) else {
            continue;
        };
        for input in inputs.values_mut() {
            if let Some(output) = link_output(input, loader_after_node).filter(|o| *o <= 1) {
                *input = json!([last, output]);
            }
        }
    }
    Ok(())
}

/// The output index when `input` is a link `[node, index]` to `node`.
fn link_output(input: &Value, node: &str) -> Option<u64> {
    match input.as_array()?.as_slice() {
        [Value::String(from), Value::Number(out)] if from == node => out.as_u64(),
        _ => None,
    }
}

/// `count` node ids not used in `nodes`, continuing the numeric ids.
fn fresh_ids(nodes: &Map<String, Value>, count: usize) -> Vec<String> {
    let mut next = nodes.keys().filter_map(|k| k.parse::<u64>().ok()).max().map_or(1, |m| m + 1);
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        let id = next.to_string();
        if !nodes.contains_key(&id) {
            ids.push(id);
        }
        next += 1;
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The graph POSTed in /work/shared/comfyui/transcripts/txt2img_sd15.json.
    fn txt2img() -> Value {
        serde_json::from_str(
            r#"{"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "station-random-sd15.safetensors"}}, "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["4", 1]}}, "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}}, "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}, "3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 3, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}, "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}}, "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "txt2img"}}}"#,
        )
        .unwrap()
    }

    #[test]
    fn chains_two_loras_and_rewires_consumers() {
        let mut g = txt2img();
        inject_loras(&mut g, "4", &[("milady_v1.safetensors", 0.8), ("pixel.safetensors", 1.15)]).unwrap();
        assert_eq!(
            g["10"],
            json!({"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1],
                "lora_name": "milady_v1.safetensors", "strength_model": 0.8, "strength_clip": 0.8}})
        );
        assert_eq!(
            g["11"],
            json!({"class_type": "LoraLoader", "inputs": {"model": ["10", 0], "clip": ["10", 1],
                "lora_name": "pixel.safetensors", "strength_model": 1.15, "strength_clip": 1.15}})
        );
        assert_eq!(g["6"]["inputs"]["clip"], json!(["11", 1]));
        assert_eq!(g["7"]["inputs"]["clip"], json!(["11", 1]));
        assert_eq!(g["3"]["inputs"]["model"], json!(["11", 0]));
        // The VAE output is not touched by LoRAs.
        assert_eq!(g["8"]["inputs"]["vae"], json!(["4", 2]));
        assert_eq!(g["3"]["inputs"]["positive"], json!(["6", 0]));
        assert_eq!(g.as_object().unwrap().len(), 9);
        // No consumer still reads MODEL/CLIP from the checkpoint except the first LoRA.
        for (id, node) in g.as_object().unwrap() {
            for v in node["inputs"].as_object().unwrap().values() {
                if let Some(o) = link_output(v, "4") {
                    assert!(o == 2 || id == "10", "node {id} still reads [4, {o}]");
                }
            }
        }
    }

    #[test]
    fn one_lora_with_string_ids() {
        let mut g = json!({
            "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {}},
            "enc": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "x"}},
        });
        inject_loras(&mut g, "ckpt", &[(String::from("a.safetensors"), 1.0)]).unwrap();
        assert_eq!(g["1"]["inputs"]["model"], json!(["ckpt", 0]));
        assert_eq!(g["enc"]["inputs"]["clip"], json!(["1", 1]));
    }

    #[test]
    fn fresh_ids_skip_used_ones() {
        let g = json!({"3": {}, "4": {}, "x": {}});
        let ids = fresh_ids(g.as_object().unwrap(), 2);
        assert_eq!(ids, vec!["5", "6"]);
        let g = json!({"a": {}, "1": {}, "2": {}});
        assert_eq!(fresh_ids(g.as_object().unwrap(), 1), vec!["3"]);
        let g = json!({"a": {}});
        assert_eq!(fresh_ids(g.as_object().unwrap(), 1), vec!["1"]);
    }

    #[test]
    fn empty_list_changes_nothing() {
        let mut g = txt2img();
        inject_loras::<&str>(&mut g, "4", &[]).unwrap();
        assert_eq!(g, txt2img());
    }

    #[test]
    fn errors_leave_graph_unchanged() {
        let mut g = txt2img();
        assert_eq!(inject_loras(&mut g, "99", &[("a", 1.0)]), Err(InjectError::MissingNode { node: "99".into() }));
        assert_eq!(
            inject_loras(&mut g, "4", &[("a", 1.0), (" ", 1.0)]),
            Err(InjectError::InvalidLora { index: 1, filename: " ".into(), reason: "file name is empty".into() })
        );
        assert!(matches!(
            inject_loras(&mut g, "4", &[("a", f64::NAN)]),
            Err(InjectError::InvalidLora { index: 0, .. })
        ));
        assert_eq!(g, txt2img());
        let mut not_graph = json!([1, 2]);
        assert_eq!(inject_loras(&mut not_graph, "4", &[("a", 1.0)]), Err(InjectError::NotAnObject));
        let mut bad_node = json!({"4": 7});
        assert_eq!(inject_loras(&mut bad_node, "4", &[("a", 1.0)]), Err(InjectError::NotANode { node: "4".into() }));
    }
}
