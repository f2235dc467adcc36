//! Every recorded transcript parses through the protocol types with the recorded values.

use serde_json::Value;
use station_comfyui::client::validation_error;
use station_comfyui::protocol::{
    BinaryFrame, HistoryEntry, ObjectInfo, QueueResponse, QueueState, SubmitAccepted, UploadedImage,
    ValidationErrorBody, WsMessage,
};
use station_comfyui::{ComfyError, ProgressTracker, PromptEvent};

/// Copies of /work/shared/comfyui/transcripts, kept in the crate so CI does not need shared/.
fn load(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn ws_messages(t: &Value) -> Vec<WsMessage> {
    t["ws"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m.get("type").is_some())
        .map(|m| WsMessage::parse(&m.to_string()).unwrap())
        .collect()
}

fn history(t: &Value) -> HistoryEntry {
    let (_, entry) = t["history"].as_object().unwrap().iter().next().unwrap();
    serde_json::from_value(entry.clone()).unwrap()
}

#[test]
fn upscale_success_parses() {
    let t = load("upscale_success.json");
    let accepted: SubmitAccepted = serde_json::from_value(t["response"].clone()).unwrap();
    assert_eq!(accepted.prompt_id, "03b381ea-019a-4928-8280-5c29c251e43e");
    assert_eq!(accepted.number, 3);
    let msgs = ws_messages(&t);
    assert!(
        matches!(&msgs[0], WsMessage::Status { queue_remaining: 0, sid: Some(s) } if s == "38af33ae-eb69-4cfc-b922-2c320e584157")
    );
    let executed = msgs
        .iter()
        .find_map(|m| match m {
            WsMessage::Executed { node, output, .. } => Some((node.clone(), output.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(executed.0, "3");
    assert_eq!(executed.1.images[0].filename, "upscaled_00001_.png");
    assert_eq!(executed.1.images[0].kind, "output");
    assert!(matches!(msgs.last().unwrap(), WsMessage::Executing { node: None, prompt_id: Some(_) }));
    let h = history(&t);
    assert!(h.succeeded());
    assert_eq!(h.prompt_id(), Some("03b381ea-019a-4928-8280-5c29c251e43e"));
    assert_eq!(h.output_images()["3"][0].filename, "upscaled_00001_.png");
}

#[test]
fn progress_with_previews_parses_and_tracks() {
    let t = load("progress_with_previews.json");
    let msgs = ws_messages(&t);
    let progress: Vec<(f64, f64)> = msgs
        .iter()
        .filter_map(|m| match m {
            WsMessage::Progress { value, max, node, .. } => {
                assert_eq!(node.as_deref(), Some("2"));
                Some((*value, *max))
            }
            _ => None,
        })
        .collect();
    assert_eq!(progress, vec![(1.0, 4.0), (2.0, 4.0), (3.0, 4.0), (4.0, 4.0)]);
    let binary = t["ws"].as_array().unwrap().iter().filter(|m| m.get("binary_len").is_some()).count();
    assert_eq!(binary, 4);
    // Replay the prompt's events through the tracker: monotonic, ends at 1.
    let mut tracker = ProgressTracker::new(3);
    let mut last = 0.0;
    for m in msgs {
        let ev = match m {
            WsMessage::ExecutionCached { nodes, .. } => PromptEvent::Cached { nodes },
            WsMessage::Executing { node: Some(node), .. } => PromptEvent::Executing { node },
            WsMessage::Executing { node: None, .. } => PromptEvent::Finished,
            WsMessage::Progress { node, value, max, .. } => PromptEvent::Progress { node, value, max },
            WsMessage::ProgressState { nodes, .. } => PromptEvent::ProgressState { nodes },
            WsMessage::ExecutionSuccess { .. } => PromptEvent::Success,
            _ => continue,
        };
        let f = tracker.observe(&ev);
        assert!(f >= last && f <= 1.0, "{f} after {last}");
        last = f;
    }
    assert_eq!(last, 1.0);
}

#[test]
fn binary_preview_frame_parses_as_jpeg() {
    use base64::Engine;
    let t = load("binary_preview_frame.json");
    let b64 = t["frames"][0].as_str().unwrap();
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    let BinaryFrame::Preview { mime, bytes } = BinaryFrame::parse(&raw).unwrap() else {
        panic!("type 1 frame expected");
    };
    assert_eq!(mime, "image/jpeg");
    let img = image::load_from_memory(&bytes).unwrap();
    assert!(img.width() > 0);
    let executed = WsMessage::parse(&t["executed_temp_output"].to_string()).unwrap();
    let WsMessage::Executed { output, .. } = executed else { panic!() };
    assert_eq!(output.images[0].kind, "temp");
}

#[test]
fn type4_frame_with_metadata_parses() {
    let meta = br#"{"node_id":"3","prompt_id":"p1","display_node_id":"3","parent_node_id":null,"real_node_id":"3","image_type":"image/png"}"#;
    let mut frame = vec![0, 0, 0, 4];
    frame.extend((meta.len() as u32).to_be_bytes());
    frame.extend(meta);
    frame.extend(b"PNGDATA");
    let BinaryFrame::PreviewWithMetadata { metadata, mime, bytes } = BinaryFrame::parse(&frame).unwrap() else {
        panic!("type 4 expected");
    };
    assert_eq!(metadata.prompt_id.as_deref(), Some("p1"));
    assert_eq!(metadata.node_id.as_deref(), Some("3"));
    assert_eq!(mime, "image/png");
    assert_eq!(&bytes[..], b"PNGDATA");
    // A length beyond the frame is an error, not a panic.
    let mut bad = vec![0, 0, 0, 4, 0, 0, 1, 0];
    bad.extend(b"{}");
    assert!(BinaryFrame::parse(&bad).unwrap_err().contains("metadata length"));
    assert!(BinaryFrame::parse(&[0, 0]).is_err());
}

#[test]
fn execution_error_parses() {
    let t = load("execution_error.json");
    let err = ws_messages(&t)
        .into_iter()
        .find_map(|m| match m {
            WsMessage::ExecutionError(e) => Some(e),
            _ => None,
        })
        .unwrap();
    assert_eq!(err.node_id, "2");
    assert_eq!(err.node_type, "StationFail");
    assert_eq!(err.exception_message, "out of memory (simulated)\n");
    assert_eq!(err.exception_type, "RuntimeError");
    assert_eq!(err.executed, vec!["1"]);
    assert_eq!(err.traceback.len(), 5);
    let h = history(&t);
    assert!(!h.succeeded());
    assert_eq!(h.execution_error().unwrap().node_type, "StationFail");
}

#[test]
fn interrupted_parses() {
    let t = load("interrupted.json");
    let msgs = ws_messages(&t);
    assert!(msgs.iter().any(|m| matches!(m, WsMessage::ExecutionCached { nodes, .. } if nodes == &["1"])));
    let int = msgs
        .iter()
        .find_map(|m| match m {
            WsMessage::ExecutionInterrupted(i) => Some(i.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!((int.node_id.as_str(), int.node_type.as_str()), ("2", "StationSteps"));
    let h = history(&t);
    assert_eq!(h.interrupted().unwrap().node_id, "2");
    assert_eq!(h.status.unwrap().status_str, "error");
}

#[test]
fn validation_errors_parse_and_name_the_input() {
    let t = load("validation_error_missing_input.json");
    let body: ValidationErrorBody = serde_json::from_value(t["response"].clone()).unwrap();
    let ComfyError::Validation { message, node_errors } = validation_error(body) else { panic!() };
    assert_eq!(message, "Prompt outputs failed validation");
    assert_eq!(node_errors.len(), 1);
    assert_eq!(node_errors[0].node_id, "1");
    assert_eq!(node_errors[0].class_type, "EmptyImage");
    assert_eq!(node_errors[0].kind, "required_input_missing");
    assert_eq!(node_errors[0].input_name.as_deref(), Some("color"));

    let t = load("validation_error_unknown_node.json");
    let body: ValidationErrorBody = serde_json::from_value(t["response"].clone()).unwrap();
    let err = validation_error(body);
    assert!(err.to_string().contains("NoSuchNode does not exist"), "{err}");
    assert!(!err.is_transient());

    // Some errors carry node_errors as an empty list.
    let body: ValidationErrorBody = serde_json::from_str(
        r#"{"error":{"type":"no_prompt","message":"No prompt provided","details":"","extra_info":{}},"node_errors":[]}"#,
    )
    .unwrap();
    assert!(body.node_errors.is_empty());
}

#[test]
fn small_answers_parse() {
    let q: QueueResponse = serde_json::from_value(load("queue.json")).unwrap();
    assert_eq!(QueueState::from(q), QueueState::default());
    let up: UploadedImage = serde_json::from_value(load("upload_image.json")["response"].clone()).unwrap();
    assert_eq!((up.name.as_str(), up.kind.as_str()), ("in.png", "input"));
    assert_eq!(up.load_image_name(), "in.png");
}

#[test]
fn object_info_choices() {
    let info: ObjectInfo = serde_json::from_value(load("object_info_subset.json")).unwrap();
    assert!(info.has_node("KSampler"));
    assert!(info.0["SaveImage"].output_node);
    assert_eq!(info.choices("LoadImage", "image").unwrap(), vec!["example.png", "in.png"]);
    assert!(info.choices("KSampler", "sampler_name").unwrap().contains(&"euler".to_owned()));
    assert_eq!(info.choices("CheckpointLoaderSimple", "ckpt_name").unwrap(), Vec::<String>::new());
    assert_eq!(info.choices("KSampler", "steps"), None);
    assert_eq!(info.choices("NoSuchNode", "x"), None);
}

#[test]
fn txt2img_parses() {
    let t = load("txt2img_sd15.json");
    let msgs = ws_messages(&t);
    let steps = msgs.iter().filter(|m| matches!(m, WsMessage::Progress { node: Some(n), .. } if n == "3")).count();
    assert_eq!(steps, 3);
    let h = history(&t);
    assert_eq!(h.prompt[3]["preview_method"], "latent2rgb");
    assert_eq!(h.output_images()["9"][0].filename, "txt2img_00001_.png");
}
