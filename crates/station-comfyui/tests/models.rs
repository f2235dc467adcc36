//! Model inventories: parsed from the recorded `/object_info` and
//! `GET /models`, fetched from fake ComfyUI servers with their own model
//! folders, stored through the core at each health check, and routing that
//! sends a job only to a backend that has its model file. Every Station case
//! runs on SQLite, and on PostgreSQL when `STATION_TEST_POSTGRES_URL` is set.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use station_comfyui::inventory;
use station_comfyui::protocol::ObjectInfo;
use station_comfyui::{BackendSpec, ComfyClient, ComfyExecutor};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_core::{Config, Executor, JobStatus, Station, SubmitError, SubmitRequest, Workers};
use station_testkit::testing;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, n)| ((*k).to_owned(), (*n).to_owned())).collect()
}

/// Copies of /work/shared/comfyui/transcripts, kept in the crate so CI does not need shared/.
fn load(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

#[test]
fn the_recorded_object_info_gives_the_servers_files_and_no_built_in_options() {
    let t = load("models_queue_text.json");
    let info: ObjectInfo = serde_json::from_value(t["object_info"].clone()).unwrap();
    let found: Vec<(String, String)> = inventory::from_object_info(&info).into_iter().collect();
    // UpscaleModelLoader is the newer COMBO shape (empty), UNETLoader empty,
    // VAELoader offers only `pixel_space`, which is no file.
    assert_eq!(
        found,
        pairs(&[
            ("checkpoint", "station-random-sd15.safetensors"),
            ("lora", "station_test_3_steps_00001_.safetensors")
        ])
    );
    // The recorded GET /models lists the folders Station reads.
    let folders: Vec<String> = serde_json::from_value(t["GET /models"]["body"].clone()).unwrap();
    for (folder, _) in inventory::FOLDERS {
        assert!(folders.iter().any(|f| f == folder), "{folder} is a folder of the real server");
    }
}

#[tokio::test]
async fn a_fake_with_its_own_folders_is_listed_from_loaders_and_folders() {
    let mut more = BTreeMap::new();
    more.insert("vae".to_owned(), vec!["sdxl_vae.safetensors".to_owned()]);
    more.insert("diffusion_models".to_owned(), vec!["flux1-dev.safetensors".to_owned()]);
    let fake = FakeComfy::start(FakeOptions {
        checkpoints: vec!["sd_xl_base_1.0.safetensors".into(), "v1-5-pruned-emaonly.safetensors".into()],
        loras: vec!["ink.safetensors".into()],
        upscale_models: vec!["4x-UltraSharp.pth".into()],
        models: more,
        ..Default::default()
    })
    .await;
    let client = ComfyClient::new(&fake.url()).unwrap();
    assert!(client.model_folders().await.unwrap().unwrap().contains(&"upscale_models".to_owned()));
    assert_eq!(client.model_files("no_such_folder").await.unwrap(), None, "404 is no folder");
    let info = client.object_info().await.unwrap();
    let found: Vec<(String, String)> = inventory::fetch(&client, &info).await.unwrap().into_iter().collect();
    assert_eq!(
        found,
        pairs(&[
            ("checkpoint", "sd_xl_base_1.0.safetensors"),
            ("checkpoint", "v1-5-pruned-emaonly.safetensors"),
            ("diffusion_model", "flux1-dev.safetensors"),
            ("lora", "ink.safetensors"),
            ("upscale_model", "4x-UltraSharp.pth"),
            ("vae", "sdxl_vae.safetensors"),
        ])
    );
}

/// Two backends with different checkpoints behind a Station with workers.
struct Env {
    station: Station,
    comfy: Arc<ComfyExecutor>,
    workers: Option<Workers>,
    fakes: Vec<FakeComfy>,
    _dir: tempfile::TempDir,
}

async fn two_backends(db: &testing::TestDb) -> Env {
    let a =
        FakeComfy::start(FakeOptions { checkpoints: vec!["only_on_a_sd15.safetensors".into()], ..Default::default() })
            .await;
    let b = FakeComfy::start(FakeOptions {
        checkpoints: vec!["only_on_b_sd15.safetensors".into(), "shared_sd15.safetensors".into()],
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        Config { data_dir: dir.path().to_path_buf(), media_dir: Some(dir.path().join("media")), ..Default::default() };
    config.queue.poll_ms = 50;
    config.queue.retry_base_ms = 50;
    config.points.starting_grant = 1000;
    let (station, errors) = Station::with_store(config, db.store.clone()).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let specs = [("a", &a), ("b", &b)]
        .iter()
        .map(|(n, f)| BackendSpec { name: (*n).into(), url: f.url(), max_concurrent: 4, tags: vec![] })
        .collect();
    let comfy = ComfyExecutor::new(specs, "none").unwrap();
    station.register_executor(comfy.clone());
    comfy.check_all().await;
    let workers = Some(Workers::start(&station));
    Env { station, comfy, workers, fakes: vec![a, b], _dir: dir }
}

impl Env {
    async fn stop(mut self) {
        if let Some(w) = self.workers.take() {
            w.shutdown().await;
        }
        self.comfy.shutdown();
    }
}

fn draw(model: &str) -> SubmitRequest {
    let params: Map<String, Value> =
        json!({"prompt": "a lighthouse", "model": model, "width": 64, "height": 64, "steps": 3})
            .as_object()
            .unwrap()
            .clone();
    SubmitRequest { tool: "txt2img".into(), params, ..Default::default() }
}

#[tokio::test]
async fn jobs_go_only_to_the_backend_with_their_model_and_a_removed_model_is_refused() {
    for db in testing::all().await {
        let kind = db.kind;
        let env = two_backends(&db).await;
        let st = &env.station;
        // What the health checks stored, as every process sees it.
        let models = st.models().await.unwrap();
        let where_is = |name: &str| models.iter().find(|m| m.name == name).map(|m| m.backends.clone());
        assert_eq!(where_is("only_on_a_sd15.safetensors"), Some(vec!["a".to_owned()]), "{kind}");
        assert_eq!(where_is("shared_sd15.safetensors"), Some(vec!["b".to_owned()]), "{kind}");
        assert_eq!(where_is("4x-station.pth"), Some(vec!["a".to_owned(), "b".to_owned()]), "{kind}");

        let member = st.account("telegram", "7", "Ann").await.unwrap();
        let mut jobs = vec![];
        for (model, backend) in [("only_on_a_sd15.safetensors", "a"), ("only_on_b_sd15.safetensors", "b")] {
            for _ in 0..3 {
                jobs.push((st.submit(&member, draw(model)).await.unwrap().id, backend, model));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for (id, backend, model) in &jobs {
            let row = loop {
                let row = st.job_for(&member, id).await.unwrap();
                if row.status().is_terminal() {
                    break row;
                }
                assert!(Instant::now() < deadline, "{kind}: job {id} still {}", row.status);
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert_eq!(row.status(), JobStatus::Succeeded, "{kind}: {model}: {:?}", row.error);
            assert_eq!(row.backend.as_deref(), Some(*backend), "{kind}: {model} ran where the file is");
            assert_eq!(row.attempts, 1, "{kind}: routed right the first time");
        }

        // The file leaves b; the next check (or `station backends refresh`) stores that.
        env.fakes[1].remove_model("checkpoints", "only_on_b_sd15.safetensors");
        env.comfy.check_all().await;
        match st.submit(&member, draw("only_on_b_sd15.safetensors")).await {
            Err(SubmitError::Invalid(e)) => {
                assert_eq!(e[0].field, "model", "{kind}");
                assert!(e[0].reason.contains("only_on_a_sd15.safetensors"), "{kind}: lists what exists: {e:?}");
            }
            other => panic!("{kind}: expected a refusal before queuing, got {other:?}"),
        }
        // `backends check` says per tool and per model.
        let caps = env.comfy.capabilities(&[st.tools.get("txt2img").unwrap(), st.tools.get("upscale-model").unwrap()]);
        assert!(caps.iter().all(|(_, per_tool)| per_tool.iter().all(|(_, why)| why.is_none())), "{kind}: {caps:?}");
        let inv_b = env.comfy.inventory("b").unwrap();
        assert!(!inv_b.contains(&("checkpoint".to_owned(), "only_on_b_sd15.safetensors".to_owned())));

        // A backend that stops answering offers nothing until it is back.
        env.fakes[0].refuse_connections(true).await;
        env.comfy.check_all().await;
        let models = st.models().await.unwrap();
        let a_only = models.iter().find(|m| m.name == "only_on_a_sd15.safetensors").unwrap();
        assert!(a_only.backends.is_empty() && a_only.offline_backends == ["a"], "{kind}: {a_only:?}");
        let health = env.comfy.health().await;
        assert!(health.iter().any(|(n, up, _)| n == "a" && !up), "{kind}");
        env.stop().await;
    }
}

/// Base models from what ComfyUI exposes about a file (`GET /view_metadata`):
/// asked only for safetensors files whose names say nothing, a bounded
/// number per health check, once per file, stored with the inventory; the
/// catalog still wins, and `models list` says where each came from.
#[tokio::test]
async fn base_models_from_the_files_metadata_asked_once_and_bounded() {
    for db in testing::all().await {
        let kind = db.kind;
        // 20 anonymous checkpoints sort before the interesting ones: the first
        // check asks 16 files, the second the rest.
        let mut checkpoints: Vec<String> = (0..20).map(|i| format!("model_{i:02}.safetensors")).collect();
        checkpoints.extend(
            ["mystery.safetensors", "plain.safetensors", "sd_xl_base_1.0.safetensors", "old.ckpt"].map(String::from),
        );
        let fake =
            FakeComfy::start(FakeOptions { checkpoints, loras: vec!["ink.safetensors".into()], ..Default::default() })
                .await;
        fake.set_model_metadata(
            "checkpoints",
            "mystery.safetensors",
            Some(&json!({"modelspec.architecture": "stable-diffusion-xl-v1-base", "modelspec.title": "Mystery"})),
        );
        fake.set_model_metadata("loras", "ink.safetensors", Some(&json!({"ss_base_model_version": "sd_v1"})));
        // The name says SDXL: never asked, even though its metadata would say otherwise.
        fake.set_model_metadata(
            "checkpoints",
            "sd_xl_base_1.0.safetensors",
            Some(&json!({"modelspec.architecture": "flux-1-dev"})),
        );
        let dir = tempfile::tempdir().unwrap();
        let config = Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
        let (station, errors) = Station::with_store(config, db.store.clone()).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        let spec = BackendSpec { name: "gpu".into(), url: fake.url(), max_concurrent: 1, tags: vec![] };
        let comfy = ComfyExecutor::new(vec![spec], "none").unwrap();
        station.register_executor(comfy.clone());
        let base_of = |all: &[station_core::models::ModelInfo], name: &str| {
            let m = all.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("{kind}: no {name}"));
            (m.base_model.clone(), m.base_model_source)
        };
        use station_core::models::BaseModelSource::{Catalog, Metadata, Name, Unknown};

        comfy.check_all().await;
        assert_eq!(fake.metadata_requests(), 16, "{kind}: at most 16 files asked per check");
        let all = station.models().await.unwrap();
        assert_eq!(base_of(all.as_slice(), "mystery.safetensors"), (None, Unknown), "{kind}: not asked yet");
        assert_eq!(base_of(all.as_slice(), "sd_xl_base_1.0.safetensors"), (Some("SDXL".into()), Name), "{kind}");

        comfy.check_all().await;
        // 20 + mystery + plain + the LoRA; not the named one, not the .ckpt, not the upscale model.
        assert_eq!(fake.metadata_requests(), 23, "{kind}");
        let all = station.models().await.unwrap();
        assert_eq!(base_of(all.as_slice(), "mystery.safetensors"), (Some("SDXL".into()), Metadata), "{kind}");
        assert_eq!(base_of(all.as_slice(), "ink.safetensors"), (Some("SD1.5".into()), Metadata), "{kind}");
        assert_eq!(
            base_of(all.as_slice(), "plain.safetensors"),
            (None, Unknown),
            "{kind}: the server has no metadata (404)"
        );
        assert_eq!(base_of(all.as_slice(), "old.ckpt"), (None, Unknown), "{kind}");

        // Later checks ask nothing again, and keep what was found.
        comfy.check_all().await;
        comfy.check_all().await;
        assert_eq!(fake.metadata_requests(), 23, "{kind}: answers are kept with the inventory");
        // Another process (`station backends refresh`) recording the same files
        // without their metadata keeps what was found.
        let listed: Vec<(String, String)> = comfy.inventory("gpu").unwrap().iter().cloned().collect();
        station.record_backend_models("gpu", &listed).await.unwrap();
        let all = station.models().await.unwrap();
        assert_eq!(base_of(all.as_slice(), "mystery.safetensors"), (Some("SDXL".into()), Metadata), "{kind}");

        // The operator's catalog wins over the metadata.
        let set = station_core::models::ModelSettings { base_model: Some("SD1.5".into()), ..Default::default() };
        station.set_model("mystery.safetensors", &set, &station_core::audit::Actor::operator("test")).await.unwrap();
        let all = station.models().await.unwrap();
        assert_eq!(base_of(all.as_slice(), "mystery.safetensors"), (Some("SD1.5".into()), Catalog), "{kind}");

        // A file that leaves and comes back is asked again.
        fake.remove_model("loras", "ink.safetensors");
        comfy.check_all().await;
        fake.add_model("loras", "ink.safetensors");
        comfy.check_all().await;
        assert_eq!(fake.metadata_requests(), 24, "{kind}");
        comfy.shutdown();
    }
}

/// A real ComfyUI 0.8 busy with a training on CPU answered `/system_stats` at
/// once but took longer than the 5 s health timeout to build its large
/// `/object_info`: Station marked it down, took its models offline and
/// refused jobs for them until the next check. A backend that answers its
/// cheap routes is up; its last good lists stand while `/object_info` is
/// slow, also when it comes back from an outage slow. One that answers
/// nothing (frozen) is still down.
#[tokio::test]
async fn a_busy_backend_slow_to_list_its_nodes_stays_up_with_its_models() {
    for db in testing::all().await {
        let kind = db.kind;
        let fake =
            FakeComfy::start(FakeOptions { checkpoints: vec!["busy_sd15.safetensors".into()], ..Default::default() })
                .await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
        config.points.starting_grant = 1000;
        let (station, errors) = Station::with_store(config, db.store.clone()).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        let spec = BackendSpec { name: "gpu".into(), url: fake.url(), max_concurrent: 1, tags: vec![] };
        // Short health timeouts keep the test quick; the delay below exceeds them.
        let comfy =
            ComfyExecutor::with_health_timeouts(vec![spec], "none", (Duration::from_secs(2), Duration::from_secs(1)))
                .unwrap();
        station.register_executor(comfy.clone());
        let offered = |all: &[station_core::models::ModelInfo]| {
            all.iter().find(|m| m.name == "busy_sd15.safetensors").map(|m| m.backends.clone()).unwrap_or_default()
        };
        let member = station.account("telegram", "8", "Bo").await.unwrap();

        comfy.check_all().await;
        assert!(comfy.health().await[0].1, "{kind}: up at first");
        fake.set_object_info_delay(2_500);
        comfy.check_all().await;
        let health = comfy.health().await;
        assert!(health[0].1, "{kind}: busy is not down: {health:?}");
        assert_eq!(offered(station.models().await.unwrap().as_slice()), ["gpu"], "{kind}: its models stay offered");
        station.submit(&member, draw("busy_sd15.safetensors")).await.unwrap_or_else(|e| panic!("{kind}: {e:?}"));

        // Frozen, it answers nothing: down, its models offline.
        fake.freeze();
        comfy.check_all().await;
        assert!(!comfy.health().await[0].1, "{kind}: a frozen backend is down");
        assert!(offered(station.models().await.unwrap().as_slice()).is_empty(), "{kind}");
        // Thawed but still slow to list its nodes: up again, its models offered again.
        fake.thaw();
        comfy.check_all().await;
        assert!(comfy.health().await[0].1, "{kind}: back");
        assert_eq!(offered(station.models().await.unwrap().as_slice()), ["gpu"], "{kind}: offered again");
        comfy.shutdown();
    }
}
