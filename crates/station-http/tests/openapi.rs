//! The OpenAPI document says precisely what the server accepts and answers
//! (issue 17 item 12): required fields, ranges, the `Idempotency-Key`
//! pattern, closed request bodies, typed defaults, the event stream.

use serde_json::{Value, json};

fn doc() -> Value {
    serde_json::to_value(station_http::openapi()).expect("the document serialises")
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    &doc["components"]["schemas"][name]
}

fn required(doc: &Value, name: &str) -> Vec<String> {
    schema(doc, name)["required"]
        .as_array()
        .unwrap_or_else(|| panic!("{name} lists its required fields"))
        .iter()
        .map(|v| v.as_str().expect("a name").to_owned())
        .collect()
}

fn parameter<'a>(doc: &'a Value, path: &str, method: &str, name: &str) -> &'a Value {
    doc["paths"][path][method]["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("{method} {path} has parameters"))
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} documents {name}"))
}

#[test]
fn issue17_item12_fields_always_present_are_required() {
    let doc = doc();
    // Serialised as null when unset, so always present: required, and nullable.
    let g = required(&doc, "Generation");
    for field in [
        "id",
        "status",
        "status_text",
        "queue_position",
        "backend_ahead",
        "eta_ms",
        "error",
        "rating",
        "started_at",
        "finished_at",
    ] {
        assert!(g.contains(&field.to_owned()), "Generation.{field} is required: {g:?}");
    }
    let queue_position = &schema(&doc, "Generation")["properties"]["queue_position"]["type"];
    assert_eq!(queue_position, &json!(["integer", "null"]), "queue_position may be null");
    assert!(required(&doc, "GenerationPage").contains(&"next".to_owned()));
    assert!(required(&doc, "ToolSummary").contains(&"base_model".to_owned()));
    // Left out when unset: not required.
    assert!(!required(&doc, "OutputRef").contains(&"media".to_owned()), "OutputRef.media is omitted when unset");
    // Request bodies: what the server needs, and nothing it does not.
    assert_eq!(required(&doc, "CreateGeneration"), ["tool"]);
    assert_eq!(required(&doc, "RatingRequest"), ["stars"]);
    assert_eq!(required(&doc, "QuoteRequest"), ["tool"]);
    assert!(schema(&doc, "RerunRequest")["required"].is_null(), "every rerun field is optional");
}

#[test]
fn issue17_item12_ranges_and_the_idempotency_key_pattern() {
    let doc = doc();
    for (path, name) in [("/api/v1/generations", "limit"), ("/api/v1/admin/users", "limit")] {
        let s = &parameter(&doc, path, "get", name)["schema"];
        assert_eq!((&s["minimum"], &s["maximum"]), (&json!(1), &json!(200)), "{path} ?{name}: {s}");
    }
    let stars = &schema(&doc, "RatingRequest")["properties"]["stars"];
    assert_eq!((&stars["minimum"], &stars["maximum"]), (&json!(1), &json!(5)), "{stars}");
    assert_eq!(schema(&doc, "GrantRequest")["properties"]["amount"]["minimum"], json!(1));
    for path in ["/api/v1/generations", "/api/v1/generations/{id}/rerun"] {
        let key = &parameter(&doc, path, "post", "Idempotency-Key")["schema"];
        assert_eq!(key["pattern"], json!(r"^[\x21-\x7E]{1,200}$"), "{path}: {key}");
        assert_eq!((&key["minLength"], &key["maxLength"]), (&json!(1), &json!(200)), "{path}: {key}");
    }
}

#[test]
fn issue17_item12_request_bodies_refusing_unknown_fields_are_closed() {
    let doc = doc();
    for name in ["CreateGeneration", "RerunRequest", "RatingRequest", "QuoteRequest", "PutSettings", "GrantRequest"] {
        assert_eq!(schema(&doc, name)["additionalProperties"], json!(false), "{name}: {}", schema(&doc, name));
    }
}

#[test]
fn issue17_item12_input_default_is_a_scalar_or_null() {
    let doc = doc();
    let default = &schema(&doc, "InputField")["properties"]["default"];
    let mut types: Vec<&str> = default["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("default is one of several types: {default}"))
        .iter()
        .map(|s| s["type"].as_str().expect("a type"))
        .collect();
    types.sort_unstable();
    assert_eq!(types, ["boolean", "null", "number", "string"], "{default}");
    assert!(required(&doc, "InputField").contains(&"default".to_owned()));
}

#[test]
fn issue17_item12_events_are_an_event_stream() {
    let doc = doc();
    let content = &doc["paths"]["/api/v1/generations/{id}/events"]["get"]["responses"]["200"]["content"];
    let types: Vec<&String> = content.as_object().expect("a content map").keys().collect();
    assert_eq!(types, ["text/event-stream"]);
}
