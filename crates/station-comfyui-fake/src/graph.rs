//! The order nodes run in, as ComfyUI's `ExecutionList` picks it (`comfy_execution/graph.py`).
//!
//! It is not a plain depth-first order: the real server collects the needed nodes with a stack
//! (inputs pushed in the prompt's order, popped last first), then repeatedly runs a ready node,
//! preferring an output node, then a node feeding an output, then one two links from an output,
//! else the first ready one. Clients see this order in `executing` messages (e.g. the recorded
//! LoRA training runs the text encoder before the VAE encoder), so the fake reproduces it.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::validate::as_link;

struct TopologicalSort<'a> {
    graph: &'a Map<String, Value>,
    cached: &'a HashSet<String>,
    /// `pendingNodes`: insertion-ordered.
    pending: Vec<String>,
    block_count: HashMap<String, usize>,
    /// `blocking[a]`: nodes waiting for `a`.
    blocking: HashMap<String, Vec<String>>,
}

impl TopologicalSort<'_> {
    fn links(&self, id: &str) -> Vec<String> {
        self.graph
            .get(id)
            .and_then(|n| n.get("inputs"))
            .and_then(Value::as_object)
            .map(|inputs| inputs.values().filter_map(as_link).map(|(src, _)| src.to_owned()).collect())
            .unwrap_or_default()
    }

    /// `TopologicalSort.add_node`.
    fn add_node(&mut self, start: &str) {
        let mut stack = vec![start.to_owned()];
        let mut links = Vec::new();
        while let Some(id) = stack.pop() {
            if self.pending.contains(&id) {
                continue;
            }
            self.pending.push(id.clone());
            self.block_count.insert(id.clone(), 0);
            self.blocking.insert(id.clone(), Vec::new());
            for src in self.links(&id) {
                // A link to a node missing from the graph was rejected by validation.
                if !self.graph.contains_key(&src) {
                    continue;
                }
                if !self.cached.contains(&src) {
                    stack.push(src.clone());
                }
                links.push((src, id.clone()));
            }
        }
        for (from, to) in links {
            self.add_strong_link(&from, &to);
        }
    }

    fn add_strong_link(&mut self, from: &str, to: &str) {
        if self.cached.contains(from) {
            return;
        }
        self.add_node(from);
        let blocked = self.blocking.entry(from.to_owned()).or_default();
        if !blocked.iter().any(|b| b == to) {
            blocked.push(to.to_owned());
            *self.block_count.entry(to.to_owned()).or_default() += 1;
        }
    }
}

/// Nodes to run for `outputs`, in the real server's order; `cached` nodes are skipped (and
/// their inputs not followed). `is_output` tells output nodes (`OUTPUT_NODE = True`).
pub(crate) fn execution_order(
    graph: &Map<String, Value>,
    outputs: &[String],
    cached: &HashSet<String>,
    is_output: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut sort =
        TopologicalSort { graph, cached, pending: Vec::new(), block_count: HashMap::new(), blocking: HashMap::new() };
    for out in outputs {
        sort.add_node(out);
    }
    let mut order = Vec::new();
    while !sort.pending.is_empty() {
        let ready: Vec<&String> = sort.pending.iter().filter(|id| sort.block_count[*id] == 0).collect();
        let blocks = |id: &str| sort.blocking.get(id).map(Vec::as_slice).unwrap_or_default();
        let pick = ready
            .iter()
            .find(|id| is_output(id))
            .or_else(|| ready.iter().find(|id| blocks(id).iter().any(|b| is_output(b))))
            .or_else(|| ready.iter().find(|id| blocks(id).iter().any(|b| blocks(b).iter().any(|b1| is_output(b1)))))
            .or_else(|| ready.first())
            .map(|id| (*id).clone());
        // No ready node left means a cycle; validation keeps those out, so just stop.
        let Some(pick) = pick else { break };
        sort.pending.retain(|id| *id != pick);
        for blocked in sort.blocking.get(&pick).cloned().unwrap_or_default() {
            if let Some(count) = sort.block_count.get_mut(&blocked) {
                *count = count.saturating_sub(1);
            }
        }
        order.push(pick);
    }
    order
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn order_of(prompt: Value, outputs: &[&str], cached: &[&str]) -> Vec<String> {
        let graph = prompt.as_object().unwrap().clone();
        let outputs: Vec<String> = outputs.iter().map(|s| (*s).to_owned()).collect();
        let cached: HashSet<String> = cached.iter().map(|s| (*s).to_owned()).collect();
        let is_output =
            |id: &str| matches!(graph[id]["class_type"].as_str(), Some("SaveImage" | "SaveLoRA" | "PreviewAny"));
        execution_order(&graph, &outputs, &cached, is_output)
    }

    #[test]
    fn matches_the_recorded_orders() {
        // txt2img_sd15.json: executing 4, 5, 7, 6, 3, 8, 9.
        let txt2img = json!({
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x"}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["4", 1]}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "b", "clip": ["4", 1]}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "3": {"class_type": "KSampler", "inputs": {"seed": 1, "model": ["4", 0], "positive": ["6", 0],
                  "negative": ["7", 0], "latent_image": ["5", 0]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "t"}}
        });
        assert_eq!(order_of(txt2img, &["9"], &[]), ["4", "5", "7", "6", "3", "8", "9"]);
        // train_lora_sd15.json: executing 1, 2, 4, 3, 5, 6.
        let train = json!({
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x"}},
            "2": {"class_type": "LoadImageTextDataSetFromFolder", "inputs": {"folder": "d"}},
            "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
            "4": {"class_type": "CLIPTextEncode", "inputs": {"text": ["2", 1], "clip": ["1", 1]}},
            "5": {"class_type": "TrainLoraNode", "inputs": {"model": ["1", 0], "latents": ["3", 0],
                  "positive": ["4", 0], "steps": 3}},
            "6": {"class_type": "SaveLoRA", "inputs": {"lora": ["5", 1], "prefix": "loras/x", "steps": ["5", 3]}}
        });
        assert_eq!(order_of(train.clone(), &["6"], &[]), ["1", "2", "4", "3", "5", "6"]);
        assert_eq!(order_of(train, &["6"], &["1", "2", "3", "4"]), ["5", "6"]);
    }
}
