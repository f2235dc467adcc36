//! The prompt worker: runs one prompt at a time in queue order and reports like ComfyUI's
//! `PromptExecutor` (execution_start … executing null), computing images for real.
//!
//! Nodes run in the real `ExecutionList` order ([`crate::graph`]). Outputs marked
//! `output_is_list` (the dataset loader's) are lists: a node fed a list runs once per item and
//! its outputs become lists too, as in ComfyUI's `_map_node_over_list`, unless it takes whole
//! lists (`TrainLoraNode`).

use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use image::imageops::{self, FilterType};
use image::{GrayImage, ImageFormat, Luma, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use crate::graph::execution_order;
use crate::state::{QueueItem, Shared, now_ms};
use crate::train::{TrainingRun, fingerprint, lora_file, read_dataset, save_path};
use crate::validate::as_link;

/// Nodes that take their inputs as whole lists (`INPUT_IS_LIST` / `is_input_list`).
const INPUT_IS_LIST: [&str; 1] = ["TrainLoraNode"];

/// Outputs of one node kept by the cache.
pub(crate) type CachedOutputs = Vec<Data>;

/// A value flowing between nodes. Model-ish values are descriptions: the fake loads no weights.
#[derive(Clone, Debug)]
pub(crate) enum Data {
    Image(Vec<RgbImage>),
    /// LoadImage's second output; no fake node reads masks, but graphs may link them.
    #[allow(dead_code)]
    Mask(Vec<GrayImage>),
    /// The fake keeps latents in pixel space at full size; only previews are latent-sized.
    Latent(Vec<RgbImage>),
    Model(String),
    Clip(String),
    Vae(String),
    Conditioning {
        clip: String,
        text: String,
    },
    UpscaleModel(u32),
    /// STRING and INT outputs.
    Text(String),
    Int(i64),
    /// `TrainLoraNode`'s LORA_MODEL: the finished safetensors file and its `trainings()` entry.
    Lora {
        file: Arc<Vec<u8>>,
        record: usize,
    },
    /// `TrainLoraNode`'s LOSS_MAP: one loss per step.
    LossMap(Vec<f64>),
    /// An `output_is_list` output, or the outputs of a node run once per list item.
    List(Vec<Data>),
}

/// Why a node stopped.
enum Stop {
    Fail { message: String, kind: &'static str },
    Interrupted,
}

fn fail(message: impl Into<String>) -> Stop {
    fail_as("RuntimeError", message)
}

/// A failure with the Python exception type the real node raises (`ValueError`, …).
fn fail_as(kind: &'static str, message: impl Into<String>) -> Stop {
    Stop::Fail { message: message.into(), kind }
}

/// Worker loop; restarted (aborted and respawned) by `FakeComfy::restart`.
pub(crate) async fn run_worker(shared: Arc<Shared>) {
    loop {
        // A frozen process takes nothing off its queue.
        shared.thawed().await;
        let item = {
            let mut st = shared.lock();
            let item = st.queue.pop();
            if let Some(item) = &item {
                st.running = Some(item.clone());
                st.interrupt = false;
            }
            item
        };
        let Some(item) = item else {
            shared.wake.notified().await;
            continue;
        };
        shared.broadcast_status();
        let started = std::time::Instant::now();
        let ok = Run::new(&shared, item).execute().await;
        let mut st = shared.lock();
        st.usage.prompts += 1;
        st.usage.failed += u64::from(!ok);
        st.usage.busy_ms += started.elapsed().as_millis() as u64;
    }
}

struct Run<'a> {
    shared: &'a Shared,
    item: QueueItem,
    sid: Option<String>,
    previews: bool,
    states: Map<String, Value>,
    executed: Vec<String>,
    messages: Vec<Value>,
    outputs_ui: Map<String, Value>,
    meta: Map<String, Value>,
    values: HashMap<String, Vec<Data>>,
    output_nodes: HashSet<String>,
    /// While a node runs once per list item: the item's index (list inputs read that item).
    slice: Option<usize>,
}

impl<'a> Run<'a> {
    fn new(shared: &'a Shared, item: QueueItem) -> Self {
        let previews = match item.extra_data.get("preview_method").and_then(Value::as_str) {
            Some("none") => false,
            Some(_) => true,
            None => shared.options.previews_by_default,
        };
        let info = shared.object_info();
        let output_nodes = item
            .graph
            .iter()
            .filter(|(_, n)| {
                let class = n["class_type"].as_str().unwrap_or_default();
                info.get(class).and_then(|i| i.get("output_node")).and_then(Value::as_bool) == Some(true)
            })
            .map(|(id, _)| id.clone())
            .collect();
        Run {
            shared,
            sid: item.client_id().map(str::to_owned),
            item,
            previews,
            states: Map::new(),
            executed: Vec::new(),
            messages: Vec::new(),
            outputs_ui: Map::new(),
            meta: Map::new(),
            values: HashMap::new(),
            output_nodes,
            slice: None,
        }
    }

    fn send(&self, kind: &str, data: Value) {
        self.shared.send_json(kind, data, self.sid.as_deref());
    }

    /// Sends and keeps the message for the history entry's `status.messages`.
    fn send_recorded(&mut self, kind: &str, data: Value) {
        self.send(kind, data.clone());
        self.messages.push(json!([kind, data]));
    }

    fn pid(&self) -> &str {
        &self.item.prompt_id
    }

    fn node_state(&self, node: &str, value: Value, max: Value, state: &str) -> Value {
        json!({
            "value": value, "max": max, "state": state, "node_id": node, "prompt_id": self.pid(),
            "display_node_id": node, "parent_node_id": null, "real_node_id": node
        })
    }

    fn send_progress_state(&self) {
        self.send("progress_state", json!({"prompt_id": self.pid(), "nodes": self.states}));
    }

    /// Nodes needed by the outputs, dependencies first (the cache signatures need that order).
    fn needed(&self) -> Vec<String> {
        fn visit(graph: &Map<String, Value>, id: &str, seen: &mut HashSet<String>, out: &mut Vec<String>) {
            if !seen.insert(id.to_owned()) {
                return;
            }
            if let Some(inputs) = graph.get(id).and_then(|n| n.get("inputs")).and_then(Value::as_object) {
                for value in inputs.values() {
                    if let Some((src, _)) = as_link(value) {
                        visit(graph, src, seen, out);
                    }
                }
            }
            out.push(id.to_owned());
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for o in &self.item.outputs {
            visit(&self.item.graph, o, &mut seen, &mut out);
        }
        out
    }

    /// Cache key: class and inputs, with links replaced by their source's key.
    fn signature(&self, id: &str, sigs: &HashMap<String, String>) -> String {
        let node = &self.item.graph[id];
        let mut inputs = Map::new();
        if let Some(map) = node.get("inputs").and_then(Value::as_object) {
            for (k, v) in map {
                let v = match as_link(v) {
                    Some((src, idx)) => json!(format!("{}#{idx}", sigs.get(src).cloned().unwrap_or_default())),
                    None => v.clone(),
                };
                inputs.insert(k.clone(), v);
            }
        }
        json!([node["class_type"], inputs]).to_string()
    }

    /// Runs the prompt to its end; whether it succeeded.
    async fn execute(mut self) -> bool {
        let pid = self.pid().to_owned();
        self.send_recorded("execution_start", json!({"prompt_id": pid, "timestamp": now_ms()}));
        let needed = self.needed();
        let mut sigs = HashMap::new();
        let mut cached = HashSet::new();
        for id in &needed {
            let sig = self.signature(id, &sigs);
            if self.shared.options.cache
                && !self.output_nodes.contains(id)
                && let Some(outputs) = self.shared.lock().cache.get(&sig).cloned()
            {
                self.values.insert(id.clone(), outputs);
                cached.insert(id.clone());
            }
            sigs.insert(id.clone(), sig);
        }
        // The real server lists cached nodes in the prompt's order.
        let cached_list: Vec<&String> = self.item.graph.keys().filter(|id| cached.contains(*id)).collect();
        self.send_recorded("execution_cached", json!({"nodes": cached_list, "prompt_id": pid, "timestamp": now_ms()}));
        let order = execution_order(&self.item.graph, &self.item.outputs, &cached, |id| self.output_nodes.contains(id));
        let mut outcome = Ok(());
        // A simulated GPU: the prompt takes its sampled time, then may fail.
        let profile = self.shared.lock().profile;
        if let Some(profile) = profile {
            let (run, fails) = profile.sample(&mut rand::rng());
            tokio::time::sleep(run).await;
            if fails && let Some(first) = order.first() {
                outcome = Err((first.clone(), fail("simulated backend failure (out of memory)")));
            }
        }
        for id in &order {
            if outcome.is_err() {
                break;
            }
            // A frozen process does not start its next node.
            self.shared.thawed().await;
            if let Err(stop) = self.check_interrupt() {
                outcome = Err((id.clone(), stop));
                break;
            }
            self.states.insert(id.clone(), self.node_state(id, json!(0.0), json!(1.0), "running"));
            self.send_progress_state();
            self.shared.lock().last_node = Some(id.clone());
            self.send("executing", json!({"node": id, "display_node": id, "prompt_id": pid}));
            match self.run_node(id).await {
                Ok((outputs, ui)) => {
                    if self.shared.options.cache && !self.output_nodes.contains(id) {
                        let mut st = self.shared.lock();
                        if st.cache.len() > 256 {
                            st.cache.clear();
                        }
                        st.cache.insert(sigs[id].clone(), outputs.clone());
                    }
                    self.values.insert(id.clone(), outputs);
                    if let Some(ui) = ui {
                        self.send("executed", json!({"node": id, "display_node": id, "output": ui, "prompt_id": pid}));
                        self.outputs_ui.insert(id.clone(), ui);
                        self.meta.insert(
                            id.clone(),
                            json!({"node_id": id, "display_node": id, "parent_node": null, "real_node_id": id}),
                        );
                    }
                    let (value, max) = match self.states.get(id) {
                        Some(s) if s["state"] == "running" && s["max"] != json!(1.0) => {
                            (s["value"].clone(), s["max"].clone())
                        }
                        _ => (json!(1.0), json!(1.0)),
                    };
                    self.states.insert(id.clone(), self.node_state(id, value, max, "finished"));
                    self.send_progress_state();
                    self.executed.push(id.clone());
                }
                Err(stop) => {
                    outcome = Err((id.clone(), stop));
                    break;
                }
            }
        }
        let success = match outcome {
            Ok(()) => {
                self.send_recorded("execution_success", json!({"prompt_id": pid, "timestamp": now_ms()}));
                true
            }
            Err((node, Stop::Interrupted)) => {
                let data = json!({
                    "prompt_id": pid, "node_id": node, "node_type": self.class_of(&node),
                    "executed": self.executed, "timestamp": now_ms()
                });
                self.send_recorded("execution_interrupted", data);
                false
            }
            Err((node, Stop::Fail { message, kind })) => {
                let data = self.error_data(&node, &message, kind, &needed);
                self.send_recorded("execution_error", data);
                false
            }
        };
        let entry = json!({
            "prompt": self.item.to_json(),
            "outputs": self.outputs_ui,
            "status": {
                "status_str": if success { "success" } else { "error" },
                "completed": success,
                "messages": self.messages,
            },
            "meta": if success { Value::Object(self.meta.clone()) } else { json!({}) },
        });
        {
            let mut st = self.shared.lock();
            st.history.insert(pid.clone(), entry);
            st.running = None;
            st.last_node = None;
            st.interrupt = false;
        }
        self.shared.broadcast_status();
        self.send("executing", json!({"node": null, "prompt_id": pid}));
        success
    }

    fn class_of(&self, node: &str) -> String {
        self.item.graph[node]["class_type"].as_str().unwrap_or_default().to_owned()
    }

    fn error_data(&self, node: &str, message: &str, kind: &str, order: &[String]) -> Value {
        let class = self.class_of(node);
        let mut current_inputs = Map::new();
        if let Some(inputs) = self.item.graph[node]["inputs"].as_object() {
            for (k, v) in inputs {
                let shown = match as_link(v) {
                    Some((src, idx)) => match self.values.get(src).and_then(|o| o.get(idx)) {
                        Some(Data::Image(imgs)) => {
                            let (w, h) = imgs.first().map(image::ImageBuffer::dimensions).unwrap_or((0, 0));
                            format!("tensor of shape [{}, {h}, {w}, 3]", imgs.len())
                        }
                        Some(other) => format!("{other:?}").chars().take(80).collect(),
                        None => "None".to_owned(),
                    },
                    None => v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()),
                };
                current_inputs.insert(k.clone(), json!([shown]));
            }
        }
        json!({
            "prompt_id": self.pid(),
            "node_id": node,
            "node_type": class,
            "executed": self.executed,
            "exception_message": format!("{message}\n"),
            "exception_type": kind,
            "traceback": [
                "  File \"ComfyUI/execution.py\", line 518, in execute\n    output_data, output_ui, has_subgraph, has_pending_tasks = await get_output_data(prompt_id, unique_id, obj, input_data_all, execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, v3_data=v3_data)\n",
                "  File \"ComfyUI/execution.py\", line 291, in process_inputs\n    result = f(**inputs)\n",
                format!("  File \"station_fake/{class}.py\", line 1, in run\n    raise {kind}(message)\n"),
            ],
            "current_inputs": current_inputs,
            "current_outputs": order,
            "timestamp": now_ms(),
        })
    }

    fn check_interrupt(&self) -> Result<(), Stop> {
        let mut st = self.shared.lock();
        if st.interrupt {
            st.interrupt = false;
            return Err(Stop::Interrupted);
        }
        Ok(())
    }

    fn step_delay(&self) -> u64 {
        self.shared.lock().step_delay_ms
    }

    /// One progress step of `node`: progress_state, progress and (maybe) a JPEG preview frame.
    /// A frozen server holds the step until thawed.
    async fn progress(&mut self, node: &str, value: u64, max: u64, preview: Option<&RgbImage>) -> Result<(), Stop> {
        self.shared.thawed().await;
        self.check_interrupt()?;
        self.states.insert(node.to_owned(), self.node_state(node, json!(value), json!(max), "running"));
        self.send_progress_state();
        self.send("progress", json!({"value": value, "max": max, "prompt_id": self.pid(), "node": node}));
        if self.previews
            && let Some(img) = preview
        {
            let mut frame = vec![0, 0, 0, 1, 0, 0, 0, 1];
            let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut frame, 90);
            if enc.encode_image(img).is_ok() {
                self.shared.send(Message::Binary(frame.into()), self.sid.as_deref());
            }
        }
        Ok(())
    }

    fn input<'v>(&'v self, node: &'v Value, name: &str) -> Result<&'v Value, Stop> {
        node.get("inputs").and_then(|i| i.get(name)).ok_or_else(|| fail(format!("input '{name}' is missing")))
    }

    /// The value a linked input receives; while the node runs per list item, that item.
    fn linked(&self, node: &Value, name: &str) -> Result<&Data, Stop> {
        let value = self.input(node, name)?;
        let (src, idx) = as_link(value).ok_or_else(|| fail(format!("input '{name}' must be a link")))?;
        let data = self
            .values
            .get(src)
            .and_then(|o| o.get(idx))
            .ok_or_else(|| fail(format!("input '{name}' links to missing output {src}:{idx}")))?;
        match (data, self.slice) {
            // Shorter lists repeat their last item, as in `_map_node_over_list`.
            (Data::List(items), Some(i)) => items
                .get(i.min(items.len().saturating_sub(1)))
                .ok_or_else(|| fail_as("IndexError", "list index out of range")),
            _ => Ok(data),
        }
    }

    /// How many times the node runs: the longest list among its linked inputs, `None` when no
    /// input is a list (or the node takes whole lists).
    fn list_len(&self, node: &Value, class: &str) -> Option<usize> {
        if INPUT_IS_LIST.contains(&class) {
            return None;
        }
        node.get("inputs")?
            .as_object()?
            .values()
            .filter_map(as_link)
            .filter_map(|(src, idx)| match self.values.get(src)?.get(idx)? {
                Data::List(items) => Some(items.len()),
                _ => None,
            })
            .max()
    }

    fn images(&self, node: &Value, name: &str) -> Result<Vec<RgbImage>, Stop> {
        match self.linked(node, name)? {
            Data::Image(i) => Ok(i.clone()),
            other => Err(fail(format!("input '{name}' expects IMAGE, got {other:?}"))),
        }
    }

    fn latent(&self, node: &Value, name: &str) -> Result<Vec<RgbImage>, Stop> {
        match self.linked(node, name)? {
            Data::Latent(i) => Ok(i.clone()),
            _ => Err(fail(format!("input '{name}' expects LATENT"))),
        }
    }

    fn text_of(&self, node: &Value, name: &str) -> Result<String, Stop> {
        match self.linked(node, name)? {
            Data::Model(s) | Data::Clip(s) | Data::Vae(s) => Ok(s.clone()),
            Data::Conditioning { clip, text } => Ok(format!("{clip}|{text}")),
            _ => Err(fail(format!("input '{name}' expects a model value"))),
        }
    }

    /// A widget input: its literal value, or what the linked node produced (a widget converted
    /// to an input, like `CLIPTextEncode.text` fed by the dataset's captions).
    fn widget(&self, node: &Value, name: &str) -> Result<Value, Stop> {
        let v = self.input(node, name)?;
        if as_link(v).is_none() {
            return Ok(v.clone());
        }
        match self.linked(node, name)? {
            Data::Text(s) => Ok(json!(s)),
            Data::Int(i) => Ok(json!(i)),
            other => Err(fail(format!("input '{name}' expects a value, got {other:?}"))),
        }
    }

    fn int(&self, node: &Value, name: &str) -> Result<i64, Stop> {
        let v = self.widget(node, name)?;
        v.as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .ok_or_else(|| fail(format!("input '{name}' must be an integer")))
    }

    fn float(&self, node: &Value, name: &str) -> Result<f64, Stop> {
        self.widget(node, name)?.as_f64().ok_or_else(|| fail(format!("input '{name}' must be a number")))
    }

    fn string(&self, node: &Value, name: &str) -> Result<String, Stop> {
        let v = self.widget(node, name)?;
        Ok(v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))
    }

    fn boolean(&self, node: &Value, name: &str) -> Result<bool, Stop> {
        let v = self.widget(node, name)?;
        v.as_bool().ok_or_else(|| fail(format!("input '{name}' must be a boolean")))
    }

    /// Loaders check the file is (still) in its folder: `get_full_path_or_raise`.
    fn require_model(&self, folder: &str, name: &str) -> Result<(), Stop> {
        if self.shared.lock().has_model(folder, name) {
            return Ok(());
        }
        Err(fail_as("FileNotFoundError", format!("Model in folder '{folder}' with filename '{name}' not found.")))
    }

    /// Runs a node, once per item when a linked input is a list (outputs become lists and the
    /// `ui` parts are concatenated per key, as `get_output_data` merges them).
    async fn run_node(&mut self, id: &str) -> Result<(Vec<Data>, Option<Value>), Stop> {
        let node = self.item.graph[id].clone();
        let class = self.class_of(id);
        let Some(len) = self.list_len(&node, &class) else {
            return self.run_once(id).await;
        };
        let mut outputs: Vec<Vec<Data>> = Vec::new();
        let mut ui: Option<Map<String, Value>> = None;
        for i in 0..len {
            self.slice = Some(i);
            let result = self.run_once(id).await;
            self.slice = None;
            let (out, part) = result?;
            for (slot, value) in out.into_iter().enumerate() {
                if outputs.len() <= slot {
                    outputs.resize_with(slot + 1, Vec::new);
                }
                outputs[slot].push(value);
            }
            if let Some(Value::Object(part)) = part {
                let merged = ui.get_or_insert_with(Map::new);
                for (key, values) in part {
                    let entry = merged.entry(key).or_insert_with(|| json!([]));
                    if let (Some(all), Some(more)) = (entry.as_array_mut(), values.as_array()) {
                        all.extend(more.iter().cloned());
                    }
                }
            }
        }
        Ok((outputs.into_iter().map(Data::List).collect(), ui.map(Value::Object)))
    }

    async fn run_once(&mut self, id: &str) -> Result<(Vec<Data>, Option<Value>), Stop> {
        let node = self.item.graph[id].clone();
        let class = self.class_of(id);
        let injected = self.shared.lock().failures.get(&class).cloned();
        if let Some(message) = injected {
            return Err(fail(message));
        }
        let delay = self.step_delay();
        if delay > 0 && !matches!(class.as_str(), "KSampler" | "StationSteps" | "TrainLoraNode") {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            self.shared.thawed().await;
            self.check_interrupt()?;
        }
        let n = &node;
        let out = match class.as_str() {
            "LoadImage" => self.load_image(n)?,
            "EmptyImage" => {
                let (w, h) = (self.int(n, "width")?, self.int(n, "height")?);
                let batch = self.int(n, "batch_size")?.max(1);
                let c = self.int(n, "color")?;
                let px = Rgb([(c >> 16) as u8, (c >> 8) as u8, c as u8]);
                let img = RgbImage::from_pixel(w.max(1) as u32, h.max(1) as u32, px);
                vec![Data::Image(vec![img; batch as usize])]
            }
            "ImageScaleBy" => {
                let filter = filter(&self.string(n, "upscale_method")?);
                let by = self.float(n, "scale_by")?;
                let imgs = self.images(n, "image")?;
                let out = imgs
                    .iter()
                    .map(|i| {
                        let w = ((i.width() as f64) * by).round().max(1.0) as u32;
                        let h = ((i.height() as f64) * by).round().max(1.0) as u32;
                        imageops::resize(i, w, h, filter)
                    })
                    .collect();
                vec![Data::Image(out)]
            }
            "ImageScale" => {
                let filter = filter(&self.string(n, "upscale_method")?);
                let (tw, th) = (self.int(n, "width")?, self.int(n, "height")?);
                let crop = self.string(n, "crop")? == "center";
                let imgs = self.images(n, "image")?;
                let out = imgs.iter().map(|i| scale_to(i, tw as u32, th as u32, crop, filter)).collect();
                vec![Data::Image(out)]
            }
            "ImageBlur" => {
                let radius = self.int(n, "blur_radius")?;
                let sigma = self.float(n, "sigma")? as f32;
                let imgs = self.images(n, "image")?;
                let out = if radius == 0 { imgs } else { imgs.iter().map(|i| imageops::blur(i, sigma)).collect() };
                vec![Data::Image(out)]
            }
            "ImageInvert" => {
                let mut imgs = self.images(n, "image")?;
                for img in &mut imgs {
                    img.pixels_mut().for_each(|p| p.0 = p.0.map(comfy_invert));
                }
                vec![Data::Image(imgs)]
            }
            "SaveImage" => {
                let prefix = self.string(n, "filename_prefix")?;
                let imgs = self.images(n, "images")?;
                return Ok((vec![], Some(self.save(&imgs, &prefix, "output")?)));
            }
            "PreviewImage" => {
                let imgs = self.images(n, "images")?;
                let suffix: String = {
                    let mut rng = rand::rng();
                    (0..5).map(|_| (b'a' + rng.random_range(0..26u8)) as char).collect()
                };
                let prefix = format!("ComfyUI_temp_{suffix}");
                return Ok((vec![], Some(self.save(&imgs, &prefix, "temp")?)));
            }
            "StationSteps" => {
                let imgs = self.images(n, "image")?;
                let steps = self.int(n, "steps")?.max(1) as u64;
                let step_ms = self.int(n, "step_ms")?.max(0) as u64;
                let preview = imgs.first().map(|i| shrink(i, 64));
                for step in 1..=steps {
                    // Read at every step, so a test can slow a running prompt down or speed it up.
                    let delay = self.step_delay();
                    let delay = if delay > 0 { delay } else { step_ms };
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    self.progress(id, step, steps, preview.as_ref()).await?;
                }
                vec![Data::Image(imgs)]
            }
            "StationFail" => return Err(fail(self.string(n, "message")?)),
            "CheckpointLoaderSimple" => {
                let name = self.string(n, "ckpt_name")?;
                self.require_model("checkpoints", &name)?;
                vec![Data::Model(name.clone()), Data::Clip(name.clone()), Data::Vae(name)]
            }
            "UNETLoader" => {
                let name = self.string(n, "unet_name")?;
                self.require_model("diffusion_models", &name)?;
                vec![Data::Model(name)]
            }
            "CLIPLoader" => {
                let name = self.string(n, "clip_name")?;
                self.require_model("text_encoders", &name)?;
                vec![Data::Clip(name)]
            }
            "DualCLIPLoader" => {
                // Both text encoders loaded as one CLIP (FLUX: CLIP-L and T5-XXL, `type` "flux").
                let first = self.string(n, "clip_name1")?;
                let second = self.string(n, "clip_name2")?;
                self.require_model("text_encoders", &first)?;
                self.require_model("text_encoders", &second)?;
                vec![Data::Clip(format!("{first}+{second}:{}", self.string(n, "type")?))]
            }
            "VAELoader" => {
                let name = self.string(n, "vae_name")?;
                if name != "pixel_space" {
                    self.require_model("vae", &name)?;
                }
                vec![Data::Vae(name)]
            }
            "LoraLoader" => {
                let name = self.string(n, "lora_name")?;
                self.require_model("loras", &name)?;
                let sm = self.float(n, "strength_model")?;
                let sc = self.float(n, "strength_clip")?;
                let model = self.text_of(n, "model")?;
                let clip = self.text_of(n, "clip")?;
                vec![Data::Model(format!("{model}+{name}:{sm}")), Data::Clip(format!("{clip}+{name}:{sc}"))]
            }
            "LoraLoaderModelOnly" => {
                let name = self.string(n, "lora_name")?;
                self.require_model("loras", &name)?;
                let sm = self.float(n, "strength_model")?;
                let model = self.text_of(n, "model")?;
                vec![Data::Model(format!("{model}+{name}:{sm}"))]
            }
            "CLIPTextEncode" => {
                let clip = self.text_of(n, "clip")?;
                vec![Data::Conditioning { clip, text: self.string(n, "text")? }]
            }
            "PrimitiveString" => vec![Data::Text(self.string(n, "value")?)],
            "PreviewAny" => {
                let text = preview_text(self.linked(n, "source")?);
                return Ok((vec![], Some(json!({"text": [text]}))));
            }
            "StationCaption" => {
                let imgs = self.images(n, "image")?;
                let img = imgs.first().ok_or_else(|| fail("StationCaption got an empty image batch"))?;
                vec![Data::Text(caption(img))]
            }
            "LoadImageTextDataSetFromFolder" => self.load_dataset(n)?,
            "TrainLoraNode" => self.train_lora(id, n, delay).await?,
            "SaveLoRA" => {
                self.save_lora(n)?;
                // SaveLoRA reports nothing: no `executed`, no history outputs (recorded).
                return Ok((vec![], None));
            }
            "EmptyLatentImage" => {
                let (w, h) = (self.int(n, "width")?, self.int(n, "height")?);
                let batch = self.int(n, "batch_size")?.max(1) as usize;
                vec![Data::Latent(vec![RgbImage::new(w.max(8) as u32, h.max(8) as u32); batch])]
            }
            "KSampler" => self.ksampler(id, n, delay).await?,
            "VAEDecode" => {
                self.text_of(n, "vae")?;
                vec![Data::Image(self.latent(n, "samples")?)]
            }
            "VAEEncode" => {
                self.text_of(n, "vae")?;
                vec![Data::Latent(self.images(n, "pixels")?)]
            }
            "UpscaleModelLoader" => {
                let name = self.string(n, "model_name")?;
                self.require_model("upscale_models", &name)?;
                // "4x-foo.pth" → 4: the fake reads the factor off the name, like users do.
                let scale = name.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap_or(4);
                vec![Data::UpscaleModel(scale)]
            }
            "ImageUpscaleWithModel" => {
                let scale = match self.linked(n, "upscale_model")? {
                    Data::UpscaleModel(s) => *s,
                    _ => return Err(fail("input 'upscale_model' expects UPSCALE_MODEL")),
                };
                let imgs = self.images(n, "image")?;
                let out = imgs
                    .iter()
                    .map(|i| imageops::resize(i, i.width() * scale, i.height() * scale, FilterType::Lanczos3))
                    .collect();
                vec![Data::Image(out)]
            }
            other => return Err(fail(format!("node {other} has no fake implementation"))),
        };
        Ok((out, None))
    }

    fn load_image(&self, n: &Value) -> Result<Vec<Data>, Stop> {
        let name = self.string(n, "image")?;
        let (sub, file) = match name.rsplit_once('/') {
            Some((s, f)) => (s.to_owned(), f.to_owned()),
            None => (String::new(), name.clone()),
        };
        let bytes = self
            .shared
            .lock()
            .files
            .get(&("input".to_owned(), sub, file))
            .cloned()
            .ok_or_else(|| fail(format!("Invalid image file: {name}")))?;
        let img = image::load_from_memory(&bytes).map_err(|e| fail(format!("cannot decode {name}: {e}")))?;
        let mask = match img.as_rgba8() {
            Some(rgba) => GrayImage::from_fn(rgba.width(), rgba.height(), |x, y| Luma([255 - rgba.get_pixel(x, y)[3]])),
            None => GrayImage::new(img.width(), img.height()),
        };
        Ok(vec![Data::Image(vec![img.to_rgb8()]), Data::Mask(vec![mask])])
    }

    /// Saves PNGs as `<prefix>_00001_.png`, `…_00002_.png`, counting on from the files on "disk"
    /// as `folder_paths.get_save_image_path` does.
    fn save(&self, imgs: &[RgbImage], prefix: &str, kind: &str) -> Result<Value, Stop> {
        let mut st = self.shared.lock();
        let (sub, base, start) = save_path(&st.files, kind, prefix);
        let mut refs = Vec::new();
        for (i, img) in imgs.iter().enumerate() {
            let filename = format!("{base}_{:05}_.png", start + i as i64);
            let mut buf = Vec::new();
            img.write_to(&mut Cursor::new(&mut buf), ImageFormat::Png)
                .map_err(|e| fail(format!("cannot encode PNG: {e}")))?;
            st.files.insert((kind.to_owned(), sub.clone(), filename.clone()), buf);
            refs.push(json!({"filename": filename, "subfolder": sub, "type": kind}));
        }
        Ok(json!({ "images": refs }))
    }

    /// `LoadImageTextDataSetFromFolder`: the folder's images and captions, as two lists.
    fn load_dataset(&self, n: &Value) -> Result<Vec<Data>, Stop> {
        let folder = self.string(n, "folder")?;
        let st = self.shared.lock();
        let items = read_dataset(&st.files, &folder);
        if items.is_empty() {
            return Err(fail_as("ValueError", "No valid images found in input"));
        }
        let mut images = Vec::new();
        let mut texts = Vec::new();
        for item in items {
            let bytes = st.files.get(&item.key).map(Vec::as_slice).unwrap_or_default();
            let img = image::load_from_memory(bytes).map_err(|_| {
                let path = format!("input/{folder}/{}", item.name);
                fail_as("PIL.UnidentifiedImageError", format!("cannot identify image file '{path}'"))
            })?;
            images.push(Data::Image(vec![img.to_rgb8()]));
            texts.push(Data::Text(item.caption));
        }
        Ok(vec![Data::List(images), Data::List(texts)])
    }

    /// The `LoadImageTextDataSetFromFolder` folder upstream of `id`, if any.
    fn dataset_folder_of(&self, id: &str) -> Option<String> {
        let mut todo = vec![id.to_owned()];
        let mut seen = HashSet::new();
        while let Some(node) = todo.pop() {
            if !seen.insert(node.clone()) {
                continue;
            }
            let n = self.item.graph.get(&node)?;
            if n["class_type"] == "LoadImageTextDataSetFromFolder" {
                return n["inputs"]["folder"].as_str().map(str::to_owned);
            }
            if let Some(inputs) = n.get("inputs").and_then(Value::as_object) {
                todo.extend(inputs.values().filter_map(as_link).map(|(src, _)| src.to_owned()));
            }
        }
        None
    }

    /// `TrainLoraNode`: one `progress` per step on this node, then the LoRA, whose bytes depend
    /// on the latents, the captions and the settings. Recorded for `FakeComfy::trainings`.
    async fn train_lora(&mut self, id: &str, n: &Value, delay: u64) -> Result<Vec<Data>, Stop> {
        let model = self.text_of(n, "model")?;
        let flatten = |data: &Data| -> Vec<Data> {
            match data {
                Data::List(items) => items.clone(),
                other => vec![other.clone()],
            }
        };
        let mut latents = Vec::new();
        for item in flatten(self.linked(n, "latents")?) {
            match item {
                Data::Latent(batch) => latents.extend(batch),
                _ => return Err(fail("input 'latents' expects LATENT")),
            }
        }
        let mut captions = Vec::new();
        let mut clips: Vec<String> = Vec::new();
        for item in flatten(self.linked(n, "positive")?) {
            match item {
                Data::Conditioning { text, clip } => {
                    if !clips.contains(&clip) {
                        clips.push(clip);
                    }
                    captions.push(text);
                }
                _ => return Err(fail("input 'positive' expects CONDITIONING")),
            }
        }
        // As the real node: one conditioning serves every image, otherwise one per image.
        if captions.len() == 1 && latents.len() > 1 {
            captions = vec![captions[0].clone(); latents.len()];
        } else if captions.len() != latents.len() {
            return Err(fail_as(
                "ValueError",
                format!(
                    "Number of positive conditions ({}) does not match number of images ({}).",
                    captions.len(),
                    latents.len()
                ),
            ));
        }
        let steps = self.int(n, "steps")?.max(1) as u64;
        let mut settings = Map::new();
        for name in [
            "batch_size",
            "grad_accumulation_steps",
            "steps",
            "learning_rate",
            "rank",
            "optimizer",
            "loss_function",
            "seed",
            "training_dtype",
            "lora_dtype",
            "algorithm",
            "gradient_checkpointing",
            "existing_lora",
            "bucket_mode",
        ] {
            if n["inputs"].get(name).is_some() {
                settings.insert(name.to_owned(), self.widget(n, name)?);
            }
        }
        let rank = self.int(n, "rank")?.max(1) as u64;
        let seed = self.widget(n, "seed")?.as_u64().unwrap_or(0);
        let bf16 = self.string(n, "lora_dtype").is_ok_and(|d| d == "bf16");
        let _ = self.boolean(n, "gradient_checkpointing");
        let folder = self.dataset_folder_of(id);
        let images = {
            let st = self.shared.lock();
            folder
                .as_deref()
                .map(|f| read_dataset(&st.files, f).into_iter().map(|i| i.name).collect())
                .unwrap_or_default()
        };
        let record = {
            let mut st = self.shared.lock();
            st.trainings.push(TrainingRun {
                prompt_id: self.item.prompt_id.clone(),
                node_id: id.to_owned(),
                folder,
                images,
                captions: captions.clone(),
                model: model.clone(),
                clips,
                steps,
                steps_done: 0,
                interrupted: false,
                learning_rate: self.float(n, "learning_rate")?,
                rank,
                batch_size: self.int(n, "batch_size")?.max(1) as u64,
                seed,
                settings: settings.clone(),
                saved_file: None,
            });
            st.trainings.len() - 1
        };
        let delay = if delay > 0 { delay } else { 5 };
        let mut losses = Vec::new();
        for step in 1..=steps {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            if let Err(stop) = self.progress(id, step, steps, None).await {
                self.training_stopped(record, &stop);
                return Err(stop);
            }
            losses.push(1.0 / (step as f64 + 1.0));
            let stall = {
                let mut st = self.shared.lock();
                if let Some(run) = st.trainings.get_mut(record) {
                    run.steps_done = step;
                }
                st.stall_training_after == Some(step)
            };
            // A wedged trainer: silent until interrupted.
            if stall {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if let Err(stop) = self.check_interrupt() {
                        self.training_stopped(record, &stop);
                        return Err(stop);
                    }
                }
            }
        }
        let settings_text = Value::Object(settings).to_string();
        let pixels: Vec<&[u8]> = latents.iter().map(|l| l.as_raw().as_slice()).collect();
        let chunks = pixels
            .into_iter()
            .chain(captions.iter().map(std::string::String::as_bytes))
            .chain([model.as_bytes(), settings_text.as_bytes()]);
        let file = lora_file(fingerprint(chunks), rank, bf16);
        Ok(vec![
            Data::Model(format!("{model}+trained")),
            Data::Lora { file: Arc::new(file), record },
            Data::LossMap(losses),
            Data::Int(steps as i64),
        ])
    }

    /// Records that training run `record` was interrupted, when `stop` says so.
    fn training_stopped(&self, record: usize, stop: &Stop) {
        if matches!(stop, Stop::Interrupted)
            && let Some(run) = self.shared.lock().trainings.get_mut(record)
        {
            run.interrupted = true;
        }
    }

    /// `SaveLoRA`: `output/<prefix>_<steps>_steps_<counter:05>_.safetensors` (without `steps`:
    /// `<prefix>_<counter:05>_.safetensors`). Under `output/loras` it is at once a LoRA of this
    /// server.
    fn save_lora(&self, n: &Value) -> Result<(), Stop> {
        let (file, record) = match self.linked(n, "lora")? {
            Data::Lora { file, record } => (file.clone(), *record),
            _ => return Err(fail("input 'lora' expects LORA_MODEL")),
        };
        let prefix = self.string(n, "prefix")?;
        let steps = if n["inputs"].get("steps").is_some() { Some(self.int(n, "steps")?) } else { None };
        let mut st = self.shared.lock();
        let (sub, base, counter) = save_path(&st.files, "output", &prefix);
        let filename = match steps {
            Some(steps) => format!("{base}_{steps}_steps_{counter:05}_.safetensors"),
            None => format!("{base}_{counter:05}_.safetensors"),
        };
        let path = if sub.is_empty() { filename.clone() } else { format!("{sub}/{filename}") };
        st.files.insert(("output".to_owned(), sub, filename), file.as_ref().clone());
        if let Some(run) = st.trainings.get_mut(record) {
            run.saved_file = Some(path);
        }
        Ok(())
    }

    async fn ksampler(&mut self, id: &str, n: &Value, delay: u64) -> Result<Vec<Data>, Stop> {
        let seed = self.input(n, "seed")?.as_u64().unwrap_or(0);
        let steps = self.int(n, "steps")?.max(1) as u64;
        let denoise = self.float(n, "denoise").unwrap_or(1.0).clamp(0.0, 1.0);
        let model = self.text_of(n, "model")?;
        let positive = self.text_of(n, "positive")?;
        self.text_of(n, "negative")?;
        let latents = self.latent(n, "latent_image")?;
        let finals: Vec<RgbImage> = latents
            .iter()
            .enumerate()
            .map(|(i, l)| synth(seed + i as u64, &model, &positive, l.width(), l.height()))
            .collect();
        let delay = if delay > 0 { delay } else { 5 };
        for step in 1..=steps {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let t = step as f64 / steps as f64 * denoise;
            let preview = shrink(&blend(&latents[0], &finals[0], t), 8);
            self.progress(id, step, steps, Some(&preview)).await?;
        }
        let out = latents.iter().zip(&finals).map(|(l, f)| blend(l, f, denoise)).collect();
        Ok(vec![Data::Latent(out)])
    }
}

