//! The LoRA catalog through the core service: import with platform identities,
//! visibility through grants, resolution agreeing with `station_lora`, export
//! round trips and job submission. Every case runs on SQLite, and on
//! PostgreSQL when `STATION_TEST_POSTGRES_URL` is set.

use serde_json::{Value, json};
use station_core::loras::{APPLIED_PARAM, LoraEdit, LoraError, WARNINGS_PARAM};
use station_core::{Config, Station, SubmitRequest};
use station_lora::Visibility;
use station_store::LoraFilter;
use station_store::testing::{self, TestDb};

struct Env {
    station: Station,
    db: TestDb,
    _dir: tempfile::TempDir,
}

/// Templates (`txt2img-sd15`, …) are hidden: only administrators may run
/// them. The test's accounts run a public copy from the tools folder.
fn publish_builtin(config: &Config, id: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../station-tools/builtin/{id}.json"));
    let mut tool: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    tool["visibility"] = serde_json::json!("public");
    std::fs::create_dir_all(config.tools_dir()).unwrap();
    std::fs::write(config.tools_dir().join(format!("{id}.json")), tool.to_string()).unwrap();
}

fn station_on(db: &TestDb) -> (Station, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
    publish_builtin(&config, "txt2img-sd15");
    publish_builtin(&config, "txt2img-flux");
    let (station, _) = Station::with_store(config, db.store.clone()).unwrap();
    (station, dir)
}

async fn envs() -> Vec<Env> {
    let mut out = vec![];
    for db in testing::all().await {
        let (station, dir) = station_on(&db);
        out.push(Env { station, db, _dir: dir });
    }
    out
}

/// Milady is private to telegram:123 and shared with discord:9 until far in
/// the future and with discord:10 until the past; the others are public.
const CATALOG: &str = r#"[
  {"slug": "milady-v1", "name": "Milady", "trigger_words": ["milady"], "cognates": ["miladies"],
   "default_weight": 0.8, "checkpoint": "SD1.5", "filename": "milady_v1.safetensors",
   "visibility": "private", "owned_by": "telegram:123", "updated_at": 1700000000000,
   "grants": [{"account": "discord:9", "expires_at": "2999-01-01T00:00:00Z"},
              {"account": "discord:10", "expires_at": 1000}]},
  {"slug": "ink", "trigger_words": ["ink sketch"], "checkpoint": "SD1.5",
   "filename": "station-test-lora.safetensors", "visibility": "public", "updated_at": 1700000000001},
  {"slug": "xl-glow", "trigger_words": ["glow"], "checkpoint": "SDXL",
   "filename": "glow_xl.safetensors", "visibility": "public"}
]"#;

#[tokio::test]
async fn import_maps_identities_and_reports_created_then_updated() {
    for env in envs().await {
        let kind = env.db.kind;
        let loras = env.station.loras();
        let report = loras.import(CATALOG, &station_core::audit::Actor::operator("test")).await.unwrap();
        assert_eq!(report.created, vec!["milady-v1", "ink", "xl-glow"], "{kind}");
        assert!(report.updated.is_empty() && report.errors.is_empty(), "{kind}: {report:?}");

        let owner = env.station.account("telegram", "123", "x").await.unwrap();
        let friend = env.station.account("discord", "9", "x").await.unwrap();
        let milady = loras.show("milady-v1").await.unwrap();
        assert_eq!(milady.owner.as_deref(), Some(owner.id.as_str()), "{kind}: owner is the identity's account");
        assert_eq!(milady.visibility, Visibility::Private);
        assert_eq!(milady.cognates, vec!["miladies"]);
        assert_eq!(milady.updated_at, 1_700_000_000_000);
        let friend_grant = milady.grants.iter().find(|g| g.account == friend.id).expect("grant to discord:9");
        assert_eq!(friend_grant.expires_at, Some(32_472_144_000_000));
        assert!(milady.grants.iter().any(|g| g.account == owner.id), "{kind}: the owner gets a grant");
        assert_eq!(milady.grants.len(), 3, "{kind}: {:?}", milady.grants);

        // Account ids work as references too, and a second import updates in place.
        let again = CATALOG.replace("\"owned_by\": \"telegram:123\"", &format!("\"owned_by\": \"{}\"", friend.id));
        let report = loras.import(&again, &station_core::audit::Actor::operator("test")).await.unwrap();
        assert!(report.created.is_empty(), "{kind}");
        assert_eq!(report.updated, vec!["milady-v1", "ink", "xl-glow"]);
        let milady2 = loras.show("milady-v1").await.unwrap();
        assert_eq!(milady2.id, milady.id, "{kind}: id kept");
        assert_eq!(milady2.created_at, milady.created_at, "{kind}: creation time kept");
        assert_eq!(milady2.owner.as_deref(), Some(friend.id.as_str()));
    }
}

