//! The fake's websocket traffic has the recorded shape: same message types in the same order,
//! with the same keys, as the real server's upscale_success transcript.

use std::io::Cursor;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use station_comfyui::{ComfyClient, SubmitRequest};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use tokio_tungstenite::tungstenite::Message;

/// (type, keys of data) for every text message; binary frames as ("binary", head).
fn shape(msgs: &[Value]) -> Vec<(String, Vec<String>)> {
    msgs.iter()
        .map(|m| match m.get("type").and_then(Value::as_str) {
            Some(t) => (t.to_owned(), m["data"].as_object().unwrap().keys().cloned().collect()),
            None => ("binary".to_owned(), vec![m["head_hex"].as_str().unwrap().to_owned()]),
        })
        .collect()
}

#[tokio::test]
async fn upscale_sequence_matches_the_recording() {
    let path = format!("{}/tests/data/upscale_success.json", env!("CARGO_MANIFEST_DIR"));
    let recorded: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();

    let fake = FakeComfy::start(FakeOptions::default()).await;
    let client = ComfyClient::new(&fake.url()).unwrap();
    let img = image::RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3]));
    let mut png = Vec::new();
    img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    client.upload_image(png, "in.png").await.unwrap();

    let client_id = "38af33ae-eb69-4cfc-b922-2c320e584157";
    let ws_url = format!("ws://127.0.0.1:{}/ws?clientId={client_id}", fake.port());
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let graph = recorded["request"]["prompt"].as_object().unwrap().clone();
    let accepted = client
        .submit(&SubmitRequest {
            prompt_id: "03b381ea-019a-4928-8280-5c29c251e43e".into(),
            graph,
            client_id: client_id.into(),
            preview_method: None,
        })
        .await
        .unwrap();
    assert_eq!(accepted.prompt_id, "03b381ea-019a-4928-8280-5c29c251e43e");

    let mut got = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        match msg {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                let done = v["type"] == "executing" && v["data"]["node"].is_null();
                got.push(v);
                if done {
                    break;
                }
            }
            Message::Binary(b) => got.push(serde_json::json!({"head_hex": format!("{:02x?}", &b[..8])})),
            _ => {}
        }
    }
    assert_eq!(shape(&got), shape(recorded["ws"].as_array().unwrap()));
    assert_eq!(got[0], recorded["ws"][0]);
    let executed = got.iter().find(|m| m["type"] == "executed").unwrap();
    let rec_executed = recorded["ws"].as_array().unwrap().iter().find(|m| m["type"] == "executed").unwrap();
    assert_eq!(executed, rec_executed);

    // History entry: same keys, same prompt array apart from the number and create_time.
    let hist: Value = reqwest_get(&format!("{}/history/03b381ea-019a-4928-8280-5c29c251e43e", fake.url())).await;
    let entry = &hist["03b381ea-019a-4928-8280-5c29c251e43e"];
    let rec_entry = &recorded["history"]["03b381ea-019a-4928-8280-5c29c251e43e"];
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(entry), keys(rec_entry));
    assert_eq!(entry["outputs"], rec_entry["outputs"]);
    assert_eq!(entry["meta"], rec_entry["meta"]);
    assert_eq!(entry["prompt"][2], rec_entry["prompt"][2]);
    assert_eq!(entry["prompt"][4], rec_entry["prompt"][4]);
    assert_eq!(keys(&entry["status"]), keys(&rec_entry["status"]));
}

async fn reqwest_get(url: &str) -> Value {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(url).await.unwrap().json().await.unwrap()
}
