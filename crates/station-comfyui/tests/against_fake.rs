//! The client against the fake ComfyUI: success, progress, previews, errors, cancels and faults.

use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use image::{ImageFormat, Rgb, RgbImage};
use serde_json::{Value, json};
use station_comfyui::{
    BackendSocket, ComfyClient, ComfyError, Graph, ProgressTracker, PromptEvent, RemoteState, RunOptions,
    SubmitRequest, reconcile, run_prompt,
};
use station_comfyui_fake::{FakeComfy, FakeOptions};

struct Env {
    fake: FakeComfy,
    client: ComfyClient,
    socket: Arc<BackendSocket>,
}

async fn env() -> Env {
    env_with(FakeOptions::default()).await
}

async fn env_with(options: FakeOptions) -> Env {
    let fake = FakeComfy::start(options).await;
    let client = ComfyClient::with_timeout(&fake.url(), Duration::from_secs(5)).unwrap();
    let socket = Arc::new(BackendSocket::connect(&fake.url(), &uuid::Uuid::new_v4().to_string()).unwrap());
    assert!(socket.wait_connected(Duration::from_secs(5)).await);
    Env { fake, client, socket }
}

fn opts() -> RunOptions {
    RunOptions {
        preview_method: Some("auto".into()),
        poll_interval: Duration::from_millis(300),
        unreachable_timeout: Duration::from_secs(3),
    }
}

fn graph(v: Value) -> Graph {
    v.as_object().unwrap().clone()
}

fn pid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// 4×4 PNG whose pixel (x, y) is (60x, 60y, 200).
fn test_png() -> Vec<u8> {
    let img = RgbImage::from_fn(4, 4, |x, y| Rgb([(60 * x) as u8, (60 * y) as u8, 200]));
    let mut buf = Vec::new();
    img.write_to(&mut Cursor::new(&mut buf), ImageFormat::Png).unwrap();
    buf
}

/// `EmptyImage` → `ImageInvert` → `SaveImage` gives what a real ComfyUI 0.8
/// gives: it inverts in float32 and truncates when saving, so many channels
/// come out one below `255 - c` (seen on a real server: colour 0x3779B1 saved
/// as (200, 133, 77), not (200, 134, 78)).
#[tokio::test]
async fn inverted_pixels_are_what_a_real_server_saves() {
    let e = env().await;
    let g = graph(json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0x3779B1}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inv"}}
    }));
    let o = run_prompt(&e.client, &e.socket, &g, &pid(), &opts(), |_| {}).await.unwrap();
    let png = e.client.view(&o.images()[0]).await.unwrap();
    let px = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(px.get_pixel(0, 0).0, [200, 133, 77]);
    // Values seen on the real server: 0 → 255, 1 → 254, 200 → 54, 255 → 0.
    let g = graph(json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0x0001C8}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inv"}}
    }));
    let o = run_prompt(&e.client, &e.socket, &g, &pid(), &opts(), |_| {}).await.unwrap();
    let png = e.client.view(&o.images()[0]).await.unwrap();
    assert_eq!(image::load_from_memory(&png).unwrap().to_rgb8().get_pixel(0, 0).0, [255, 254, 54]);
}

fn steps_graph(steps: u32, step_ms: u32) -> Graph {
    graph(json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0x336699}},
        "2": {"class_type": "StationSteps", "inputs": {"image": ["1", 0], "steps": steps, "step_ms": step_ms}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "steps"}}
    }))
}

#[tokio::test]
async fn upscale_success_pixels_and_progress() {
    let e = env().await;
    let up = e.client.upload_image(test_png(), "in.png").await.unwrap();
    assert_eq!(up.name, "in.png");
    assert_eq!(e.fake.uploads(), vec!["in.png"]);
    let g = graph(json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": up.load_image_name()}},
        "2": {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact", "scale_by": 2.0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "upscaled"}}
    }));
    let mut tracker = ProgressTracker::for_graph(&g);
    let mut fractions = Vec::new();
    let id = pid();
    let outcome = run_prompt(&e.client, &e.socket, &g, &id, &opts(), |ev| {
        fractions.push(tracker.observe(ev));
    })
    .await
    .unwrap();
    assert_eq!(outcome.prompt_id, id);
    let images = outcome.images();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].filename, "upscaled_00001_.png");
    assert_eq!(outcome.outputs.keys().collect::<Vec<_>>(), vec!["3"]);
    let png = e.client.view(&images[0]).await.unwrap();
    let out = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(out.dimensions(), (8, 8));
    for y in 0..8 {
        for x in 0..8 {
            assert_eq!(*out.get_pixel(x, y), Rgb([(60 * (x / 2)) as u8, (60 * (y / 2)) as u8, 200]), "pixel {x},{y}");
        }
    }
    assert!(fractions.windows(2).all(|w| w[0] <= w[1]), "{fractions:?}");
    assert_eq!(*fractions.last().unwrap(), 1.0);
    // The server's prompt carried our prompt id and the socket's client id.
    let last = e.fake.last_prompt().unwrap();
    assert_eq!(last["prompt_id"], json!(id));
    assert_eq!(last["client_id"], json!(e.socket.client_id()));
    // The second save counts on like ComfyUI.
    let again = run_prompt(&e.client, &e.socket, &g, &pid(), &opts(), |_| {}).await.unwrap();
    assert_eq!(again.images()[0].filename, "upscaled_00002_.png");
}

