use super::*;
use crate::record::{Grant, Visibility};

const NOW: i64 = 1_000_000;

fn lora(slug: &str, triggers: &[&str]) -> LoraRecord {
    LoraRecord {
        id: format!("id-{slug}"),
        slug: slug.into(),
        name: slug.into(),
        description: String::new(),
        trigger_words: triggers.iter().map(std::string::ToString::to_string).collect(),
        cognates: vec![],
        default_weight: None,
        checkpoint: "SDXL".into(),
        filename: format!("{slug}.safetensors"),
        tags: vec![],
        owner: None,
        visibility: Visibility::Public,
        updated_at: 0,
        grants: vec![],
        rating: None,
        preview_images: vec![],
        created_at: 0,
    }
}

fn weight(mut r: LoraRecord, w: f64) -> LoraRecord {
    r.default_weight = Some(w);
    r
}

fn cognates(mut r: LoraRecord, c: &[&str]) -> LoraRecord {
    r.cognates = c.iter().map(std::string::ToString::to_string).collect();
    r
}

fn private(mut r: LoraRecord, owner: &str) -> LoraRecord {
    r.visibility = Visibility::Private;
    r.owner = Some(owner.into());
    r
}

fn granted(mut r: LoraRecord, account: &str, expires_at: Option<i64>, revoked: bool) -> LoraRecord {
    r.grants.push(Grant { account: account.into(), expires_at, revoked });
    r
}

fn updated(mut r: LoraRecord, at: i64) -> LoraRecord {
    r.updated_at = at;
    r
}

fn checkpoint(mut r: LoraRecord, c: &str) -> LoraRecord {
    r.checkpoint = c.into();
    r
}

fn milady() -> LoraRecord {
    lora("milady-v1", &["milady"])
}

/// Resolves for anonymous callers without a tool base model.
fn run(prompt: &str, catalog: &[LoraRecord]) -> Resolution {
    resolve(prompt, catalog, None, None, NOW)
}

/// Just the rewritten prompt.
fn rewrite(prompt: &str, catalog: &[LoraRecord]) -> String {
    run(prompt, catalog).prompt
}

fn applied(r: &Resolution) -> Vec<(&str, f64, &str)> {
    r.applied.iter().map(|a| (a.slug.as_str(), a.weight, a.matched.as_str())).collect()
}

// ---- output -----------------------------------------------------------------------------

#[test]
fn spec_examples() {
    let cat = [milady()];
    assert_eq!(rewrite("a portrait in milady style", &cat), "a portrait in <lora:milady-v1:1>milady style");
    assert_eq!(rewrite("(milady),", &cat), "(<lora:milady-v1:1>milady),");
}

#[test]
fn applied_records_slug_weight_and_typed_text() {
    let r = run("in MiLaDy style", &[milady()]);
    assert_eq!(r.prompt, "in <lora:milady-v1:1>milady style");
    assert_eq!(applied(&r), vec![("milady-v1", 1.0, "MiLaDy")]);
    assert!(r.warnings.is_empty());
}

#[test]
fn trigger_at_start_end_and_alone() {
    let cat = [milady()];
    assert_eq!(rewrite("milady", &cat), "<lora:milady-v1:1>milady");
    assert_eq!(rewrite("milady at dusk", &cat), "<lora:milady-v1:1>milady at dusk");
    assert_eq!(rewrite("at dusk, milady", &cat), "at dusk, <lora:milady-v1:1>milady");
    assert_eq!(rewrite("", &cat), "");
}

#[test]
fn emitted_word_is_the_matched_trigger_in_lower_case() {
    let cat = [lora("m", &["milady", "Remilio"])];
    assert_eq!(rewrite("REMILIO girl", &cat), "<lora:m:1>remilio girl");
}

#[test]
fn cognate_emits_first_trigger_word() {
    let cat = [cognates(lora("m", &["Milady", "remilio"]), &["miladies", "lady m"])];
    let r = run("two miladies", &cat);
    assert_eq!(r.prompt, "two <lora:m:1>milady");
    assert_eq!(applied(&r), vec![("m", 1.0, "miladies")]);
    assert_eq!(rewrite("Lady M walks", &cat), "<lora:m:1>milady walks");
}

#[test]
fn cognate_without_trigger_words_emits_itself() {
    let cat = [cognates(lora("m", &[]), &["Miladies"])];
    assert_eq!(rewrite("MILADIES", &cat), "<lora:m:1>miladies");
}