fn filter(method: &str) -> FilterType {
    match method {
        "nearest-exact" => FilterType::Nearest,
        "bilinear" | "area" => FilterType::Triangle,
        "bicubic" => FilterType::CatmullRom,
        _ => FilterType::Lanczos3,
    }
}

/// ComfyUI's ImageScale: a 0 side keeps the aspect ratio; "center" crops before resizing.
fn scale_to(img: &RgbImage, tw: u32, th: u32, crop: bool, filter: FilterType) -> RgbImage {
    let (w, h) = img.dimensions();
    let (tw, th) = match (tw, th) {
        (0, 0) => (w, h),
        (0, th) => (((w as f64) * th as f64 / h as f64).round().max(1.0) as u32, th),
        (tw, 0) => (tw, ((h as f64) * tw as f64 / w as f64).round().max(1.0) as u32),
        other => other,
    };
    if crop {
        let (old_aspect, new_aspect) = (w as f64 / h as f64, tw as f64 / th as f64);
        let (mut x, mut y, mut cw, mut ch) = (0, 0, w, h);
        if old_aspect > new_aspect {
            cw = ((h as f64) * new_aspect).round() as u32;
            x = (w - cw) / 2;
        } else if old_aspect < new_aspect {
            ch = ((w as f64) / new_aspect).round() as u32;
            y = (h - ch) / 2;
        }
        let cropped = imageops::crop_imm(img, x, y, cw.max(1), ch.max(1)).to_image();
        return imageops::resize(&cropped, tw, th, filter);
    }
    imageops::resize(img, tw, th, filter)
}