#[tokio::test]
async fn step_progress_and_jpeg_previews() {
    let e = env().await;
    let mut tracker = ProgressTracker::new(3);
    let mut fractions = Vec::new();
    let mut previews = Vec::new();
    let mut steps = Vec::new();
    run_prompt(&e.client, &e.socket, &steps_graph(4, 5), &pid(), &opts(), |ev| {
        fractions.push(tracker.observe(ev));
        match ev {
            PromptEvent::Preview { mime, bytes } => previews.push((mime.clone(), bytes.clone())),
            PromptEvent::Progress { value, max, .. } => steps.push((*value, *max)),
            _ => {}
        }
    })
    .await
    .unwrap();
    assert_eq!(steps, vec![(1.0, 4.0), (2.0, 4.0), (3.0, 4.0), (4.0, 4.0)]);
    assert_eq!(previews.len(), 4);
    for (mime, bytes) in &previews {
        assert_eq!(mime, "image/jpeg");
        let img = image::load_from_memory_with_format(bytes, ImageFormat::Jpeg).unwrap();
        assert!(img.width() >= 1);
    }
    assert!(fractions.windows(2).all(|w| w[0] <= w[1]));
    assert!(fractions.iter().any(|f| *f > 0.3 && *f < 0.9), "intermediate progress: {fractions:?}");
    assert_eq!(*fractions.last().unwrap(), 1.0);

    // preview_method none: no previews.
    let mut none = 0;
    let o = RunOptions { preview_method: Some("none".into()), ..opts() };
    run_prompt(&e.client, &e.socket, &steps_graph(3, 1), &pid(), &o, |ev| {
        if matches!(ev, PromptEvent::Preview { .. }) {
            none += 1;
        }
    })
    .await
    .unwrap();
    assert_eq!(none, 0);
}

#[tokio::test]
async fn validation_errors_name_node_and_input() {
    let e = env().await;
    let submit = |g: Graph| SubmitRequest { prompt_id: pid(), graph: g, client_id: "c".into(), preview_method: None };
    let missing = graph(json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}
    }));
    let err = e.client.submit(&submit(missing)).await.unwrap_err();
    assert!(!err.is_transient());
    let ComfyError::Validation { message, node_errors } = &err else { panic!("{err}") };
    assert_eq!(message, "Prompt outputs failed validation");
    assert_eq!(node_errors[0].node_id, "1");
    assert_eq!(node_errors[0].kind, "required_input_missing");
    assert_eq!(node_errors[0].input_name.as_deref(), Some("color"));
    assert!(err.to_string().contains("input 'color'"), "{err}");

    let unknown = graph(json!({"1": {"class_type": "NoSuchNode", "inputs": {}}}));
    let err = e.client.submit(&submit(unknown)).await.unwrap_err();
    assert!(err.to_string().contains("Cannot execute because node NoSuchNode does not exist."), "{err}");

    let no_outputs = graph(
        json!({"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}),
    );
    let err = e.client.submit(&submit(no_outputs)).await.unwrap_err();
    assert!(err.to_string().contains("Prompt has no outputs"), "{err}");

    let mut bad_ckpt = txt2img(1);
    bad_ckpt["4"]["inputs"]["ckpt_name"] = json!("nope.safetensors");
    let err = e.client.submit(&submit(bad_ckpt)).await.unwrap_err();
    let ComfyError::Validation { node_errors, .. } = &err else { panic!("{err}") };
    assert_eq!((node_errors[0].node_id.as_str(), node_errors[0].kind.as_str()), ("4", "value_not_in_list"));
    assert_eq!(node_errors[0].input_name.as_deref(), Some("ckpt_name"));

    e.fake.set_missing_nodes(&["ImageInvert"]);
    let info = e.client.object_info().await.unwrap();
    assert!(!info.has_node("ImageInvert"));
    let inv = graph(json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}}
    }));
    let err = e.client.submit(&submit(inv)).await.unwrap_err();
    assert!(err.to_string().contains("ImageInvert does not exist"), "{err}");
    assert_eq!(e.fake.prompts_received(), 5);
    assert!(e.client.queue().await.unwrap().pending.is_empty());
}

