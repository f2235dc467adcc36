//! The fake's model inventory, LoRA training, text outputs, queue and freeze, driven over real
//! HTTP and websockets and compared with the recordings of a real ComfyUI 0.8 (copies in
//! `tests/data`).

use std::io::Cursor;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use tokio_tungstenite::tungstenite::Message;

fn recording(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

async fn get(fake: &FakeComfy, path: &str) -> (u16, Value) {
    let resp = http().get(format!("{}{path}", fake.url())).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

async fn post(fake: &FakeComfy, path: &str, body: Value) -> (u16, String) {
    let resp = http().post(format!("{}{path}", fake.url())).json(&body).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn submit(fake: &FakeComfy, prompt: Value, client_id: &str) -> (u16, Value) {
    let (status, text) = post(fake, "/prompt", json!({"prompt": prompt, "client_id": client_id})).await;
    (status, serde_json::from_str(&text).unwrap())
}

async fn upload(fake: &FakeComfy, name: &str, bytes: Vec<u8>, subfolder: &str) -> Value {
    let form = reqwest::multipart::Form::new()
        .part("image", reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()))
        .text("overwrite", "true")
        .text("subfolder", subfolder.to_owned());
    let resp = http().post(format!("{}/upload/image", fake.url())).multipart(form).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.unwrap()
}

fn png(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb(rgb));
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

struct Ws(tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>);

impl Ws {
    async fn connect(fake: &FakeComfy, client_id: &str) -> Ws {
        let url = format!("ws://127.0.0.1:{}/ws?clientId={client_id}", fake.port());
        Ws(tokio_tungstenite::connect_async(url).await.unwrap().0)
    }

    /// The next text message, or `None` if nothing comes within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Value> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.0.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(t.as_str()).unwrap()),
                Ok(Some(Ok(_))) => continue,
                Ok(other) => panic!("websocket ended: {other:?}"),
            }
        }
    }

    /// Text messages up to and including `executing` with `node: null` for `prompt_id`.
    async fn until_done(&mut self, prompt_id: &str) -> Vec<Value> {
        let mut got = Vec::new();
        loop {
            let msg = self.next(Duration::from_secs(10)).await.expect("prompt did not finish");
            let done =
                msg["type"] == "executing" && msg["data"]["node"].is_null() && msg["data"]["prompt_id"] == prompt_id;
            got.push(msg);
            if done {
                return got;
            }
        }
    }
}

/// (type, data keys) per message, the shape the recordings pin down.
fn shape(msgs: &[Value]) -> Vec<(String, Vec<String>)> {
    msgs.iter()
        .filter(|m| m.get("type").is_some())
        .map(|m| (m["type"].as_str().unwrap().to_owned(), m["data"].as_object().unwrap().keys().cloned().collect()))
        .collect()
}

fn executing_nodes(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m["type"] == "executing" && m["data"]["node"].is_string())
        .map(|m| m["data"]["node"].as_str().unwrap().to_owned())
        .collect()
}

fn txt2img(ckpt: &str) -> Value {
    json!({
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 16, "height": 16, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 2, "cfg": 7.0, "sampler_name": "euler",
              "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0],
              "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "t"}}
    })
}