#[test]
fn lorahash_trigger_emits_only_the_tag() {
    let cat = [cognates(lora("h", &["lorahash_ab12"]), &["hashy"])];
    assert_eq!(rewrite("x lorahash_AB12 y", &cat), "x <lora:h:1> y");
    assert_eq!(rewrite("x hashy y", &cat), "x <lora:h:1> y");
}

#[test]
fn weights_print_in_shortest_form() {
    assert_eq!(rewrite("milady", &[weight(milady(), 0.8)]), "<lora:milady-v1:0.8>milady");
    assert_eq!(rewrite("milady", &[weight(milady(), 1.15)]), "<lora:milady-v1:1.15>milady");
    assert_eq!(rewrite("milady", &[weight(milady(), 1.0)]), "<lora:milady-v1:1>milady");
    assert_eq!(rewrite("milady", &[weight(milady(), 0.333)]), "<lora:milady-v1:0.33>milady");
    assert_eq!(format_weight(200), "2");
    assert_eq!(format_weight(7), "0.07");
    assert_eq!(format_weight(110), "1.1");
}

// ---- matching ---------------------------------------------------------------------------

#[test]
fn only_whole_words_match() {
    let cat = [milady()];
    for text in [
        "milady-style",
        "milady2",
        "2milady",
        "milady_x",
        "x-milady",
        "miladys",
        "amilady",
        "émilady",
        "miladyé",
        "日本milady",
    ] {
        let r = run(text, &cat);
        assert_eq!(r.prompt, text, "{text} must not match");
        assert!(r.applied.is_empty(), "{text}");
    }
}

#[test]
fn every_listed_separator_separates() {
    let cat = [milady()];
    for (open, close) in [
        (" ", " "),
        ("\t", "\n"),
        ("(", ")"),
        ("[", "]"),
        ("{", "}"),
        ("'", "'"),
        ("\"", "\""),
        (",", ","),
        ("?", "?"),
        ("!", "?!"),
    ] {
        let text = format!("x{open}milady{close}y");
        assert_eq!(rewrite(&text, &cat), format!("x{open}<lora:milady-v1:1>milady{close}y"), "{text:?}");
    }
}

#[test]
fn other_characters_after_or_before_the_word_are_kept() {
    let cat = [milady()];
    assert_eq!(rewrite("milady; art", &cat), "<lora:milady-v1:1>milady; art");
    assert_eq!(rewrite("milady: art", &cat), "<lora:milady-v1:1>milady: art");
    assert_eq!(rewrite("milady:x", &cat), "<lora:milady-v1:1>milady:x");
    assert_eq!(rewrite("#milady", &cat), "#<lora:milady-v1:1>milady");
    assert_eq!(rewrite("milady's hat", &cat), "<lora:milady-v1:1>milady's hat");
}

#[test]
fn unicode_around_words_is_preserved() {
    let cat = [milady()];
    assert_eq!(rewrite("café «milady» 日本 🔥milady🔥", &cat), "café «<lora:milady-v1:1>milady» 日本 🔥🔥");
    assert_eq!(rewrite("Ünïcödé milady ß", &cat), "Ünïcödé <lora:milady-v1:1>milady ß");
}

#[test]
fn unicode_case_folding_matches() {
    let cat = [lora("straße", &["straße"])];
    assert_eq!(rewrite("STRAßE", &cat), "<lora:straße:1>straße");
    let cat = [lora("greek", &["σοφία"])];
    assert_eq!(rewrite("ΣΟΦΊΑ", &cat), "<lora:greek:1>σοφία");
    assert_eq!(rewrite("Σοφία!", &cat), "<lora:greek:1.2>σοφία");
    // A final sigma is written ς in lower case but Σ in upper case; both spellings match.
    let cat = [lora("odos", &["ΟΔΟΣ"])];
    assert_eq!(rewrite("a οδος b", &cat), "a <lora:odos:1>οδος b");
    assert_eq!(rewrite("a ΟΔΟΣ b", &cat), "a <lora:odos:1>οδος b");
    let cat = [lora("odos", &["οδοσ"])];
    assert_eq!(rewrite("a οδος b", &cat), "a <lora:odos:1>οδοσ b");
}

