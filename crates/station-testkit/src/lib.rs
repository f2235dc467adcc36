//! Shared test support for every crate's integration tests.
//!
//! Front ends never depend on `station-store` (they reach data only through
//! `Station`); their tests still need fresh databases on both engines and,
//! for assertions, a way to read rows. This crate is that one door for
//! tests: [`TestDb`] and [`on_every_db!`] for databases, [`dream_tool`] and
//! [`install_tools`] for the tool every chat and HTTP test uses, and
//! [`station`] to open a `Station` on a test database.

pub mod anvil;

use std::path::Path;

use serde_json::{Value, json};
use station_core::{Config, Station};

pub use station_store::on_every_db;
pub use station_store::testing::{self, TestDb, postgres_url};
/// The store behind a [`TestDb`], for tests that read or seed rows directly.
pub use station_store::{self as store, Store};

/// The built-in text-to-image template turned into a public tool `id` with
/// tiny defaults (64×64, 3 steps), so it runs in milliseconds on the fake ComfyUI.
pub fn dream_tool(id: &str) -> Value {
    let text = include_str!("../../station-tools/builtin/txt2img-sd15.json");
    let mut tool: Value = serde_json::from_str(text).expect("the built-in template is JSON");
    tool["id"] = json!(id);
    tool["name"] = json!("Dream");
    tool["command"] = json!(id);
    tool["visibility"] = json!("public");
    tool["inputs"]["width"]["default"] = json!(64);
    tool["inputs"]["height"]["default"] = json!(64);
    tool["inputs"]["steps"]["default"] = json!(3);
    tool
}

/// A built-in template (`txt2img-sd15`, `txt2img-sdxl`, `txt2img-flux`,
/// `img2img-sd15`; `upscale-model`, public already, takes a model input) as a
/// public tool: templates hard-wired to a file are hidden,
/// so only administrators may run them; a copy in the tools folder with the
/// same id replaces the built-in for everyone.
pub fn public_builtin(id: &str) -> Value {
    let text = match id {
        "txt2img-sd15" => include_str!("../../station-tools/builtin/txt2img-sd15.json"),
        "txt2img-sdxl" => include_str!("../../station-tools/builtin/txt2img-sdxl.json"),
        "txt2img-flux" => include_str!("../../station-tools/builtin/txt2img-flux.json"),
        "img2img-sd15" => include_str!("../../station-tools/builtin/img2img-sd15.json"),
        "upscale-model" => include_str!("../../station-tools/builtin/upscale-model.json"),
        other => panic!("{other} is not a built-in template"),
    };
    let mut tool: Value = serde_json::from_str(text).expect("the built-in template is JSON");
    tool["visibility"] = json!("public");
    tool
}

/// Writes each tool as `<id>.json` into `dir` (created if missing).
pub fn install_tools(dir: &Path, tools: &[Value]) {
    std::fs::create_dir_all(dir).expect("tools folder");
    for tool in tools {
        let id = tool["id"].as_str().expect("a tool has an id");
        std::fs::write(dir.join(format!("{id}.json")), tool.to_string()).expect("write tool");
    }
}

/// Writes the `dream` tool ([`dream_tool`]) into `dir`.
pub fn install_dream(dir: &Path) {
    install_tools(dir, &[dream_tool("dream")]);
}

/// A Station on `db` with `config` (its data folder should be a temporary
/// folder of the test's). Tool files that fail to load fail the test.
pub fn station(db: &TestDb, config: Config) -> Station {
    let (station, errors) = Station::with_store(config, db.store.clone()).expect("station opens");
    assert!(errors.is_empty(), "tool files failed to load: {errors:?}");
    station
}

/// A GIF of `n` frames of `w`×`h`, alternating two colours: an animation
/// made in the test, for the frame limits (`media.max_frames`).
pub fn animated_gif(n: usize, w: u32, h: u32) -> Vec<u8> {
    use image::codecs::gif::GifEncoder;
    use image::{Delay, Frame, Rgba, RgbaImage};
    let mut out = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut out);
        let frames = (0..n).map(|i| {
            let c = if i % 2 == 0 { Rgba([255, 0, 0, 255]) } else { Rgba([0, 0, 255, 255]) };
            Frame::from_parts(RgbaImage::from_pixel(w, h, c), 0, 0, Delay::from_numer_denom_ms(40, 1))
        });
        enc.encode_frames(frames).expect("encode the test GIF");
    }
    out
}