fn txt2img(seed: u64) -> Graph {
    graph(json!({
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "station-random-sd15.safetensors"}},
        "10": {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": "station-test-lora.safetensors", "strength_model": 0.8, "strength_clip": 0.8}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["10", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["10", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 24, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": 3, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0, "model": ["10", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "txt2img"}}
    }))
}

#[tokio::test]
async fn txt2img_is_seed_deterministic_and_models_are_listed() {
    let e = env().await;
    let info = e.client.object_info().await.unwrap();
    assert_eq!(info.choices("CheckpointLoaderSimple", "ckpt_name").unwrap(), vec!["station-random-sd15.safetensors"]);
    assert_eq!(info.choices("LoraLoader", "lora_name").unwrap(), vec!["station-test-lora.safetensors"]);
    let stats = e.client.system_stats().await.unwrap();
    assert_eq!(stats.system.comfyui_version.as_deref(), Some("0.8.0"));
    // A real 0.8 server reports `sys.platform`, not `os.name`.
    assert_eq!(stats.system.os, "linux");
    assert_eq!(stats.devices[0].kind, "cpu");

    let fetch = async |seed| {
        let mut steps = 0;
        let o = run_prompt(&e.client, &e.socket, &txt2img(seed), &pid(), &opts(), |ev| {
            if matches!(ev, PromptEvent::Progress { .. }) {
                steps += 1;
            }
        })
        .await
        .unwrap();
        let png = e.client.view(&o.images()[0]).await.unwrap();
        (image::load_from_memory(&png).unwrap().to_rgb8(), steps)
    };
    let (a, steps_a) = fetch(42).await;
    let (b, _) = fetch(42).await;
    let (c, _) = fetch(43).await;
    assert_eq!(a.dimensions(), (32, 24));
    assert_eq!(steps_a, 3);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[tokio::test]
async fn execution_errors_surface_with_message() {
    let e = env().await;
    let g = graph(json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "StationFail", "inputs": {"image": ["1", 0], "message": "out of memory (simulated)"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "fail"}}
    }));
    let id = pid();
    let err = run_prompt(&e.client, &e.socket, &g, &id, &opts(), |_| {}).await.unwrap_err();
    let ComfyError::Execution { node_id, node_type, exception_message, exception_type } = &err else { panic!("{err}") };
    assert_eq!((node_id.as_str(), node_type.as_str()), ("2", "StationFail"));
    assert_eq!(exception_message, "out of memory (simulated)");
    assert_eq!(exception_type, "RuntimeError");
    assert!(!err.is_transient());
    assert!(matches!(reconcile(&e.client, &id).await.unwrap(), RemoteState::Failed(m) if m.contains("out of memory")));

    e.fake.fail_node("ImageBlur", "CUDA error: device-side assert");
    let blur = graph(json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 1.0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "b"}}
    }));
    let err = run_prompt(&e.client, &e.socket, &blur, &pid(), &opts(), |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("CUDA error: device-side assert"), "{err}");
    e.fake.clear_failures();
    run_prompt(&e.client, &e.socket, &blur, &pid(), &opts(), |_| {}).await.unwrap();
}

type RunHandle = tokio::task::JoinHandle<Result<station_comfyui::PromptOutcome, ComfyError>>;
type Events = Arc<Mutex<Vec<PromptEvent>>>;

async fn wait_for<F: Fn(&PromptEvent) -> bool>(events: &Arc<Mutex<Vec<PromptEvent>>>, f: F) {
    for _ in 0..400 {
        if events.lock().unwrap().iter().any(&f) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("event never arrived: {:?}", events.lock().unwrap());
}

fn spawn_run(e: &Env, g: Graph, id: &str) -> (RunHandle, Events) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let (client, socket, id, ev) = (e.client.clone(), e.socket.clone(), id.to_owned(), events.clone());
    let h = tokio::spawn(async move {
        run_prompt(&client, &socket, &g, &id, &opts(), |x| ev.lock().unwrap().push(x.clone())).await
    });
    (h, events)
}