#[test]
fn multi_word_trigger_matches_single_whitespace() {
    let cat = [lora("ms", &["Milady  Style"]), lora("m", &["milady"])];
    let r = run("in MILADY STYLE now", &cat);
    assert_eq!(r.prompt, "in <lora:ms:1>milady style now");
    assert_eq!(applied(&r), vec![("ms", 1.0, "MILADY STYLE")]);
    assert_eq!(rewrite("milady\tstyle", &cat), "<lora:ms:1>milady style", "longest match wins");
    assert_eq!(rewrite("milady  style", &cat), "<lora:m:1>milady  style");
    assert_eq!(rewrite("milady styles", &cat), "<lora:m:1>milady styles");
}

#[test]
fn trigger_with_inner_punctuation() {
    let cat = [lora("kda", &["K/DA"])];
    assert_eq!(rewrite("a k/da idol", &cat), "a <lora:kda:1>k/da idol");
    assert_eq!(rewrite("a k/dax idol", &cat), "a k/dax idol");
}

// ---- weights ----------------------------------------------------------------------------

#[test]
fn explicit_weights() {
    let cat = [milady()];
    let r = run("milady:0.5 girl", &cat);
    assert_eq!(r.prompt, "<lora:milady-v1:0.5>milady girl");
    assert_eq!(applied(&r), vec![("milady-v1", 0.5, "milady")]);
    assert_eq!(rewrite("milady:.4, girl", &cat), "<lora:milady-v1:0.4>milady, girl");
    assert_eq!(rewrite("milady:1.25", &cat), "<lora:milady-v1:1.25>milady");
    assert_eq!(rewrite("milady:1.255", &cat), "<lora:milady-v1:1.25>milady");
    assert_eq!(rewrite("milady:1.", &cat), "<lora:milady-v1:1>milady.", "the dot ends a sentence");
    assert_eq!(rewrite("milady:7", &cat), "<lora:milady-v1:2>milady", "clamped to 2");
    assert_eq!(rewrite("milady:0.5px", &cat), "<lora:milady-v1:1>milady:0.5px");
    assert_eq!(rewrite("milady:-1", &cat), "<lora:milady-v1:1>milady:-1");
}

#[test]
fn explicit_zero_weight_leaves_text_as_typed() {
    let cat = [milady()];
    for text in ["milady:0 girl", "MILADY:0.00", "milady:.001"] {
        let r = run(text, &cat);
        assert_eq!(r.prompt, text);
        assert!(r.applied.is_empty(), "{text}");
    }
}

#[test]
fn dots_and_bangs_shift_the_default_weight() {
    let cat = [milady()];
    assert_eq!(rewrite("milady.. girl", &cat), "<lora:milady-v1:0.6>milady girl");
    assert_eq!(rewrite("milady!! girl", &cat), "<lora:milady-v1:1.4>milady girl");
    assert_eq!(rewrite("milady.", &cat), "<lora:milady-v1:0.8>milady");
    assert_eq!(rewrite("(milady!)", &cat), "(<lora:milady-v1:1.2>milady)");
    assert_eq!(rewrite("milady!!!!!!!!", &cat), "<lora:milady-v1:2>milady", "clamped to 2");
    let r = run("milady..", &[weight(milady(), 0.75)]);
    assert_eq!(r.prompt, "<lora:milady-v1:0.35>milady");
    assert_eq!(r.applied[0].weight, 0.35);
    assert_eq!(rewrite("milady!", &[weight(milady(), 0.8)]), "<lora:milady-v1:1>milady");
}

#[test]
fn mixed_punctuation_runs_are_kept() {
    let cat = [milady()];
    assert_eq!(rewrite("milady!? wow", &cat), "<lora:milady-v1:1>milady!? wow");
    assert_eq!(rewrite("milady., wow", &cat), "<lora:milady-v1:1>milady., wow");
    assert_eq!(rewrite("milady.!", &cat), "<lora:milady-v1:1>milady.!");
    assert_eq!(rewrite("milady.5", &cat), "<lora:milady-v1:1>milady.5", "not a shift");
}

#[test]
fn shift_to_zero_means_not_applied() {
    let cat = [milady()];
    let r = run("milady..... girl", &cat);
    assert_eq!(r.prompt, "milady..... girl");
    assert!(r.applied.is_empty());
    let r = run("milady.", &[weight(milady(), 0.2)]);
    assert_eq!(r.prompt, "milady.");
    assert!(r.applied.is_empty());
    let r = run("milady", &[weight(milady(), 0.0)]);
    assert_eq!(r.prompt, "milady");
}

// ---- once per LoRA ----------------------------------------------------------------------