#[tokio::test]
async fn model_folders_follow_changes_in_listings_object_info_and_validation() {
    let rec = recording("models_queue_text.json");
    let mut models = std::collections::BTreeMap::new();
    models.insert("vae".to_owned(), vec!["sdxl_vae.safetensors".to_owned()]);
    models.insert("clip".to_owned(), vec!["t5xxl.safetensors".to_owned()]);
    let fake = FakeComfy::start(FakeOptions {
        checkpoints: vec!["b.safetensors".into(), "a.safetensors".into()],
        models,
        ..FakeOptions::default()
    })
    .await;

    assert_eq!(get(&fake, "/models").await, (200, rec["GET /models"]["body"].clone()));
    assert_eq!(get(&fake, "/models/checkpoints").await, (200, json!(["a.safetensors", "b.safetensors"])));
    assert_eq!(get(&fake, "/models/upscale_models").await, (200, json!(["4x-station.pth"])));
    assert_eq!(get(&fake, "/models/text_encoders").await, (200, json!(["t5xxl.safetensors"])));
    assert_eq!(get(&fake, "/models/diffusion_models").await, (200, json!([])));
    // Unknown folders, and the legacy names the real server only maps internally: bare 404.
    assert_eq!(get(&fake, "/models/clip").await, (404, Value::Null));
    assert_eq!(get(&fake, "/models/no_such_folder").await, (404, Value::Null));

    fake.set_models("diffusion_models", &["flux1-dev.safetensors"]);
    fake.add_model("embeddings", "easynegative.safetensors");
    fake.add_model("upscale_models", "2x-other.pth");
    assert_eq!(get(&fake, "/embeddings").await, (200, json!(["easynegative"])));
    let (_, info) = get(&fake, "/object_info").await;
    assert_eq!(
        info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0],
        json!(["a.safetensors", "b.safetensors"])
    );
    assert_eq!(info["UNETLoader"]["input"]["required"]["unet_name"][0], json!(["flux1-dev.safetensors"]));
    assert_eq!(info["VAELoader"]["input"]["required"]["vae_name"][0], json!(["sdxl_vae.safetensors", "pixel_space"]));
    assert_eq!(info["CLIPLoader"]["input"]["required"]["clip_name"][0], json!(["t5xxl.safetensors"]));
    assert_eq!(
        info["LoraLoaderModelOnly"]["input"]["required"]["lora_name"][0],
        json!(["station-test-lora.safetensors"])
    );
    assert_eq!(
        info["UpscaleModelLoader"]["input"]["required"]["model_name"],
        json!(["COMBO", {"multiselect": false, "options": ["2x-other.pth", "4x-station.pth"]}])
    );
    // Apart from the lists, the loaders are the recorded definitions.
    for node in ["CheckpointLoaderSimple", "LoraLoader", "UNETLoader", "VAELoader", "PreviewAny", "PrimitiveString"] {
        let mut ours = info[node].clone();
        let mut recorded = rec["object_info"][node].clone();
        for v in [&mut ours, &mut recorded] {
            for input in ["ckpt_name", "lora_name", "unet_name", "vae_name"] {
                if let Some(spec) = v.pointer_mut(&format!("/input/required/{input}/0")) {
                    *spec = json!([]);
                }
            }
        }
        assert_eq!(ours, recorded, "{node}");
    }
    let (_, one) = get(&fake, "/object_info/UNETLoader").await;
    assert_eq!(one["UNETLoader"]["input"]["required"]["unet_name"][0], json!(["flux1-dev.safetensors"]));

    // A checkpoint the server does not have: the real 400.
    let (status, body) = submit(&fake, txt2img("missing.safetensors"), "c1").await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({
            "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                      "details": "", "extra_info": {}},
            "node_errors": {"4": {
                "errors": [{
                    "type": "value_not_in_list",
                    "message": "Value not in list",
                    "details": "ckpt_name: 'missing.safetensors' not in ['a.safetensors', 'b.safetensors']",
                    "extra_info": {
                        "input_name": "ckpt_name",
                        "input_config": [["a.safetensors", "b.safetensors"],
                                         {"tooltip": "The name of the checkpoint (model) to load."}],
                        "received_value": "missing.safetensors"
                    }
                }],
                "dependent_outputs": ["9"],
                "class_type": "CheckpointLoaderSimple"
            }}
        })
    );
    // Once the file is there the same prompt runs; once removed it fails again.
    fake.add_model("checkpoints", "missing.safetensors");
    let mut ws = Ws::connect(&fake, "c1").await;
    let (status, body) = submit(&fake, txt2img("missing.safetensors"), "c1").await;
    assert_eq!(status, 200, "{body}");
    let msgs = ws.until_done(body["prompt_id"].as_str().unwrap()).await;
    assert!(msgs.iter().any(|m| m["type"] == "execution_success"));
    assert_eq!(executing_nodes(&msgs), ["4", "5", "7", "6", "3", "8", "9"], "the recorded txt2img order");
    fake.remove_model("checkpoints", "missing.safetensors");
    assert_eq!(submit(&fake, txt2img("missing.safetensors"), "c1").await.0, 400);

    // A v3 combo (UpscaleModelLoader) fails the same way, its config being the COMBO spec.
    let upscale = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "8x.pth"}},
        "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "u"}}
    });
    let (status, body) = submit(&fake, upscale, "c1").await;
    assert_eq!(status, 400);
    let e = &body["node_errors"]["2"]["errors"][0];
    assert_eq!(e["details"], "model_name: '8x.pth' not in ['2x-other.pth', '4x-station.pth']");
    assert_eq!(e["extra_info"]["input_config"][0], "COMBO");

    // Another instance has its own inventory.
    let other = FakeComfy::start(FakeOptions::default()).await;
    assert_eq!(get(&other, "/models/diffusion_models").await, (200, json!([])));
    assert_eq!(fake.models("unet"), ["flux1-dev.safetensors"]);
}

