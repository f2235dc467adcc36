//! The prompt worker: runs one prompt at a time in queue order and reports like ComfyUI's
//! `PromptExecutor` (execution_start … executing null), computing images for real.

use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use image::imageops::{self, FilterType};
use image::{GrayImage, ImageFormat, Luma, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use crate::state::{QueueItem, Shared, now_ms};
use crate::validate::as_link;

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
    Conditioning(String),
    UpscaleModel(u32),
}

/// Why a node stopped.
enum Stop {
    Fail { message: String, kind: &'static str },
    Interrupted,
}

fn fail(message: impl Into<String>) -> Stop {
    Stop::Fail { message: message.into(), kind: "RuntimeError" }
}

/// Worker loop; restarted (aborted and respawned) by `FakeComfy::restart`.
pub(crate) async fn run_worker(shared: Arc<Shared>) {
    loop {
        let item = {
            let mut st = shared.lock();
            let item = st.queue.pop_front();
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
        Run::new(&shared, item).execute().await;
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

    /// Nodes needed by the outputs, dependencies first.
    fn order(&self) -> Vec<String> {
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

    async fn execute(mut self) {
        let pid = self.pid().to_owned();
        self.send_recorded("execution_start", json!({"prompt_id": pid, "timestamp": now_ms()}));
        let order = self.order();
        let mut sigs = HashMap::new();
        let mut cached = Vec::new();
        for id in &order {
            let sig = self.signature(id, &sigs);
            if self.shared.options.cache
                && !self.output_nodes.contains(id)
                && let Some(outputs) = self.shared.lock().cache.get(&sig).cloned()
            {
                self.values.insert(id.clone(), outputs);
                cached.push(id.clone());
            }
            sigs.insert(id.clone(), sig);
        }
        self.send_recorded("execution_cached", json!({"nodes": cached, "prompt_id": pid, "timestamp": now_ms()}));
        let mut outcome = Ok(());
        for id in order.iter().filter(|id| !cached.contains(id)) {
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
                let data = self.error_data(&node, &message, kind, &order);
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
                            let (w, h) = imgs.first().map(|i| i.dimensions()).unwrap_or((0, 0));
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
    async fn progress(&mut self, node: &str, value: u64, max: u64, preview: Option<&RgbImage>) -> Result<(), Stop> {
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

    fn linked(&self, node: &Value, name: &str) -> Result<&Data, Stop> {
        let value = self.input(node, name)?;
        let (src, idx) = as_link(value).ok_or_else(|| fail(format!("input '{name}' must be a link")))?;
        self.values
            .get(src)
            .and_then(|o| o.get(idx))
            .ok_or_else(|| fail(format!("input '{name}' links to missing output {src}:{idx}")))
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
            Data::Model(s) | Data::Clip(s) | Data::Vae(s) | Data::Conditioning(s) => Ok(s.clone()),
            _ => Err(fail(format!("input '{name}' expects a model value"))),
        }
    }

    fn int(&self, node: &Value, name: &str) -> Result<i64, Stop> {
        let v = self.input(node, name)?;
        v.as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .ok_or_else(|| fail(format!("input '{name}' must be an integer")))
    }

    fn float(&self, node: &Value, name: &str) -> Result<f64, Stop> {
        self.input(node, name)?.as_f64().ok_or_else(|| fail(format!("input '{name}' must be a number")))
    }

    fn string(&self, node: &Value, name: &str) -> Result<String, Stop> {
        let v = self.input(node, name)?;
        Ok(v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))
    }

    async fn run_node(&mut self, id: &str) -> Result<(Vec<Data>, Option<Value>), Stop> {
        let node = self.item.graph[id].clone();
        let class = self.class_of(id);
        let injected = self.shared.lock().failures.get(&class).cloned();
        if let Some(message) = injected {
            return Err(fail(message));
        }
        let delay = self.step_delay();
        if delay > 0 && !matches!(class.as_str(), "KSampler" | "StationSteps") {
            tokio::time::sleep(Duration::from_millis(delay)).await;
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
                imgs.iter_mut().for_each(imageops::invert);
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
                let delay = if delay > 0 { delay } else { step_ms };
                let preview = imgs.first().map(|i| shrink(i, 64));
                for step in 1..=steps {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    self.progress(id, step, steps, preview.as_ref()).await?;
                }
                vec![Data::Image(imgs)]
            }
            "StationFail" => return Err(fail(self.string(n, "message")?)),
            "CheckpointLoaderSimple" => {
                let name = self.string(n, "ckpt_name")?;
                if !self.shared.options.checkpoints.contains(&name) {
                    return Err(fail(format!("checkpoint not found: {name}")));
                }
                vec![Data::Model(name.clone()), Data::Clip(name.clone()), Data::Vae(name)]
            }
            "LoraLoader" => {
                let name = self.string(n, "lora_name")?;
                if !self.shared.options.loras.contains(&name) {
                    return Err(fail(format!("lora not found: {name}")));
                }
                let sm = self.float(n, "strength_model")?;
                let sc = self.float(n, "strength_clip")?;
                let model = self.text_of(n, "model")?;
                let clip = self.text_of(n, "clip")?;
                vec![Data::Model(format!("{model}+{name}:{sm}")), Data::Clip(format!("{clip}+{name}:{sc}"))]
            }
            "CLIPTextEncode" => {
                let clip = self.text_of(n, "clip")?;
                vec![Data::Conditioning(format!("{clip}|{}", self.string(n, "text")?))]
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
                if !self.shared.options.upscale_models.contains(&name) {
                    return Err(fail(format!("upscale model not found: {name}")));
                }
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

    /// Saves PNGs as `<prefix>_00001_.png`, continuing from the highest counter on "disk".
    fn save(&self, imgs: &[RgbImage], prefix: &str, kind: &str) -> Result<Value, Stop> {
        let (sub, base) = match prefix.rsplit_once('/') {
            Some((s, b)) => (s.to_owned(), b.to_owned()),
            None => (String::new(), prefix.to_owned()),
        };
        let mut st = self.shared.lock();
        let start = st
            .files
            .keys()
            .filter(|(k, s, _)| k == kind && *s == sub)
            .filter_map(|(_, _, f)| f.strip_prefix(&format!("{base}_"))?.strip_suffix("_.png")?.parse::<u32>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let mut refs = Vec::new();
        for (i, img) in imgs.iter().enumerate() {
            let filename = format!("{base}_{:05}_.png", start + i as u32);
            let mut buf = Vec::new();
            img.write_to(&mut Cursor::new(&mut buf), ImageFormat::Png)
                .map_err(|e| fail(format!("cannot encode PNG: {e}")))?;
            st.files.insert((kind.to_owned(), sub.clone(), filename.clone()), buf);
            refs.push(json!({"filename": filename, "subfolder": sub, "type": kind}));
        }
        Ok(json!({ "images": refs }))
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