#[test]
fn later_occurrences_are_removed() {
    let cat = [cognates(lora("m", &["milady", "remilio"]), &["miladies"])];
    let r = run("milady at the beach, milady again with Remilio and miladies", &cat);
    assert_eq!(r.prompt, "<lora:m:1>milady at the beach, again with and");
    assert_eq!(applied(&r), vec![("m", 1.0, "milady")]);
}

#[test]
fn removal_takes_weight_suffix_and_collapses_whitespace() {
    let cat = [milady()];
    assert_eq!(rewrite("milady x milady:0.5 y", &cat), "<lora:milady-v1:1>milady x y");
    assert_eq!(rewrite("milady x milady!! y", &cat), "<lora:milady-v1:1>milady x y");
    assert_eq!(rewrite("milady x milady", &cat), "<lora:milady-v1:1>milady x");
    assert_eq!(rewrite("milady x (milady y)", &cat), "<lora:milady-v1:1>milady x (y)");
    assert_eq!(rewrite("milady x milady, y", &cat), "<lora:milady-v1:1>milady x, y");
    assert_eq!(rewrite("milady, milady, milady", &cat), "<lora:milady-v1:1>milady,,");
    assert_eq!(rewrite("milady x\nmilady\ny", &cat), "<lora:milady-v1:1>milady x\ny");
    assert_eq!(rewrite("milady x milady\ny", &cat), "<lora:milady-v1:1>milady x\ny");
    assert_eq!(rewrite("milady x\nmilady y", &cat), "<lora:milady-v1:1>milady x\ny");
    assert_eq!(rewrite("milady x  milady  y", &cat), "<lora:milady-v1:1>milady x  y");
}

#[test]
fn removal_at_prompt_start_drops_following_space() {
    let cat = [milady()];
    assert_eq!(rewrite("milady and more <lora:milady-v1:0.5>", &cat), "and more <lora:milady-v1:0.5>");
}

#[test]
fn zero_weight_occurrences_are_never_removed_and_never_block() {
    let cat = [milady()];
    assert_eq!(rewrite("milady x milady:0 y", &cat), "<lora:milady-v1:1>milady x milady:0 y");
    let r = run("milady:0 x milady.. y milady", &cat);
    assert_eq!(r.prompt, "milady:0 x <lora:milady-v1:0.6>milady y");
    assert_eq!(applied(&r), vec![("milady-v1", 0.6, "milady")]);
}

// ---- inline tags ------------------------------------------------------------------------

#[test]
fn usable_inline_tag_is_kept_and_counts_as_applied() {
    let cat = [milady()];
    let r = run("a <lora:milady-v1:0.7> portrait", &cat);
    assert_eq!(r.prompt, "a <lora:milady-v1:0.7> portrait");
    assert_eq!(applied(&r), vec![("milady-v1", 0.7, "<lora:milady-v1:0.7>")]);
    assert!(r.warnings.is_empty());
    let r = run("<LoRA:Milady-V1:1.0>", &cat);
    assert_eq!(r.prompt, "<LoRA:Milady-V1:1.0>");
    assert_eq!(applied(&r), vec![("milady-v1", 1.0, "<LoRA:Milady-V1:1.0>")]);
}

#[test]
fn inline_tag_removes_triggers_before_and_after_it() {
    let cat = [milady()];
    let r = run("milady in <lora:milady-v1:0.5> with milady.", &cat);
    assert_eq!(r.prompt, "in <lora:milady-v1:0.5> with");
    assert_eq!(applied(&r), vec![("milady-v1", 0.5, "<lora:milady-v1:0.5>")]);
}