/// Previews are small, like latent2rgb ones: at most `1/div` of the image, at least 1 px.
fn shrink(img: &RgbImage, div: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    imageops::resize(img, (w / div).max(1), (h / div).max(1), FilterType::Triangle)
}

fn blend(a: &RgbImage, b: &RgbImage, t: f64) -> RgbImage {
    RgbImage::from_fn(a.width(), a.height(), |x, y| {
        let pa = a.get_pixel(x, y);
        let pb = b.get_pixel(x.min(b.width() - 1), y.min(b.height() - 1));
        Rgb(std::array::from_fn(|c| (pa[c] as f64 * (1.0 - t) + pb[c] as f64 * t).round() as u8))
    })
}

/// A deterministic picture for (seed, model, prompt): a two-colour gradient with light noise.
fn synth(seed: u64, model: &str, prompt: &str, w: u32, h: u32) -> RgbImage {
    let mut hash: u64 = 0xcbf29ce484222325 ^ seed;
    for b in model.bytes().chain(prompt.bytes()) {
        hash = (hash ^ b as u64).wrapping_mul(0x100000001b3);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(hash);
    let a: [u8; 3] = rng.random();
    let b: [u8; 3] = rng.random();
    RgbImage::from_fn(w, h, |x, y| {
        let t = (x + y) as f64 / (w + h).max(1) as f64;
        let noise: i16 = rng.random_range(-8..=8);
        Rgb(std::array::from_fn(|c| {
            let v = a[c] as f64 * (1.0 - t) + b[c] as f64 * t;
            (v as i16 + noise).clamp(0, 255) as u8
        }))
    })
}

/// What `PreviewAny` shows: strings as they are, numbers as Python prints them, a loss map as
/// its JSON, anything else described (the real node prints the tensor or object).
fn preview_text(data: &Data) -> String {
    match data {
        Data::Text(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::LossMap(losses) => {
            let parts: Vec<String> = losses.iter().map(|l| py_float(*l)).collect();
            format!("{{\"loss\": [{}]}}", parts.join(", "))
        }
        Data::Image(imgs) | Data::Latent(imgs) => {
            let (w, h) = imgs.first().map(image::ImageBuffer::dimensions).unwrap_or((0, 0));
            format!("tensor of shape [{}, {h}, {w}, 3]", imgs.len())
        }
        Data::List(items) => {
            let parts: Vec<String> = items.iter().map(preview_text).collect();
            format!("[{}]", parts.join(", "))
        }
        other => format!("{other:?}").chars().take(200).collect(),
    }
}

/// Python's `str(float)`: `1.0`, `0.5`, `1e-07`, `inf`.
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        // Rust prints `1e-7`; Python pads the exponent to two digits: `1e-07`.
        let text = format!("{f:e}");
        let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
        let (sign, digits) = exp.strip_prefix('-').map(|d| ("-", d)).unwrap_or(("+", exp));
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    let text = f.to_string();
    if text.contains('.') { text } else { format!("{text}.0") }
}

/// `StationCaption`: a deterministic description of an image from its shape and the colour most
/// of its pixels have, e.g. "a photo of a mostly red square, 64x64".
pub(crate) fn caption(img: &RgbImage) -> String {
    const NAMES: [&str; 11] =
        ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "white", "grey", "black"];
    let mut counts = [0usize; 11];
    for px in img.pixels() {
        counts[colour_name(px.0)] += 1;
    }
    // Ties go to the earlier name, so the answer never depends on iteration order.
    let (best, _) = counts.iter().enumerate().fold((0, 0), |acc, (i, c)| if *c > acc.1 { (i, *c) } else { acc });
    let (w, h) = img.dimensions();
    let shape = match w.cmp(&h) {
        std::cmp::Ordering::Equal => "square",
        std::cmp::Ordering::Greater => "landscape picture",
        std::cmp::Ordering::Less => "portrait picture",
    };
    format!("a photo of a mostly {} {shape}, {w}x{h}", NAMES[best])
}