/// `GET /view_metadata/{folder}?filename=…` answers as `server.py` does: the header's
/// `__metadata__` object, or a bare 404 for everything else.
#[tokio::test]
async fn view_metadata_answers_like_the_server() {
    let fake = FakeComfy::start(FakeOptions {
        checkpoints: vec!["mystery.safetensors".into(), "plain.safetensors".into(), "old.ckpt".into()],
        models: [("unet".to_owned(), vec!["dit.safetensors".to_owned()])].into_iter().collect(),
        ..Default::default()
    })
    .await;
    let meta = json!({"modelspec.architecture": "stable-diffusion-xl-v1-base", "modelspec.title": "Mystery"});
    fake.set_model_metadata("checkpoints", "mystery.safetensors", Some(&meta));
    fake.set_model_metadata("unet", "dit.safetensors", Some(&json!({"modelspec.architecture": "flux-1-dev"})));
    fake.set_model_metadata("checkpoints", "old.ckpt", Some(&json!({"format": "pt"})));
    let resp = http()
        .get(format!("{}/view_metadata/checkpoints?filename=mystery.safetensors", fake.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    assert_eq!(resp.json::<Value>().await.unwrap(), meta);
    // Legacy folder names are mapped, as `folder_paths.get_full_path` maps them.
    let flux = json!({"modelspec.architecture": "flux-1-dev"});
    assert_eq!(get(&fake, "/view_metadata/unet?filename=dit.safetensors").await, (200, flux.clone()));
    assert_eq!(get(&fake, "/view_metadata/diffusion_models?filename=dit.safetensors").await, (200, flux));
    for path in [
        "/view_metadata/checkpoints?filename=plain.safetensors", // a header without __metadata__
        "/view_metadata/checkpoints?filename=old.ckpt",          // not a safetensors file
        "/view_metadata/checkpoints?filename=gone.safetensors",  // no such file
        "/view_metadata/loras?filename=mystery.safetensors",     // not in that folder
        "/view_metadata/nowhere?filename=mystery.safetensors",   // no such folder
        "/view_metadata/checkpoints",                            // no file name
    ] {
        assert_eq!(get(&fake, path).await, (404, Value::Null), "{path}");
    }
    // Taken away, and once the file is gone: 404 again.
    fake.set_model_metadata("unet", "dit.safetensors", None);
    assert_eq!(get(&fake, "/view_metadata/unet?filename=dit.safetensors").await.0, 404);
    fake.remove_model("checkpoints", "mystery.safetensors");
    assert_eq!(get(&fake, "/view_metadata/checkpoints?filename=mystery.safetensors").await.0, 404);
    assert_eq!(fake.metadata_requests(), 11);
}

/// Uploads the recorded dataset: img0..3.png (different colours) and their captions.
async fn upload_dataset(fake: &FakeComfy, folder: &str) -> Vec<Value> {
    let colours = [[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30]];
    let mut answers = Vec::new();
    for (i, rgb) in colours.iter().enumerate() {
        answers.push(upload(fake, &format!("img{i}.png"), png(16, 16, *rgb), folder).await);
        let caption = format!("a photo of stationtok, picture {i}\n");
        answers.push(upload(fake, &format!("img{i}.txt"), caption.into_bytes(), folder).await);
    }
    answers
}

fn safetensors_header(file: &[u8]) -> Value {
    let len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&file[8..8 + len]).unwrap();
    let end = header.as_object().unwrap().values().map(|t| t["data_offsets"][1].as_u64().unwrap()).max().unwrap();
    assert_eq!(8 + len + end as usize, file.len(), "header offsets cover the data exactly");
    header
}

#[tokio::test]
async fn lora_training_runs_like_the_recording() {
    let rec = recording("train_lora_sd15.json");
    let fake = FakeComfy::start(FakeOptions::default()).await;
    let folder = "station_ds_8c6d7b80";
    let client_id = "5f1e5511-5ec1-4ac7-95ea-e403635073a5";
    let answers = upload_dataset(&fake, folder).await;
    let recorded_answers: Vec<Value> = rec["uploads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| serde_json::from_str(u["body"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(answers, recorded_answers);

    let (_, info) = get(&fake, "/object_info").await;
    let training = recording("object_info_training.json");
    assert_eq!(info["LoadImageTextDataSetFromFolder"], training["LoadImageTextDataSetFromFolder"]);
    assert_eq!(info["SaveLoRA"], training["SaveLoRA"]);
    assert_eq!(
        info["TrainLoraNode"]["input"]["required"]["existing_lora"][1]["options"],
        json!(["station-test-lora.safetensors", "[None]"])
    );

    let mut ws = Ws::connect(&fake, client_id).await;
    let (status, accepted) = submit(&fake, rec["request"]["prompt"].clone(), client_id).await;
    assert_eq!(status, 200);
    assert_eq!(accepted["node_errors"], json!({}));
    let pid = accepted["prompt_id"].as_str().unwrap().to_owned();
    let mut msgs = vec![];
    msgs.extend(ws.until_done(&pid).await);
    assert_eq!(shape(&msgs), shape(rec["ws"].as_array().unwrap()));
    assert_eq!(executing_nodes(&msgs), ["1", "2", "4", "3", "5", "6"]);
    let progress: Vec<&Value> = msgs.iter().filter(|m| m["type"] == "progress").map(|m| &m["data"]).collect();
    let recorded_progress: Vec<&Value> =
        rec["ws"].as_array().unwrap().iter().filter(|m| m["type"] == "progress").map(|m| &m["data"]).collect();
    for (ours, theirs) in progress.iter().zip(&recorded_progress) {
        assert_eq!((&ours["value"], &ours["max"], &ours["node"]), (&theirs["value"], &theirs["max"], &theirs["node"]));
    }
    assert_eq!(progress.len(), 3);
    assert!(!msgs.iter().any(|m| m["type"] == "executed"), "SaveLoRA reports no outputs");

    let (_, history) = get(&fake, &format!("/history/{pid}")).await;
    let entry = &history[&pid];
    let recorded_entry = rec["history"].as_object().unwrap().values().next().unwrap();
    assert_eq!(entry["outputs"], json!({}));
    assert_eq!(entry["meta"], json!({}));
    assert_eq!(entry["status"]["status_str"], "success");
    assert_eq!(entry["prompt"][2], recorded_entry["prompt"][2]);
    assert_eq!(entry["prompt"][4], recorded_entry["prompt"][4]);
    assert_eq!(shape(&[json!({"type": "x", "data": entry})]), shape(&[json!({"type": "x", "data": recorded_entry})]));

    // The file: fetched by /view, listed as a LoRA of this server only.
    let name = "station_test_3_steps_00001_.safetensors";
    let resp =
        http().get(format!("{}/view?type=output&subfolder=loras&filename={name}", fake.url())).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    let file = resp.bytes().await.unwrap().to_vec();
    let header = safetensors_header(&file);
    assert!(
        header.as_object().unwrap().keys().all(|k| k.ends_with(".lora_down.weight") || k.ends_with(".lora_up.weight"))
    );
    assert_eq!(header.as_object().unwrap().values().next().unwrap()["shape"][0], 4, "rank 4, F32");
    assert_eq!(get(&fake, "/models/loras").await.1, json!(["station-test-lora.safetensors", name]));
    let (_, lora) = get(&fake, "/object_info/LoraLoader").await;
    assert_eq!(lora["LoraLoader"]["input"]["required"]["lora_name"][0], json!(["station-test-lora.safetensors", name]));
    let other = FakeComfy::start(FakeOptions::default()).await;
    assert_eq!(get(&other, "/models/loras").await.1, json!(["station-test-lora.safetensors"]));
    // SaveLoRA writes no `__metadata__`: the server has none to show.
    assert_eq!(get(&fake, &format!("/view_metadata/loras?filename={name}")).await, (404, Value::Null));

    let runs = fake.trainings();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run.prompt_id, pid);
    assert_eq!(run.folder.as_deref(), Some(folder));
    assert_eq!(run.images, ["img0.png", "img1.png", "img2.png", "img3.png"]);
    assert_eq!(run.captions[2], "a photo of stationtok, picture 2");
    assert_eq!((run.steps, run.steps_done, run.rank, run.batch_size, run.seed), (3, 3, 4, 1, 1));
    assert_eq!(run.learning_rate, 0.0005);
    assert_eq!(run.settings["optimizer"], "AdamW");
    assert_eq!(run.saved_file.as_deref(), Some("loras/station_test_3_steps_00001_.safetensors"));

    // A different seed trains different weights; the save counter goes on like ComfyUI's
    // (it reads the "3" of "_3_steps_" as the last counter).
    let mut graph = rec["request"]["prompt"].clone();
    graph["5"]["inputs"]["seed"] = json!(2);
    let (_, accepted) = submit(&fake, graph, client_id).await;
    ws.until_done(accepted["prompt_id"].as_str().unwrap()).await;
    let second = fake.trainings().pop().unwrap();
    assert_eq!(second.saved_file.as_deref(), Some("loras/station_test_3_steps_00004_.safetensors"));
    let file2 = fake.file("output", "loras", "station_test_3_steps_00004_.safetensors").unwrap();
    assert_ne!(file, file2);
    safetensors_header(&file2);
}

#[tokio::test]
async fn training_honours_delay_interrupt_and_failures() {
    let rec = recording("train_lora_sd15.json");
    let fake = FakeComfy::start(FakeOptions::default()).await;
    upload_dataset(&fake, "ds").await;
    let mut graph = rec["request"]["prompt"].clone();
    graph["2"]["inputs"]["folder"] = json!("ds");
    graph["5"]["inputs"]["steps"] = json!(50);
    let mut ws = Ws::connect(&fake, "t").await;

    // Slow steps: interrupt after the second one.
    fake.set_step_delay(40);
    let (_, accepted) = submit(&fake, graph.clone(), "t").await;
    let pid = accepted["prompt_id"].as_str().unwrap().to_owned();
    loop {
        let m = ws.next(Duration::from_secs(5)).await.unwrap();
        if m["type"] == "progress" && m["data"]["value"] == 2 {
            break;
        }
    }
    post(&fake, "/interrupt", json!({"prompt_id": pid})).await;
    let msgs = ws.until_done(&pid).await;
    let stop = msgs.iter().find(|m| m["type"] == "execution_interrupted").unwrap();
    assert_eq!(stop["data"]["node_type"], "TrainLoraNode");
    let run = fake.trainings().pop().unwrap();
    assert!(run.steps_done >= 2 && run.steps_done < 50, "{run:?}");
    assert_eq!(run.saved_file, None);

    // Injected failure: the node raises as the real one would.
    fake.set_step_delay(0);
    fake.fail_node("TrainLoraNode", "CUDA out of memory (simulated)");
    graph["5"]["inputs"]["steps"] = json!(3);
    let (_, accepted) = submit(&fake, graph.clone(), "t").await;
    let msgs = ws.until_done(accepted["prompt_id"].as_str().unwrap()).await;
    let error = msgs.iter().find(|m| m["type"] == "execution_error").unwrap();
    assert_eq!(error["data"]["node_type"], "TrainLoraNode");
    assert_eq!(error["data"]["exception_message"], "CUDA out of memory (simulated)\n");
    fake.clear_failures();

    // A folder that is not there fails validation with the folder list.
    graph["2"]["inputs"]["folder"] = json!("nope");
    let (status, body) = submit(&fake, graph, "t").await;
    assert_eq!(status, 400);
    assert_eq!(body["node_errors"]["2"]["errors"][0]["details"], "folder: 'nope' not in ['3d', 'ds']");
}

#[tokio::test]
async fn text_outputs_and_the_caption_node() {
    let rec = recording("models_queue_text.json");
    let fake = FakeComfy::start(FakeOptions::default()).await;
    let client_id = "85a82b1e-caa7-4332-935a-d2a789f51d5e";
    let mut ws = Ws::connect(&fake, client_id).await;
    ws.next(Duration::from_secs(2)).await; // the hello status

    let request = &rec["text_output_request"];
    let (status, accepted) = submit(&fake, request["prompt"].clone(), client_id).await;
    assert_eq!(status, 200);
    let pid = accepted["prompt_id"].as_str().unwrap().to_owned();
    let msgs = ws.until_done(&pid).await;
    let recorded = rec["text_output_ws"].as_array().unwrap();
    assert_eq!(shape(&msgs), shape(recorded));
    let executed = msgs.iter().find(|m| m["type"] == "executed").unwrap();
    let rec_executed = recorded.iter().find(|m| m["type"] == "executed").unwrap();
    assert_eq!(executed["data"]["output"], rec_executed["data"]["output"]);
    assert_eq!(executed["data"]["node"], rec_executed["data"]["node"]);
    let (_, history) = get(&fake, &format!("/history/{pid}")).await;
    let rec_entry = rec["text_output_history"].as_object().unwrap().values().next().unwrap();
    assert_eq!(history[&pid]["outputs"], rec_entry["outputs"]);
    assert_eq!(history[&pid]["meta"], rec_entry["meta"]);

    // A caption tool: LoadImage → StationCaption → PreviewAny.
    let (_, info) = get(&fake, "/object_info/StationCaption").await;
    assert_eq!(info["StationCaption"]["output"], json!(["STRING"]));
    upload(&fake, "red.png", png(64, 64, [210, 25, 20]), "").await;
    let caption = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "red.png"}},
        "2": {"class_type": "StationCaption", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}
    });
    let (status, accepted) = submit(&fake, caption, client_id).await;
    assert_eq!(status, 200, "{accepted}");
    let pid = accepted["prompt_id"].as_str().unwrap().to_owned();
    let msgs = ws.until_done(&pid).await;
    let executed = msgs.iter().find(|m| m["type"] == "executed").unwrap();
    assert_eq!(executed["data"]["output"], json!({"text": ["a photo of a mostly red square, 64x64"]}));
    let (_, history) = get(&fake, &format!("/history/{pid}")).await;
    assert_eq!(history[&pid]["outputs"]["3"], json!({"text": ["a photo of a mostly red square, 64x64"]}));

    // Lists: a dataset's captions through PreviewAny give one text per image.
    upload_dataset(&fake, "ds").await;
    let texts = json!({
        "1": {"class_type": "LoadImageTextDataSetFromFolder", "inputs": {"folder": "ds"}},
        "2": {"class_type": "StationCaption", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}
    });
    let (_, accepted) = submit(&fake, texts, client_id).await;
    let msgs = ws.until_done(accepted["prompt_id"].as_str().unwrap()).await;
    let executed = msgs.iter().find(|m| m["type"] == "executed").unwrap();
    assert_eq!(
        executed["data"]["output"]["text"],
        json!([
            "a photo of a mostly red square, 16x16",
            "a photo of a mostly green square, 16x16",
            "a photo of a mostly blue square, 16x16",
            "a photo of a mostly yellow square, 16x16"
        ])
    );
}

