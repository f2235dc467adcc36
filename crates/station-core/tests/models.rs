//! Models from the backends through the core: what the executor records
//! becomes the catalog, the choices of `model` inputs, the tools members see,
//! the defaults, LoRAs and price of a job, and the refusal of a model no
//! backend offers. Every case runs on SQLite, and on PostgreSQL when
//! `STATION_TEST_POSTGRES_URL` is set.

use serde_json::{Map, Value, json};
use station_core::models::{BaseModelSource, ModelSettings};
use station_core::{Config, Station, SubmitError, SubmitRequest};
use station_store::testing::{self, TestDb};

struct Env {
    station: Station,
    db: TestDb,
    _dir: tempfile::TempDir,
}

async fn envs() -> Vec<Env> {
    let mut out = vec![];
    for db in testing::all().await {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
        let (station, errors) = Station::with_store(config, db.store.clone()).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        out.push(Env { station, db, _dir: dir });
    }
    out
}

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, n)| ((*k).to_owned(), (*n).to_owned())).collect()
}

fn params(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn draw(p: Value) -> SubmitRequest {
    SubmitRequest { tool: "txt2img".into(), params: params(p), ..Default::default() }
}

fn listed(station: &Station) -> Vec<String> {
    station.listed_tools(false).iter().map(|t| t.id.clone()).collect()
}

#[tokio::test]
async fn a_fresh_install_lists_text_to_image_first_once_a_backend_has_a_checkpoint() {
    for env in envs().await {
        let (st, kind) = (&env.station, env.db.kind);
        st.reload_models().await.unwrap();
        let before = listed(st);
        assert!(!before.contains(&"txt2img".to_string()), "{kind}: no model, no tool: {before:?}");
        assert!(!before.contains(&"upscale-model".to_string()), "{kind}");
        let member = st.account("telegram", "1", "Ann").await.unwrap();
        // Hidden for members (unknown tool), and for an administrator, who
        // sees it, a field error naming what is missing.
        let r = st.submit(&member, draw(json!({"prompt": "a lighthouse"}))).await;
        assert!(matches!(r, Err(SubmitError::UnknownTool(_))), "{kind}: {r:?}");
        let admin = st.account("local", "root", "Root").await.unwrap();
        st.set_account_role(&admin.id, station_core::Role::Admin, &station_core::audit::Actor::operator("test"))
            .await
            .unwrap();
        let admin = st.account_by_id(&admin.id).await.unwrap().unwrap();
        match st.submit(&admin, draw(json!({"prompt": "a lighthouse"}))).await {
            Err(SubmitError::Invalid(e)) => {
                assert_eq!(e[0].field, "model", "{kind}: {e:?}");
                assert!(e[0].reason.contains("no backend that is up has a checkpoint model"), "{kind}: {e:?}");
            }
            other => panic!("{kind}: expected a validation error, got {other:?}"),
        }

        st.record_backend_models("gpu1", &files(&[("checkpoint", "station-random-sd15.safetensors")])).await.unwrap();
        let after = listed(st);
        assert_eq!(after.first().map(String::as_str), Some("txt2img"), "{kind}: first card: {after:?}");
        assert!(!after.contains(&"upscale-model".to_string()), "{kind}: no upscale model yet");
        let tool = st.find_tool("draw", &member).unwrap();
        assert_eq!(tool.name, "Text to image");

        let job = st.submit(&member, draw(json!({"prompt": "a lighthouse"}))).await.unwrap();
        let p: Value = serde_json::from_str(&job.params).unwrap();
        assert_eq!(p["model"], "station-random-sd15.safetensors", "{kind}: the only model is the default");
        assert_eq!((p["width"].clone(), p["height"].clone()), (json!(512), json!(512)), "{kind}: SD1.5 size");
    }
}

#[tokio::test]
async fn defaults_follow_the_base_model_and_explicit_values_win() {
    for env in envs().await {
        let (st, kind) = (&env.station, env.db.kind);
        st.record_backend_models(
            "gpu1",
            &files(&[
                ("checkpoint", "sd_xl_base_1.0.safetensors"),
                ("checkpoint", "flux1-dev-fp8.safetensors"),
                ("checkpoint", "mystery.safetensors"),
            ]),
        )
        .await
        .unwrap();
        let member = st.account("telegram", "1", "Ann").await.unwrap();
        let job = |p| {
            let st = st.clone();
            let member = member.clone();
            async move {
                let row = st.submit(&member, draw(p)).await.unwrap();
                serde_json::from_str::<Value>(&row.params).unwrap()
            }
        };
        let xl = job(json!({"prompt": "x", "model": "sd_xl_base_1.0.safetensors"})).await;
        assert_eq!(
            (xl["width"].clone(), xl["steps"].clone(), xl["sampler"].clone()),
            (json!(1024), json!(25), json!("dpmpp_2m")),
            "{kind}"
        );
        let flux = job(json!({"prompt": "x", "model": "flux1-dev-fp8.safetensors"})).await;
        assert_eq!(
            (flux["width"].clone(), flux["cfg"].clone(), flux["scheduler"].clone()),
            (json!(1024), json!(1.0), json!("simple")),
            "{kind}"
        );
        let mine = job(json!({"prompt": "x", "model": "sd_xl_base_1.0.safetensors", "width": 832})).await;
        assert_eq!(mine["width"], 832, "{kind}: an explicit value beats the base model's default");
        // Unknown base model: the tool's own defaults; the catalog says so.
        let unknown = job(json!({"prompt": "x", "model": "mystery.safetensors"})).await;
        assert_eq!(unknown["width"], 512, "{kind}");
        let models = st.models().await.unwrap();
        let m = models.iter().find(|m| m.name == "mystery.safetensors").unwrap();
        assert_eq!((m.base_model.clone(), m.base_model_source), (None, BaseModelSource::Unknown), "{kind}");
        let xl = models.iter().find(|m| m.name == "sd_xl_base_1.0.safetensors").unwrap();
        assert_eq!((xl.base_model.as_deref(), xl.base_model_source), (Some("SDXL"), BaseModelSource::Name));

        // The operator names it: now SDXL defaults apply, and the label is what people see.
        let set =
            ModelSettings { base_model: Some("sdxl".into()), label: Some("Mystery XL".into()), ..Default::default() };
        let m = st.set_model("mystery.safetensors", &set, &station_core::audit::Actor::operator("test")).await.unwrap();
        assert_eq!(
            (m.base_model.as_deref(), m.base_model_source, m.label.as_str()),
            (Some("SDXL"), BaseModelSource::Catalog, "Mystery XL")
        );
        let q = station_core::audit::AuditQuery { action: Some("model.set".into()), limit: 10, ..Default::default() };
        let audited = st.audit_log(&q).await.unwrap();
        assert_eq!(audited.len(), 1, "{kind}: the catalog change is audited");
        assert_eq!(
            (audited[0].target.as_str(), audited[0].detail.as_str()),
            ("mystery.safetensors", "base model SDXL, label \"Mystery XL\", price ×1"),
            "{kind}"
        );
        let named = job(json!({"prompt": "x", "model": "Mystery XL"})).await;
        assert_eq!(
            (named["model"].clone(), named["width"].clone()),
            (json!("mystery.safetensors"), json!(1024)),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn a_model_removed_from_its_backend_is_refused_at_submit_with_what_exists() {
    for env in envs().await {
        let (st, kind) = (&env.station, env.db.kind);
        st.record_backend_models("a", &files(&[("checkpoint", "one_sd15.safetensors")])).await.unwrap();
        st.record_backend_models("b", &files(&[("checkpoint", "two_sd15.safetensors")])).await.unwrap();
        let member = st.account("telegram", "1", "Ann").await.unwrap();
        st.submit(&member, draw(json!({"prompt": "x", "model": "two_sd15.safetensors"}))).await.unwrap();
        let models = st.models().await.unwrap();
        assert_eq!(models.iter().find(|m| m.name == "two_sd15.safetensors").unwrap().backends, vec!["b"]);

        // b's next health check lists nothing; then b goes down altogether.
        st.record_backend_models("b", &[]).await.unwrap();
        let queued = env.db.store.queue_stats().await.unwrap().by_status;
        match st.submit(&member, draw(json!({"prompt": "x", "model": "two_sd15.safetensors"}))).await {
            Err(SubmitError::Invalid(e)) => {
                assert_eq!(e.len(), 1, "{kind}: {e:?}");
                assert_eq!(e[0].field, "model");
                assert!(e[0].reason.contains("unknown model \"two_sd15.safetensors\""), "{kind}: {e:?}");
                assert!(e[0].reason.contains("available: one_sd15.safetensors"), "{kind}: {e:?}");
            }
            other => panic!("{kind}: expected a validation error, got {other:?}"),
        }
        assert_eq!(env.db.store.queue_stats().await.unwrap().by_status, queued, "{kind}: nothing was queued");
        st.backend_models_offline("a").await.unwrap();
        assert!(!listed(st).contains(&"txt2img".to_string()), "{kind}: no backend up with a model");
        let quote = st.quote(&member, &draw(json!({"prompt": "x"}))).await;
        assert!(matches!(quote, Err(SubmitError::UnknownTool(_))), "{kind}: hidden again: {quote:?}");
    }
}

#[tokio::test]
async fn hidden_models_defaults_and_price_multipliers() {
    for env in envs().await {
        let (st, kind) = (&env.station, env.db.kind);
        st.record_backend_models(
            "a",
            &files(&[("checkpoint", "a_sd15.safetensors"), ("checkpoint", "b_sd15.safetensors")]),
        )
        .await
        .unwrap();
        let member = st.account("telegram", "1", "Ann").await.unwrap();
        let tool = st.find_tool("txt2img", &member).unwrap();
        let def = tool.model_input().unwrap().1;
        let names = |st: &Station| st.model_choices(def).into_iter().map(|m| m.name).collect::<Vec<_>>();
        assert_eq!(names(st), ["a_sd15.safetensors", "b_sd15.safetensors"], "{kind}");

        let b_default = ModelSettings { default: Some(true), price_multiplier: Some(2.5), ..Default::default() };
        st.set_model("b_sd15.safetensors", &b_default, &station_core::audit::Actor::operator("test")).await.unwrap();
        assert_eq!(names(st), ["b_sd15.safetensors", "a_sd15.safetensors"], "{kind}: the default first");
        let q = st.quote(&member, &draw(json!({"prompt": "x"}))).await.unwrap();
        // 1 point a second × 20 s estimate × 2.5.
        assert_eq!(q.price, 50, "{kind}: the default model's multiplier");
        let q = st.quote(&member, &draw(json!({"prompt": "x", "model": "a_sd15.safetensors"}))).await.unwrap();
        assert_eq!(q.price, 20, "{kind}");

        // Moving the default moves it off the other model of the base model.
        st.set_model(
            "a_sd15.safetensors",
            &ModelSettings { default: Some(true), ..Default::default() },
            &station_core::audit::Actor::operator("test"),
        )
        .await
        .unwrap();
        let all = st.models().await.unwrap();
        let defaults: Vec<&str> = all.iter().filter(|m| m.default).map(|m| m.name.as_str()).collect();
        assert_eq!(defaults, ["a_sd15.safetensors"], "{kind}");

        st.set_model(
            "a_sd15.safetensors",
            &ModelSettings { hidden: Some(true), ..Default::default() },
            &station_core::audit::Actor::operator("test"),
        )
        .await
        .unwrap();
        assert_eq!(names(st), ["b_sd15.safetensors"], "{kind}: hidden models are not offered");
        let r = st.submit(&member, draw(json!({"prompt": "x", "model": "a_sd15.safetensors"}))).await;
        assert!(matches!(r, Err(SubmitError::Invalid(ref e)) if e[0].field == "model"), "{kind}: {r:?}");

        let bad = st
            .set_model("nope.safetensors", &ModelSettings::default(), &station_core::audit::Actor::operator("test"))
            .await
            .unwrap_err();
        assert!(bad.to_string().contains("a_sd15.safetensors"), "{kind}: lists what exists: {bad}");
        let bad = st
            .set_model(
                "b_sd15.safetensors",
                &ModelSettings { price_multiplier: Some(0.0), ..Default::default() },
                &station_core::audit::Actor::operator("test"),
            )
            .await
            .unwrap_err();
        assert!(bad.to_string().starts_with("price_multiplier:"), "{kind}: {bad}");
    }
}

#[tokio::test]
async fn loras_apply_only_for_the_chosen_models_base_model() {
    for env in envs().await {
        let (st, kind) = (&env.station, env.db.kind);
        st.loras()
            .import(
                r#"[{"slug": "ink", "trigger_words": ["ink sketch"], "checkpoint": "SD1.5",
                     "filename": "ink_sd15.safetensors", "visibility": "public"},
                    {"slug": "flux-glow", "trigger_words": ["glow"], "checkpoint": "FLUX",
                     "filename": "glow_flux.safetensors", "visibility": "public"}]"#,
                &station_core::audit::Actor::operator("test"),
            )
            .await
            .unwrap();
        st.record_backend_models(
            "a",
            &files(&[("checkpoint", "v1-5-pruned-emaonly.safetensors"), ("checkpoint", "flux1-schnell.safetensors")]),
        )
        .await
        .unwrap();
        let member = st.account("telegram", "1", "Ann").await.unwrap();
        let applied = |model: &'static str| {
            let (st, member) = (st.clone(), member.clone());
            async move {
                let row = st
                    .submit(&member, draw(json!({"prompt": "an ink sketch with a glow", "model": model})))
                    .await
                    .unwrap();
                let p: Value = serde_json::from_str(&row.params).unwrap();
                p[station_core::loras::APPLIED_PARAM]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["slug"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(applied("v1-5-pruned-emaonly.safetensors").await, ["ink"], "{kind}");
        assert_eq!(applied("flux1-schnell.safetensors").await, ["flux-glow"], "{kind}");
    }
}

#[tokio::test]
async fn an_unchanged_inventory_is_not_written_again_and_a_changed_one_is() {
    for env in envs().await {
        let (st, kind) = (&env.station, env.db.kind);
        let list = files(&[("checkpoint", "one_sd15.safetensors"), ("lora", "ink.safetensors")]);
        assert!(st.record_backend_models("gpu1", &list).await.unwrap(), "{kind}: first listing is written");
        let stamps = |rows: Vec<station_store::BackendModelRow>| -> Vec<(String, bool, i64)> {
            rows.into_iter().map(|r| (r.name, r.online, r.seen_at)).collect()
        };
        let first = stamps(env.db.store.backend_models().await.unwrap());
        assert_eq!(first.len(), 2, "{kind}: {first:?}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        // The same list, in another order: nothing is written, not even the stamps.
        let reordered: Vec<(String, String)> = list.iter().rev().cloned().collect();
        assert!(!st.record_backend_models("gpu1", &reordered).await.unwrap(), "{kind}: unchanged list written");
        assert_eq!(stamps(env.db.store.backend_models().await.unwrap()), first, "{kind}: rows rewritten");

        // A new file is a change: written, with a new stamp.
        let grown = files(&[
            ("checkpoint", "one_sd15.safetensors"),
            ("checkpoint", "two_sd15.safetensors"),
            ("lora", "ink.safetensors"),
        ]);
        assert!(st.record_backend_models("gpu1", &grown).await.unwrap(), "{kind}: a new file is written");
        let rows = stamps(env.db.store.backend_models().await.unwrap());
        assert_eq!(rows.len(), 3, "{kind}: {rows:?}");
        assert!(rows.iter().all(|(_, online, at)| *online && *at > first[0].2), "{kind}: {rows:?}");
        assert!(st.models().await.unwrap().iter().any(|m| m.name == "two_sd15.safetensors"), "{kind}");

        // Down: one write; down again: none; back with the same files: written (online again).
        assert!(st.backend_models_offline("gpu1").await.unwrap(), "{kind}");
        assert!(!st.backend_models_offline("gpu1").await.unwrap(), "{kind}: already offline");
        assert!(st.record_backend_models("gpu1", &grown).await.unwrap(), "{kind}: back online is a change");
        assert!(env.db.store.backend_models().await.unwrap().iter().all(|r| r.online), "{kind}");
        assert!(!st.record_backend_models("gpu1", &grown).await.unwrap(), "{kind}");
    }
}