#[tokio::test]
async fn import_errors_name_the_record_and_field() {
    for env in envs().await {
        let loras = env.station.loras();
        let file = r#"[
          {"slug": "ok", "checkpoint": "SD1.5", "filename": "a.safetensors", "visibility": "public"},
          {"slug": "orphan", "checkpoint": "SD1.5", "filename": "b.safetensors", "visibility": "private",
           "owned_by": "nobody"},
          {"slug": "badgrant", "checkpoint": "SD1.5", "filename": "c.safetensors", "visibility": "private",
           "grants": [{"account": "telegram:5"}, {"account": ":7"}]}
        ]"#;
        let report = loras.import(file, &station_core::audit::Actor::operator("test")).await.unwrap();
        assert_eq!(report.created, vec!["ok"]);
        assert_eq!(report.errors.len(), 2, "{report:?}");
        assert!(report.errors[0].starts_with("record 1 (slug \"orphan\"): owned_by: \"nobody\""), "{report:?}");
        assert!(report.errors[1].starts_with("record 2 (slug \"badgrant\"): grants[1].account:"), "{report:?}");
        assert!(matches!(loras.show("orphan").await, Err(LoraError::NotFound(_))));

        // A file that does not parse is refused whole, naming the field.
        let err = loras
            .import(
                r#"[{"slug": "x", "checkpoint": "SD1.5", "filename": "f"}]"#,
                &station_core::audit::Actor::operator("test"),
            )
            .await
            .unwrap_err();
        assert_eq!(err.field(), Some("visibility"), "{err}");
        assert!(matches!(loras.show("x").await, Err(LoraError::NotFound(_))));
    }
}

#[tokio::test]
async fn visibility_follows_owner_grants_revocation_and_expiry() {
    for env in envs().await {
        let kind = env.db.kind;
        let loras = env.station.loras();
        loras.import(CATALOG, &station_core::audit::Actor::operator("test")).await.unwrap();
        let owner = env.station.account("telegram", "123", "x").await.unwrap();
        let friend = env.station.account("discord", "9", "x").await.unwrap();
        let expired = env.station.account("discord", "10", "x").await.unwrap();
        let stranger = env.station.account("discord", "11", "x").await.unwrap();
        let prompt = "a milady portrait";
        let applied = |r: &station_lora::Resolution| r.applied.iter().map(|a| a.slug.clone()).collect::<Vec<_>>();

        for (who, want) in [
            (Some(&owner), true),
            (Some(&friend), true),
            (Some(&expired), false),
            (Some(&stranger), false),
            (None, false),
        ] {
            let r = loras.resolve(prompt, who, Some("SD1.5")).await.unwrap();
            let label = who.map(|a| a.id.clone()).unwrap_or("anonymous".into());
            if want {
                assert_eq!(r.prompt, "a <lora:milady-v1:0.8>milady portrait", "{kind} {label}");
                assert_eq!(applied(&r), vec!["milady-v1"]);
            } else {
                assert_eq!(r.prompt, prompt, "{kind} {label}: private LoRA must stay invisible");
                assert!(r.applied.is_empty());
            }
        }

        // Revoking is seen at once through the cached catalog.
        assert!(loras.revoke("milady-v1", "discord:9", &station_core::audit::Actor::operator("test")).await.unwrap());
        assert!(
            !loras.revoke("milady-v1", "discord:9", &station_core::audit::Actor::operator("test")).await.unwrap(),
            "{kind}: nothing left to revoke"
        );
        let r = loras.resolve(prompt, Some(&friend), None).await.unwrap();
        assert!(r.applied.is_empty(), "{kind}: revoked grant still applied");
        // Granting to the stranger by identity, with an expiry in the future.
        loras
            .grant(
                "milady-v1",
                "discord:11",
                Some(station_store::now_ms() + 3_600_000),
                &station_core::audit::Actor::operator("test"),
            )
            .await
            .unwrap();
        let r = loras.resolve(prompt, Some(&stranger), None).await.unwrap();
        assert_eq!(applied(&r), vec!["milady-v1"], "{kind}");
        // A second Station on the same database (another process) sees writes made here.
        let (other, _dir) = station_on(&env.db);
        assert_eq!(other.loras().resolve(prompt, Some(&stranger), None).await.unwrap().applied.len(), 1);
        loras.grant("milady-v1", "discord:11", Some(1), &station_core::audit::Actor::operator("test")).await.unwrap();
        let r = other.loras().resolve(prompt, Some(&stranger), None).await.unwrap();
        assert!(r.applied.is_empty(), "{kind}: the other process kept a stale catalog");

        assert!(matches!(
            loras.grant("nope", "discord:11", None, &station_core::audit::Actor::operator("test")).await,
            Err(LoraError::NotFound(_))
        ));
        let err = loras
            .grant("milady-v1", "not-an-account", None, &station_core::audit::Actor::operator("test"))
            .await
            .unwrap_err();
        assert_eq!(err.field(), Some("account"), "{err}");
    }
}

