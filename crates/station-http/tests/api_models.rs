//! `GET /api/v1/models` and the model input of the tools API over real HTTP,
//! on SQLite and PostgreSQL: what the backends offer (as the executor records
//! it through the core) becomes the list, the tool's choices and schema, and
//! a model nobody offers is refused with the field named.

mod common;

use common::serve;
use serde_json::{Value, json};
use station_core::models::ModelSettings;
use station_testkit::testing;

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, n)| ((*k).to_owned(), (*n).to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_list_tool_choices_and_refusals() {
    for db in testing::all().await {
        let s = serve(&db, false, |_| {}).await;
        let k = s.kind;
        let empty = s.get("/api/v1/models", &s.alice_key).await;
        assert_eq!((empty.status.as_u16(), empty.body.clone()), (200, json!({"models": []})), "{k}");
        let ids = |body: &Value| -> Vec<String> {
            body["tools"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect()
        };
        let before = s.get("/api/v1/tools", &s.alice_key).await;
        assert!(!ids(&before.body).contains(&"txt2img".to_owned()), "{k}: no model, no tool");

        s.station
            .record_backend_models(
                "gpu1",
                &files(&[
                    ("checkpoint", "sd_xl_base_1.0.safetensors"),
                    ("checkpoint", "v1-5-pruned-emaonly.safetensors"),
                    ("checkpoint", "secret.safetensors"),
                    ("upscale_model", "4x-UltraSharp.pth"),
                ]),
            )
            .await
            .unwrap();
        let hide = ModelSettings { hidden: Some(true), ..Default::default() };
        s.station.set_model("secret.safetensors", &hide, &station_core::audit::Actor::operator("test")).await.unwrap();
        let label = ModelSettings { label: Some("SDXL base".into()), default: Some(true), ..Default::default() };
        s.station
            .set_model("sd_xl_base_1.0.safetensors", &label, &station_core::audit::Actor::operator("test"))
            .await
            .unwrap();

        let list = s.get("/api/v1/models", &s.alice_key).await;
        assert_eq!(list.status.as_u16(), 200, "{k}: {}", list.body);
        let names: Vec<&str> =
            list.body["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.safetensors", "4x-UltraSharp.pth"],
            "{k}"
        );
        let xl = &list.body["models"][0];
        assert_eq!(
            (&xl["kind"], &xl["label"], &xl["base_model"], &xl["default"], &xl["backends"]),
            (&json!("checkpoint"), &json!("SDXL base"), &json!("SDXL"), &json!(true), &json!(1)),
            "{k}"
        );
        let admin = s.get("/api/v1/models", &s.admin_key).await;
        assert!(
            admin.body["models"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "secret.safetensors" && m["hidden"] == true)
        );

        let tools = s.get("/api/v1/tools", &s.alice_key).await;
        let listed = ids(&tools.body);
        assert_eq!(listed.first().map(String::as_str), Some("txt2img"), "{k}: text to image comes first: {listed:?}");
        assert!(listed.contains(&"upscale-model".to_owned()) && listed.contains(&"img2img".to_owned()), "{k}");

        let tool = s.get("/api/v1/tools/txt2img", &s.alice_key).await;
        let model = tool.body["inputs"].as_array().unwrap().iter().find(|i| i["name"] == "model").unwrap().clone();
        assert_eq!(model["type"], "model");
        assert_eq!(model["model_kind"], "checkpoint");
        assert_eq!(model["choices"], json!(["sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.safetensors"]), "{k}");
        assert_eq!(model["choice_labels"], json!(["SDXL base (SDXL)", "v1-5-pruned-emaonly (SD1.5)"]), "{k}");
        assert_eq!(model["default"], "sd_xl_base_1.0.safetensors", "{k}: the default first");
        assert_eq!(tool.body["input_schema"]["properties"]["model"]["enum"], model["choices"], "{k}");
        assert_eq!(tool.body["base_model_defaults"]["SDXL"]["width"], 1024, "{k}");

        let refused = s
            .post(
                "/api/v1/generations",
                &s.alice_key,
                json!({"tool": "txt2img", "params": {"prompt": "x", "model": "secret.safetensors"}}),
            )
            .await;
        assert_eq!(refused.status.as_u16(), 400, "{k}: {}", refused.body);
        assert_eq!(refused.fields(), ["model"], "{k}: {}", refused.body);
        let reason = refused.body["error"]["fields"][0]["reason"].as_str().unwrap().to_owned();
        let available = reason.split_once("available: ").map(|(_, a)| a).unwrap_or_default();
        assert_eq!(
            available, "sd_xl_base_1.0.safetensors, v1-5-pruned-emaonly.safetensors",
            "{k}: hidden ones not listed: {reason}"
        );

        let quote =
            s.post("/api/v1/points/quote", &s.alice_key, json!({"tool": "txt2img", "params": {"prompt": "x"}})).await;
        assert_eq!(quote.status.as_u16(), 200, "{k}: {}", quote.body);

        let doc = s.get("/api/v1/openapi.json", &s.alice_key).await;
        assert!(doc.body["paths"]["/api/v1/models"]["get"].is_object(), "{k}: documented");
        s.stop().await;
    }
}