/// Index into `caption`'s colour names: grey levels by value, colours by hue.
fn colour_name([r, g, b]: [u8; 3]) -> usize {
    let (r, g, b) = (r as f64 / 255.0, g as f64 / 255.0, b as f64 / 255.0);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let chroma = max - min;
    if max < 0.2 {
        return 10;
    }
    if chroma < 0.15 || chroma / max < 0.2 {
        return if max > 0.8 { 8 } else { 9 };
    }
    let hue = if max == r {
        60.0 * ((g - b) / chroma).rem_euclid(6.0)
    } else if max == g {
        60.0 * ((b - r) / chroma + 2.0)
    } else {
        60.0 * ((r - g) / chroma + 4.0)
    };
    match hue {
        h if !(15.0..345.0).contains(&h) => 0,
        h if h < 45.0 => 1,
        h if h < 70.0 => 2,
        h if h < 165.0 => 3,
        h if h < 195.0 => 4,
        h if h < 260.0 => 5,
        h if h < 290.0 => 6,
        _ => 7,
    }
}

/// One channel of `ImageInvert` followed by `SaveImage`, as ComfyUI computes
/// it: pixels are float32 `c / 255`, inverted as `1 - x`, saved as
/// `uint8(255 * x)`, which truncates. So a real server turns 1 into 254 but
/// 121 into 133 (not 134): checked against a real 0.8 server for all 256 values.
fn comfy_invert(c: u8) -> u8 {
    let x = 1.0f32 - f32::from(c) / 255.0;
    (255.0f32 * x).clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_describe_colour_and_shape() {
        let red = RgbImage::from_pixel(64, 64, Rgb([220, 20, 30]));
        assert_eq!(caption(&red), "a photo of a mostly red square, 64x64");
        let mut blue = RgbImage::from_pixel(40, 20, Rgb([10, 40, 200]));
        blue.put_pixel(0, 0, Rgb([255, 255, 255]));
        assert_eq!(caption(&blue), "a photo of a mostly blue landscape picture, 40x20");
        assert_eq!(
            caption(&RgbImage::from_pixel(2, 3, Rgb([0, 0, 0]))),
            "a photo of a mostly black portrait picture, 2x3"
        );
    }

    #[test]
    fn floats_print_like_python() {
        assert_eq!(py_float(1.0), "1.0");
        assert_eq!(py_float(0.5), "0.5");
        assert_eq!(py_float(1e-7), "1e-07");
        assert_eq!(py_float(0.0005), "0.0005");
    }
}