#[tokio::test]
async fn resolve_agrees_with_station_lora_on_the_stored_catalog() {
    for env in envs().await {
        let loras = env.station.loras();
        loras.import(CATALOG, &station_core::audit::Actor::operator("test")).await.unwrap();
        let owner = env.station.account("telegram", "123", "x").await.unwrap();
        let catalog = loras.catalog().await.unwrap();
        assert_eq!(catalog.len(), 3);
        let prompts = [
            "an ink sketch of miladies!! in the glow",
            "Milady. ink sketch:0.5 glow",
            "<lora:ink:0.7>ink sketch and <lora:unknown:1> milady milady",
            "plain words only",
        ];
        for prompt in prompts {
            for base in [None, Some("SD1.5"), Some("SDXL"), Some("FLUX")] {
                for account in [None, Some(&owner)] {
                    let got = loras.resolve(prompt, account, base).await.unwrap();
                    let want = station_lora::resolve(
                        prompt,
                        &catalog,
                        account.map(|a| a.id.as_str()),
                        base,
                        station_store::now_ms(),
                    );
                    assert_eq!(got, want, "{prompt:?} base {base:?} account {account:?}");
                }
            }
        }
        // Spot checks of the rules themselves: cognate → first trigger word, `!!` adds 0.4,
        // and an SD1.5 tool ignores the SDXL LoRA.
        let r = loras.resolve("an ink sketch of miladies!! in the glow", Some(&owner), Some("SD1.5")).await.unwrap();
        assert_eq!(r.prompt, "an <lora:ink:1>ink sketch of <lora:milady-v1:1.2>milady in the glow");
        let r = loras.resolve("glow", None, Some("SDXL")).await.unwrap();
        assert_eq!(r.prompt, "<lora:xl-glow:1>glow");
    }
}

#[tokio::test]
async fn export_then_import_round_trips() {
    for env in envs().await {
        let kind = env.db.kind;
        let loras = env.station.loras();
        loras.import(CATALOG, &station_core::audit::Actor::operator("test")).await.unwrap();
        loras
            .edit(
                "ink",
                LoraEdit {
                    description: Some("Pen and ink".into()),
                    tags: Some(vec!["style".into()]),
                    ..Default::default()
                },
                &station_core::audit::Actor::operator("test"),
            )
            .await
            .unwrap();
        let exported = loras.export().await.unwrap();
        let report = loras.import(&exported.to_string(), &station_core::audit::Actor::operator("test")).await.unwrap();
        assert_eq!(report.updated.len(), 3, "{kind}: {report:?}");
        assert!(report.errors.is_empty());
        assert_eq!(loras.export().await.unwrap(), exported, "{kind}: re-import changed the catalog");
        let ink = loras.show("ink").await.unwrap();
        assert_eq!((ink.description.as_str(), ink.tags.clone()), ("Pen and ink", vec!["style".to_string()]));

        // Into an emptied catalog: the same records, owners and grants.
        for slug in ["milady-v1", "ink", "xl-glow"] {
            loras.remove(slug, &station_core::audit::Actor::operator("test")).await.unwrap();
        }
        let report = loras.import(&exported.to_string(), &station_core::audit::Actor::operator("test")).await.unwrap();
        assert_eq!(report.created.len(), 3, "{kind}: {report:?}");
        let mut a = loras.export().await.unwrap();
        let mut b = exported.clone();
        // Description and tags are not part of the import format.
        for v in [&mut a, &mut b] {
            for r in v.as_array_mut().unwrap() {
                r.as_object_mut().unwrap().retain(|k, _| k != "description" && k != "tags");
            }
        }
        assert_eq!(a, b, "{kind}");
    }
}