#[tokio::test]
async fn cancel_pending_and_interrupt_running() {
    let e = env().await;
    let a = pid();
    let (run_a, events_a) = spawn_run(&e, steps_graph(300, 10), &a);
    wait_for(&events_a, |ev| matches!(ev, PromptEvent::Progress { .. })).await;
    let b = pid();
    e.client
        .submit(&SubmitRequest {
            prompt_id: b.clone(),
            graph: steps_graph(2, 1),
            client_id: "other".into(),
            preview_method: None,
        })
        .await
        .unwrap();
    let q = e.client.queue().await.unwrap();
    assert_eq!(q.running, vec![a.clone()]);
    assert_eq!(q.pending, vec![b.clone()]);
    assert_eq!(reconcile(&e.client, &b).await.unwrap(), RemoteState::Pending);
    assert_eq!(reconcile(&e.client, &a).await.unwrap(), RemoteState::Running);
    e.client.cancel_pending(&b).await.unwrap();
    assert!(e.client.queue().await.unwrap().pending.is_empty());
    assert_eq!(reconcile(&e.client, &b).await.unwrap(), RemoteState::Unknown);
    // Interrupting another id leaves the running prompt alone.
    e.client.interrupt(&b).await.unwrap();
    e.client.interrupt(&a).await.unwrap();
    let err = run_a.await.unwrap().unwrap_err();
    assert!(matches!(&err, ComfyError::Interrupted { prompt_id } if *prompt_id == a), "{err}");
    let RemoteState::Failed(msg) = reconcile(&e.client, &a).await.unwrap() else { panic!() };
    assert!(msg.contains("interrupted"), "{msg}");
}

#[tokio::test]
async fn dropped_websocket_is_reconciled_through_history() {
    let e = env().await;
    let id = pid();
    let (run, events) = spawn_run(&e, steps_graph(40, 10), &id);
    wait_for(&events, |ev| matches!(ev, PromptEvent::Progress { .. })).await;
    e.fake.drop_websockets();
    let outcome = run.await.unwrap().unwrap();
    assert_eq!(outcome.images()[0].filename, "steps_00001_.png");
    let events = events.lock().unwrap();
    let disc = events.iter().position(|ev| *ev == PromptEvent::Disconnected).expect("disconnect seen");
    assert!(events[disc..].contains(&PromptEvent::Reconnected));
}

#[tokio::test]
async fn quick_prompt_finishing_during_a_socket_gap_is_found_in_history() {
    let e = env().await;
    e.fake.set_step_delay(30);
    let id = pid();
    let (run, events) = spawn_run(&e, steps_graph(3, 1), &id);
    wait_for(&events, |ev| matches!(ev, PromptEvent::Started)).await;
    // Closed until the prompt is done: all its remaining events are lost.
    e.fake.drop_websockets();
    let outcome = run.await.unwrap().unwrap();
    assert_eq!(outcome.outputs["3"].len(), 1);
}

#[tokio::test]
async fn restart_mid_prompt_is_lost() {
    let e = env().await;
    let id = pid();
    let (run, events) = spawn_run(&e, steps_graph(300, 10), &id);
    wait_for(&events, |ev| matches!(ev, PromptEvent::Progress { .. })).await;
    e.fake.restart();
    let err = run.await.unwrap().unwrap_err();
    assert!(matches!(&err, ComfyError::Lost { prompt_id } if *prompt_id == id), "{err}");
    assert!(err.is_transient());
    assert_eq!(reconcile(&e.client, &id).await.unwrap(), RemoteState::Unknown);
    // The restarted server works and the resubmission succeeds under the same id.
    run_prompt(&e.client, &e.socket, &steps_graph(2, 1), &id, &opts(), |_| {}).await.unwrap();
}

#[tokio::test]
async fn refused_connections_are_transient() {
    let e = env().await;
    e.fake.refuse_connections(true).await;
    let err = e.client.system_stats().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(matches!(err, ComfyError::Connect { .. }), "{err}");
    let err = e
        .client
        .submit(&SubmitRequest {
            prompt_id: pid(),
            graph: steps_graph(1, 1),
            client_id: "c".into(),
            preview_method: None,
        })
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    e.fake.refuse_connections(false).await;
    assert!(e.socket.wait_connected(Duration::from_secs(10)).await);
    run_prompt(&e.client, &e.socket, &steps_graph(1, 1), &pid(), &opts(), |_| {}).await.unwrap();
}

#[tokio::test]
async fn uncached_option_reruns_every_node() {
    let e = env_with(FakeOptions { cache: false, ..FakeOptions::default() }).await;
    for _ in 0..2 {
        let mut cached = None;
        run_prompt(&e.client, &e.socket, &steps_graph(1, 1), &pid(), &opts(), |ev| {
            if let PromptEvent::Cached { nodes } = ev {
                cached = Some(nodes.clone());
            }
        })
        .await
        .unwrap();
        assert_eq!(cached, Some(vec![]));
    }
    // With the default cache, an unchanged node is reported cached the second time.
    let e = env().await;
    run_prompt(&e.client, &e.socket, &steps_graph(1, 1), &pid(), &opts(), |_| {}).await.unwrap();
    let mut cached = None;
    run_prompt(&e.client, &e.socket, &steps_graph(1, 1), &pid(), &opts(), |ev| {
        if let PromptEvent::Cached { nodes } = ev {
            cached = Some(nodes.clone());
        }
    })
    .await
    .unwrap();
    assert_eq!(cached, Some(vec!["1".to_owned(), "2".to_owned()]));
}