/// `/queue` once the worker has taken a prompt (it does so at once; polling keeps slow machines happy).
async fn queue_with_running(fake: &FakeComfy) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, queue) = get(fake, "/queue").await;
        if !queue["queue_running"].as_array().unwrap().is_empty() || Instant::now() > deadline {
            return queue;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn pending_ids(queue: &Value) -> Vec<String> {
    queue["queue_pending"].as_array().unwrap().iter().map(|i| i[1].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn queue_lists_runs_one_at_a_time_and_deletes_pending() {
    let rec = recording("models_queue_text.json");
    let fake = FakeComfy::start(FakeOptions::default()).await;
    assert_eq!(get(&fake, "/queue").await.1, json!({"queue_running": [], "queue_pending": []}));
    let external = fake.enqueue_external(3, 150);
    let queue = queue_with_running(&fake).await;
    let recorded = &rec["GET /queue (1 running, 2 pending)"];
    // Same entry layout as the recording: [number, id, prompt, extra_data, outputs].
    let layout = |item: &Value| {
        let a = item.as_array().unwrap();
        (
            a.len(),
            a[0].is_number(),
            a[1].is_string(),
            a[3].as_object().unwrap().keys().cloned().collect::<Vec<_>>(),
            a[4].clone(),
        )
    };
    assert_eq!(layout(&queue["queue_running"][0]), layout(&recorded["queue_running"][0]));
    assert_eq!(layout(&queue["queue_pending"][0]), layout(&recorded["queue_pending"][0]));
    // The recorded graph, with this call's step time and our prefix.
    let mut graph = recorded["queue_running"][0][2].clone();
    graph["2"]["inputs"]["step_ms"] = json!(150);
    graph["3"]["inputs"]["filename_prefix"] = json!("external");
    assert_eq!(queue["queue_running"][0][2], graph);
    assert_eq!(queue["queue_running"][0][1], external[0]);
    assert_eq!(pending_ids(&queue), external[1..]);

    // Station's prompt waits behind the others.
    let mut ws = Ws::connect(&fake, "station").await;
    let ours = json!({
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "mine"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
    });
    let (_, accepted) = submit(&fake, ours, "station").await;
    let pid = accepted["prompt_id"].as_str().unwrap().to_owned();
    assert_eq!(accepted["number"], 3);
    let (_, queue) = get(&fake, "/queue").await;
    assert_eq!(pending_ids(&queue), [external[1].clone(), external[2].clone(), pid.clone()]);

    // Deleting a pending prompt: 200 with an empty body; its history stays {}.
    let (status, body) = post(&fake, "/queue", json!({"delete": [external[2]]})).await;
    assert_eq!((status, body.as_str()), (200, ""));
    let (_, queue) = get(&fake, "/queue").await;
    assert_eq!(pending_ids(&queue), [external[1].clone(), pid.clone()]);

    // FIFO, one at a time: ours starts only after the other remaining prompt finished.
    let mut max_running = 0;
    let started = loop {
        let (_, queue) = get(&fake, "/queue").await;
        max_running = max_running.max(queue["queue_running"].as_array().unwrap().len());
        if let Some(m) = ws.next(Duration::from_millis(10)).await
            && m["type"] == "execution_start"
        {
            break m;
        }
    };
    assert_eq!(started["data"]["prompt_id"], pid);
    assert_eq!(max_running, 1);
    for done in &external[..2] {
        assert_eq!(get(&fake, &format!("/history/{done}")).await.1[done]["status"]["status_str"], "success");
    }
    ws.until_done(&pid).await;
    assert_eq!(get(&fake, &format!("/history/{}", external[2])).await.1, json!({}));

    // {"clear": true} empties the pending list.
    let more = fake.enqueue_external(3, 200);
    assert_eq!(pending_ids(&queue_with_running(&fake).await).len(), 2);
    let (status, _) = post(&fake, "/queue", json!({"clear": true})).await;
    assert_eq!(status, 200);
    let (_, queue) = get(&fake, "/queue").await;
    assert_eq!(queue["queue_pending"], json!([]));
    assert_eq!(queue["queue_running"][0][1], more[0]);
}

#[tokio::test]
async fn frozen_server_accepts_but_answers_nothing_until_thawed() {
    let fake = FakeComfy::start(FakeOptions::default()).await;
    let mut ws = Ws::connect(&fake, "f").await;
    let slow = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "StationSteps", "inputs": {"image": ["1", 0], "steps": 6, "step_ms": 30}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "f"}}
    });
    let (_, accepted) = submit(&fake, slow, "f").await;
    let pid = accepted["prompt_id"].as_str().unwrap().to_owned();
    loop {
        let m = ws.next(Duration::from_secs(5)).await.unwrap();
        if m["type"] == "progress" {
            break;
        }
    }
    fake.freeze();
    assert!(fake.is_frozen());
    tokio::time::sleep(Duration::from_millis(50)).await;
    while ws.next(Duration::from_millis(20)).await.is_some() {} // frames already on the wire

    // The port accepts, but the request hangs.
    let client = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let err = client.get(format!("{}/system_stats", fake.url())).send().await.unwrap_err();
    assert!(err.is_timeout() && !err.is_connect(), "{err:?}");
    // A request sent while frozen is answered after the thaw.
    let held = tokio::spawn({
        let url = format!("{}/queue", fake.url());
        async move { http().get(url).send().await.map(|r| r.status().as_u16()) }
    });
    // No websocket frame and no new websocket either; the prompt does not advance.
    assert!(ws.next(Duration::from_millis(300)).await.is_none());
    let url = format!("ws://127.0.0.1:{}/ws?clientId=late", fake.port());
    assert!(tokio::time::timeout(Duration::from_millis(200), tokio_tungstenite::connect_async(url)).await.is_err());

    fake.thaw();
    assert_eq!(held.await.unwrap().unwrap(), 200);
    let msgs = ws.until_done(&pid).await;
    let steps: Vec<&Value> = msgs.iter().filter(|m| m["type"] == "progress").map(|m| &m["data"]["value"]).collect();
    assert!(!steps.is_empty() && steps.len() < 6, "progress resumed where it stopped: {steps:?}");
    assert!(msgs.iter().any(|m| m["type"] == "execution_success"));
}