#[test]
fn unknown_or_inaccessible_inline_tag_is_removed_with_the_same_warning() {
    let cat = [milady(), private(lora("secret", &["hush"]), "alice")];
    let r = run("a <lora:nope:1> b", &cat);
    assert_eq!(r.prompt, "a b");
    assert!(r.applied.is_empty());
    assert_eq!(r.warnings, vec![r#"removed <lora:nope:1>: no LoRA "nope" is available"#]);
    let r = resolve("a <lora:secret:1> b", &cat, Some("bob"), None, NOW);
    assert_eq!(r.prompt, "a b");
    assert_eq!(r.warnings, vec![r#"removed <lora:secret:1>: no LoRA "secret" is available"#]);
    let r = resolve("a <lora:secret:1> b", &cat, Some("alice"), None, NOW);
    assert_eq!(r.prompt, "a <lora:secret:1> b");
    assert!(r.warnings.is_empty());
}

#[test]
fn incompatible_inline_tag_is_removed_naming_base_models() {
    let cat = [checkpoint(milady(), "SD1.5")];
    let r = resolve("<lora:milady-v1:1> girl", &cat, None, Some("FLUX"), NOW);
    assert_eq!(r.prompt, "girl");
    assert_eq!(
        r.warnings,
        vec![r#"removed <lora:milady-v1:1>: LoRA "milady-v1" is for SD1.5 and this tool uses FLUX"#]
    );
}

#[test]
fn non_numeric_inline_tag_stays_as_text_and_is_not_reparsed() {
    let cat = [milady()];
    let r = run("<lora:milady-v1:high> girl", &cat);
    assert_eq!(r.prompt, "<lora:milady-v1:high> girl");
    assert!(r.applied.is_empty());
    assert_eq!(r.warnings, vec![r#"kept <lora:milady-v1:high> as plain text: weight "high" is not a number"#]);
    let r = run("<lora:milady> milady", &cat);
    assert_eq!(r.prompt, "<lora:milady> <lora:milady-v1:1>milady");
    assert_eq!(r.warnings, vec!["kept <lora:milady> as plain text: expected <lora:slug:weight>"]);
    for bad in ["<lora:milady-v1:inf>", "<lora:milady-v1:NaN>", "<lora:milady-v1:1e2>"] {
        assert_eq!(rewrite(bad, &cat), bad);
    }
}

#[test]
fn tag_text_is_never_matched_as_words() {
    let cat = [milady()];
    let r = run("<lora:milady:1> girl", &cat);
    assert_eq!(r.prompt, "girl");
    assert!(r.applied.is_empty());
    assert_eq!(r.warnings, vec![r#"removed <lora:milady:1>: no LoRA "milady" is available"#]);
}

#[test]
fn duplicate_inline_tag_is_removed() {
    let cat = [milady()];
    let r = run("<lora:milady-v1:1> x <lora:milady-v1:0.5>", &cat);
    assert_eq!(r.prompt, "<lora:milady-v1:1> x");
    assert_eq!(applied(&r), vec![("milady-v1", 1.0, "<lora:milady-v1:1>")]);
    assert_eq!(r.warnings, vec![r#"removed <lora:milady-v1:0.5>: LoRA "milady-v1" is already applied"#]);
}

#[test]
fn inline_tag_weight_is_kept_as_written() {
    let cat = [milady()];
    let r = run("<lora:milady-v1:-0.5> <lora:milady-v1:+3>", &cat);
    assert_eq!(r.applied[0].weight, -0.5);
    assert_eq!(r.prompt, "<lora:milady-v1:-0.5>");
}

#[test]
fn broken_tag_shapes_are_plain_text() {
    let cat = [milady()];
    assert_eq!(rewrite("<lora:milady-v1:1", &cat), "<lora:milady-v1:1");
    assert_eq!(rewrite("<lora:a <lora:milady-v1:1>", &cat), "<lora:a <lora:milady-v1:1>");
    assert_eq!(rewrite("<lora milady", &cat), "<lora <lora:milady-v1:1>milady");
}

#[test]
fn removing_a_tag_never_glues_words() {
    let cat = [milady()];
    let r = run("foo<lora:gone:1>milady", &cat);
    assert_eq!(r.prompt, "foo <lora:milady-v1:1>milady");
    assert_eq!(rewrite("<lo<lora:gone:1>ra:secret:1>", &cat), "<lo ra:secret:1>");
    assert_eq!(rewrite("(<lora:gone:1>)", &cat), "()");
}

#[test]
fn tags_formed_by_removing_tags_are_judged_too() {
    let cat = [milady()];
    for text in ["<lora:secret<lora:gone:1>:1>", "<lora:<lora:gone:1>secret:1>"] {
        let r = run(text, &cat);
        assert_eq!(r.prompt, "", "{text}");
        assert_eq!(
            r.warnings,
            vec![
                r#"removed <lora:gone:1>: no LoRA "gone" is available"#,
                r#"removed <lora:secret:1>: no LoRA "secret" is available"#,
            ],
            "{text}"
        );
    }
    let r = run("<lora:milady-v1<lora:gone:1>:0.5> milady", &cat);
    assert_eq!(r.prompt, "<lora:milady-v1:0.5>");
    assert_eq!(applied(&r), vec![("milady-v1", 0.5, "<lora:milady-v1:0.5>")]);
    let r = run("a <lora:x<lora:<lora:gone:1>:1>:1> b milady", &cat);
    assert_eq!(r.prompt, "a b <lora:milady-v1:1>milady");
    assert_eq!(
        r.warnings,
        vec![
            r#"removed <lora:gone:1>: no LoRA "gone" is available"#,
            r#"removed <lora::1>: no LoRA "" is available"#,
            r#"removed <lora:x:1>: no LoRA "x" is available"#,
        ]
    );
}

#[test]
fn tags_formed_by_removing_triggers_are_removed() {
    let cat = [lora("x", &["xx", "#xx#"])];
    let r = run("xx <lo#xx#ra:secret:1>", &cat);
    assert_eq!(r.prompt, "<lora:x:1>xx ");
    assert_eq!(r.warnings, vec!["removed <lora:secret:1>: it was formed by removing text inside it"]);
}

#[test]
fn text_inside_tags_is_never_matched() {
    let cat = [milady()];
    let r = run("milady <lora:secret milady:x>", &cat);
    assert_eq!(r.prompt, "<lora:milady-v1:1>milady <lora:secret milady:x>");
    // Without a closing `>` it is plain words: the repeated trigger and its weight go.
    let r = run("milady <lora:secret milady:1 b", &cat);
    assert_eq!(r.prompt, "<lora:milady-v1:1>milady <lora:secret b");
}

#[test]
fn inline_tags_allow_no_spaces() {
    let cat = [milady()];
    let r = run("<lora: milady-v1:1> <lora:milady-v1: 1>", &cat);
    assert_eq!(r.prompt, "<lora:milady-v1: 1>");
    assert_eq!(
        r.warnings,
        vec![
            r#"removed <lora: milady-v1:1>: no LoRA " milady-v1" is available"#,
            r#"kept <lora:milady-v1: 1> as plain text: weight " 1" is not a number"#,
        ]
    );
}

// ---- visibility and compatibility ------------------------------------------------------

#[test]
fn private_loras_need_owner_or_live_grant() {
    let cat = [
        granted(granted(private(milady(), "alice"), "bob", Some(NOW + 1), false), "carol", None, true),
        granted(private(lora("old", &["old"]), "alice"), "dave", Some(NOW), false),
    ];
    let text = "milady old";
    let for_account = |a: Option<&str>| resolve(text, &cat, a, None, NOW).prompt;
    assert_eq!(for_account(None), "milady old");
    assert_eq!(for_account(Some("alice")), "<lora:milady-v1:1>milady <lora:old:1>old");
    assert_eq!(for_account(Some("bob")), "<lora:milady-v1:1>milady old");
    assert_eq!(for_account(Some("carol")), "milady old", "revoked");
    assert_eq!(for_account(Some("dave")), "milady old", "expired at now");
    assert_eq!(for_account(Some("mallory")), "milady old");
    assert_eq!(resolve(text, &cat, Some("bob"), None, NOW + 1).prompt, "milady old", "bob's grant expired");
}

#[test]
fn incompatible_loras_are_ignored() {
    let cat = [checkpoint(milady(), "SD1.5"), checkpoint(lora("f", &["fluxy"]), "FLUX.1")];
    let text = "milady fluxy";
    let with = |base: Option<&str>| resolve(text, &cat, None, base, NOW).prompt;
    assert_eq!(with(None), "<lora:milady-v1:1>milady <lora:f:1>fluxy");
    assert_eq!(with(Some("SDXL")), "<lora:milady-v1:1>milady fluxy");
    assert_eq!(with(Some("SD1.5")), "<lora:milady-v1:1>milady fluxy");
    assert_eq!(with(Some("FLUX")), "milady <lora:f:1>fluxy");
    assert_eq!(with(Some("KONTEXT")), "milady <lora:f:1>fluxy");
    assert_eq!(with(Some("ILLUSTRIOUS")), "milady fluxy");
}

#[test]
fn incompatible_candidate_does_not_shadow_compatible_one() {
    let cat = [updated(checkpoint(lora("new-flux", &["milady"]), "FLUX"), 9), updated(lora("old-xl", &["milady"]), 1)];
    let r = resolve("milady", &cat, None, Some("SDXL"), NOW);
    assert_eq!(r.prompt, "<lora:old-xl:1>milady");
    assert!(r.warnings.is_empty(), "only one compatible candidate");
}

// ---- conflicts --------------------------------------------------------------------------

#[test]
fn own_private_beats_granted_beats_public() {
    let cat = [
        updated(lora("pub", &["milady"]), 30),
        updated(granted(private(lora("shared", &["milady"]), "bob"), "alice", None, false), 20),
        updated(private(lora("mine", &["milady"]), "alice"), 10),
    ];
    let r = resolve("milady", &cat, Some("alice"), None, NOW);
    assert_eq!(r.prompt, "<lora:mine:1>milady");
    assert!(r.warnings.is_empty(), "only one public candidate");
    assert_eq!(resolve("milady", &cat[..2], Some("alice"), None, NOW).prompt, "<lora:shared:1>milady");
    assert_eq!(resolve("milady", &cat, Some("carol"), None, NOW).prompt, "<lora:pub:1>milady");
}

#[test]
fn newest_public_wins_with_one_warning_per_trigger() {
    let cat = [
        updated(lora("b-old", &["milady"]), 1),
        updated(cognates(lora("c-new", &["other"]), &["milady"]), 5),
        updated(lora("a-mid", &["milady"]), 3),
    ];
    let r = run("milady x Milady", &cat);
    assert_eq!(r.prompt, "<lora:c-new:1>other x");
    assert_eq!(r.warnings, vec![r#"trigger "milady" matches several LoRAs (a-mid, b-old, c-new); using c-new"#]);
}

#[test]
fn public_conflict_warns_even_when_private_wins() {
    let cat = [lora("p1", &["milady"]), lora("p2", &["milady"]), private(lora("mine", &["milady"]), "alice")];
    let r = resolve("milady", &cat, Some("alice"), None, NOW);
    assert_eq!(r.prompt, "<lora:mine:1>milady");
    assert_eq!(r.warnings, vec![r#"trigger "milady" matches several LoRAs (mine, p1, p2); using mine"#]);
}

#[test]
fn equal_update_times_break_ties_by_slug() {
    let cat = [lora("zeta", &["milady"]), lora("alpha", &["milady"])];
    assert_eq!(rewrite("milady", &cat), "<lora:alpha:1>milady");
}

// ---- several LoRAs and idempotence ------------------------------------------------------

#[test]
fn several_loras_in_prompt_order() {
    let cat = [weight(milady(), 0.8), lora("pixel", &["pixel art"])];
    let r = run("Pixel Art of milady!, pixel art", &cat);
    // `!,` is a mixed run: kept, and the default weight applies.
    assert_eq!(r.prompt, "<lora:pixel:1>pixel art of <lora:milady-v1:0.8>milady!,");
    assert_eq!(applied(&r), vec![("pixel", 1.0, "Pixel Art"), ("milady-v1", 0.8, "milady")]);
}

#[test]
fn resolving_a_resolved_prompt_changes_nothing() {
    let cat =
        [cognates(weight(milady(), 0.8), &["miladies"]), lora("h", &["lorahash_1"]), lora("pixel", &["pixel art"])];
    for text in [
        "Miladies.. in pixel art, lorahash_1!",
        "milady:0 then milady",
        "milady, milady x\nmilady",
        "<lora:milady-v1:0.3>MILADY",
    ] {
        let once = rewrite(text, &cat);
        assert_eq!(rewrite(&once, &cat), once, "from {text:?}");
    }
}

#[test]
fn loader_inputs_map_applied_slugs_to_files() {
    let cat = [weight(milady(), 0.8), lora("pixel", &["pixel"])];
    let r = run("pixel <lora:milady-v1:1.3>", &cat);
    assert_eq!(r.loader_inputs(&cat), vec![("pixel.safetensors", 1.0), ("milady-v1.safetensors", 1.3)]);
}

#[test]
fn resolution_json_shape() {
    let r = run("milady.. <lora:nope:1>", &[milady()]);
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        r#"{"prompt":"<lora:milady-v1:0.6>milady","applied":[{"slug":"milady-v1","weight":0.6,"matched":"milady"}],"warnings":["removed <lora:nope:1>: no LoRA \"nope\" is available"]}"#
    );
}

// ---- fuzz -------------------------------------------------------------------------------

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Public, private-to-alice, granted-to-bob, expired, SD1.5 and FLUX LoRAs sharing words.
    fn catalog() -> Vec<LoraRecord> {
        vec![
            cognates(lora("pub-a", &["milady", "pixel art"]), &["miladies"]),
            updated(lora("pub-b", &["milady"]), 7),
            weight(lora("hash", &["lorahash_x1"]), 0.6),
            private(lora("alice-only", &["secret", "milady"]), "alice"),
            granted(private(lora("bob-share", &["hush"]), "alice"), "bob", None, false),
            granted(private(lora("expired", &["gone"]), "alice"), "bob", Some(NOW), false),
            granted(private(lora("revoked", &["nope"]), "alice"), "bob", None, true),
            checkpoint(lora("flux-a", &["fluxy"]), "FLUX.1"),
            checkpoint(lora("sd15", &["old"]), "SD1.5"),
        ]
    }

    fn token() -> impl Strategy<Value = String> {
        let words = prop::sample::select(vec![
            "milady",
            "MILADY",
            "miladies",
            "pixel art",
            "pixel",
            "art",
            "lorahash_x1",
            "secret",
            "hush",
            "gone",
            "nope",
            "fluxy",
            "old",
            "girl",
            "é",
            "日本",
            "🔥",
            " ",
            "  ",
            "\n",
            ",",
            ".",
            "..",
            "!",
            "!!",
            "!?",
            ":",
            ":0",
            ":0.5",
            ":.4",
            ":3",
            "(",
            ")",
            "[",
            "]",
            "'",
            "\"",
            ";",
            "-",
            "_",
            "2",
            "<",
            ">",
            "<lo",
            "ra:",
            "<lora:",
            "<lora:pub-a:1>",
            "<lora:alice-only:0.5>",
            "<lora:bob-share:1>",
            "<lora:expired:1>",
            "<lora:x:y>",
            "<lora:flux-a:1>",
            "<lora:sd15:1>",
            "<lora:nope:1>",
            "<LORA:PUB-B:2>",
        ]);
        prop_oneof![
            8 => words.prop_map(str::to_owned),
            1 => "\\PC{0,4}",
        ]
    }

    fn prompt() -> impl Strategy<Value = String> {
        prop::collection::vec(token(), 0..16).prop_map(|t| t.concat())
    }

    /// Slugs of well-formed `<lora:slug:number>` tags, with the grammar `resolve` uses.
    fn tag_slugs(text: &str) -> Vec<String> {
        find_tags(text)
            .into_iter()
            .filter_map(|(s, e)| {
                let (slug, w) = text[s + 6..e - 1].split_once(':')?;
                is_tag_weight(w).then(|| slug.to_ascii_lowercase())
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn never_panics_on_arbitrary_text(text in "\\PC{0,40}", who in prop::option::of("alice|bob")) {
            let cat = catalog();
            let r = resolve(&text, &cat, who.as_deref(), Some("SDXL"), NOW);
            prop_assert!(r.applied.len() <= cat.len());
        }

        #[test]
        fn tags_only_for_usable_loras_and_stable(
            text in prompt(),
            who in prop::option::of(prop::sample::select(vec!["alice", "bob", "carol"])),
            base in prop::option::of(prop::sample::select(vec!["SDXL", "FLUX", "SD1.5"])),
        ) {
            let cat = catalog();
            let r = resolve(&text, &cat, who, base, NOW);
            let usable = |slug: &str| cat.iter().any(|l| {
                l.slug == slug
                    && l.is_visible_to(who, NOW)
                    && base.is_none_or(|b| is_compatible(b, &l.checkpoint))
            });
            for a in &r.applied {
                prop_assert!(usable(&a.slug), "applied {} for {:?} on {:?}", a.slug, who, base);
            }
            for slug in tag_slugs(&r.prompt) {
                prop_assert!(usable(&slug), "tag {} in {:?} for {:?}", slug, r.prompt, who);
            }
            let mut slugs: Vec<&str> = r.applied.iter().map(|a| a.slug.as_str()).collect();
            slugs.sort_unstable();
            let before = slugs.len();
            slugs.dedup();
            prop_assert_eq!(before, slugs.len(), "a LoRA applied twice");
            let again = resolve(&r.prompt, &cat, who, base, NOW);
            prop_assert_eq!(&again.prompt, &r.prompt, "not idempotent from {:?}", text);
        }
    }
}

#[test]
fn large_catalog_and_prompt_stay_fast() {
    let cat: Vec<LoraRecord> =
        (0..5000).map(|i| lora(&format!("l{i}"), &[&format!("word{i}"), &format!("alt {i}")])).collect();
    let prompt = (0..400).map(|i| format!("word{} filler", i * 7)).collect::<Vec<_>>().join(", ");
    let started = std::time::Instant::now();
    let r = run(&prompt, &cat);
    assert_eq!(r.applied.len(), 400);
    assert!(r.prompt.starts_with("<lora:l0:1>word0 filler, <lora:l7:1>word7 filler"));
    // Generous bound for unoptimised test builds on a busy machine; catches quadratic blowups.
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
}