#[tokio::test]
async fn add_edit_list_remove_validate_fields() {
    for env in envs().await {
        let loras = env.station.loras();
        let base = LoraEdit {
            checkpoint: Some("SDXL".into()),
            filename: Some("a.safetensors".into()),
            visibility: Some(Visibility::Public),
            trigger_words: Some(vec![" neon ".into()]),
            tags: Some(vec!["Style".into()]),
            ..Default::default()
        };
        let added = loras.add("neon", base.clone(), &station_core::audit::Actor::operator("test")).await.unwrap();
        assert_eq!(added.trigger_words, vec!["neon"]);
        assert_eq!(added.name, "neon");
        let err = loras.add("neon", base.clone(), &station_core::audit::Actor::operator("test")).await.unwrap_err();
        assert_eq!(err.field(), Some("slug"));
        let err = loras.add("Bad Slug", base.clone(), &station_core::audit::Actor::operator("test")).await.unwrap_err();
        assert_eq!(err.field(), Some("slug"));
        let err = loras
            .add("x", LoraEdit { filename: None, ..base.clone() }, &station_core::audit::Actor::operator("test"))
            .await
            .unwrap_err();
        assert_eq!((err.field(), err.to_string().as_str()), (Some("filename"), "filename: is required"));
        let err = loras
            .edit(
                "neon",
                LoraEdit { default_weight: Some(Some(2.5)), ..Default::default() },
                &station_core::audit::Actor::operator("test"),
            )
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "default_weight: 2.5 is outside [0, 2]");
        let err = loras
            .edit(
                "neon",
                LoraEdit { trigger_words: Some(vec!["a".into(), " ".into()]), ..Default::default() },
                &station_core::audit::Actor::operator("test"),
            )
            .await
            .unwrap_err();
        assert_eq!(err.field(), Some("trigger_words[1]"));

        let edited = loras
            .edit(
                "neon",
                LoraEdit {
                    owner: Some(Some("local:alice".into())),
                    visibility: Some(Visibility::Private),
                    ..Default::default()
                },
                &station_core::audit::Actor::operator("test"),
            )
            .await
            .unwrap();
        let alice = env.station.account("local", "alice", "x").await.unwrap();
        assert_eq!(edited.owner.as_deref(), Some(alice.id.as_str()));
        assert!(edited.updated_at >= added.updated_at);
        assert_eq!(edited.created_at, added.created_at);

        loras
            .add(
                "other",
                LoraEdit { checkpoint: Some("FLUX".into()), ..base.clone() },
                &station_core::audit::Actor::operator("test"),
            )
            .await
            .unwrap();
        let by_tag = loras.list(&LoraFilter { tag: Some("style".into()), ..Default::default() }).await.unwrap();
        assert_eq!(by_tag.iter().map(|r| r.slug.as_str()).collect::<Vec<_>>(), vec!["neon", "other"]);
        let by_ckpt = loras.list(&LoraFilter { checkpoint: Some("flux".into()), ..Default::default() }).await.unwrap();
        assert_eq!(by_ckpt.iter().map(|r| r.slug.as_str()).collect::<Vec<_>>(), vec!["other"]);
        let by_text = loras.list(&LoraFilter { search: Some("NEO".into()), ..Default::default() }).await.unwrap();
        assert_eq!(by_text.len(), 2, "trigger word `neon` is in both");
        assert_eq!(by_text[0].grants.len(), 1, "list carries grants (alice as owner)");

        loras.remove("neon", &station_core::audit::Actor::operator("test")).await.unwrap();
        assert!(matches!(
            loras.remove("neon", &station_core::audit::Actor::operator("test")).await,
            Err(LoraError::NotFound(_))
        ));
        assert_eq!(loras.catalog().await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn submit_resolves_the_prompt_of_a_lora_tool() {
    for env in envs().await {
        let kind = env.db.kind;
        env.station.loras().import(CATALOG, &station_core::audit::Actor::operator("test")).await.unwrap();
        let owner = env.station.account("telegram", "123", "x").await.unwrap();
        let submit = |tool: &str, params: Value| {
            // Confirmed: the flux job costs more than the default confirmation threshold.
            let req = SubmitRequest {
                tool: tool.into(),
                params: params.as_object().unwrap().clone(),
                confirmed: true,
                ..Default::default()
            };
            let station = env.station.clone();
            let owner = owner.clone();
            async move { station.submit(&owner, req).await.unwrap() }
        };
        let row = submit("txt2img-sd15", json!({"prompt": "milady! ink sketch, glow <lora:gone:1>"})).await;
        let params = row.params_json();
        assert_eq!(params["prompt"], "<lora:milady-v1:1>milady <lora:ink:1>ink sketch, glow", "{kind}");
        assert_eq!(
            params[APPLIED_PARAM],
            json!([
                {"slug": "milady-v1", "filename": "milady_v1.safetensors", "weight": 1.0},
                {"slug": "ink", "filename": "station-test-lora.safetensors", "weight": 1.0}
            ]),
            "{kind}"
        );
        assert_eq!(params[WARNINGS_PARAM].as_array().map(Vec::len), Some(1), "{kind}: {params:?}");

        // A FLUX tool cannot use SD1.5 LoRAs: the prompt stays as typed and nothing applies.
        let row = submit("txt2img-flux", json!({"prompt": "milady ink sketch"})).await;
        let params = row.params_json();
        assert_eq!(params["prompt"], "milady ink sketch", "{kind}");
        assert_eq!(params[APPLIED_PARAM], json!([]), "{kind}");
        assert!(!params.contains_key(WARNINGS_PARAM), "{kind}");
    }
}
