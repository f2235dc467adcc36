use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Map, Value, json};

use super::*;

// ---------- helpers ----------

/// A small valid ComfyUI tool: LoadImage -> ImageScaleBy -> SaveImage.
fn tool_json(id: &str) -> Value {
    json!({
        "id": id,
        "name": "Test tool",
        "description": "scales",
        "category": "upscale",
        "service": "comfyui",
        "inputs": {
            "image": {"type": "image", "required": true, "primary": true},
            "scale": {"type": "number", "default": 2, "min": 1, "max": 4, "step": 0.5},
            "method": {"type": "enum", "choices": ["bilinear", "lanczos"], "default": "lanczos"}
        },
        "cost": {"per_run": 1},
        "comfyui": {
            "workflow": {
                "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
                "2": {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "bilinear", "scale_by": 1.0}},
                "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t"}}
            },
            "bindings": {
                "image": ["1.inputs.image"],
                "scale": ["2.inputs.scale_by"],
                "method": ["2.inputs.upscale_method"]
            },
            "outputs": ["3"]
        }
    })
}

fn write(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(v).unwrap()).unwrap();
    path
}

/// Loads `v` as the only file in a fresh folder and returns the errors for that file.
fn errors_for(v: &Value) -> (PathBuf, Vec<ToolLoadError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "tool.json", v);
    let (tools, errors) = check_dir(dir.path());
    assert!(tools.is_empty(), "expected the tool to be rejected");
    assert!(!errors.is_empty());
    for e in &errors {
        assert_eq!(e.file, path, "error names the wrong file: {e}");
    }
    (path, errors)
}

/// Asserts there is an error at exactly `field` whose reason contains every `needle`.
fn assert_error(v: &Value, field: &str, needles: &[&str]) {
    let (path, errors) = errors_for(v);
    let hit = errors.iter().find(|e| e.field == field && needles.iter().all(|n| e.reason.contains(n)));
    let Some(hit) = hit else {
        panic!("no error at {field} containing {needles:?}; got: {errors:#?}");
    };
    let shown = hit.to_string();
    assert!(shown.starts_with(&format!("{}: {field}: ", path.display())), "{shown}");
}

/// Sets (or adds) the value at `pointer`; its parent must exist.
fn with(mut v: Value, pointer: &str, new: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = v.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent}"));
    parent.as_object_mut().unwrap().insert(key.to_string(), new);
    v
}

fn without(mut v: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    v.pointer_mut(parent).unwrap().as_object_mut().unwrap().shift_remove(key).unwrap_or_else(|| panic!("no {pointer}"));
    v
}

fn parse(v: &Value) -> ToolDef {
    load::parse_tool(&v.to_string(), Path::new("test.json")).unwrap_or_else(|e| panic!("{e:?}"))
}

fn map(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

// ---------- validation ----------

#[test]
fn valid_tool_loads_with_defaults_filled_in() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "t.json", &tool_json("my-tool"));
    let (tools, errors) = check_dir(dir.path());
    assert!(errors.is_empty(), "{errors:?}");
    let t = &tools[0];
    assert_eq!(t.command, "my_tool", "command defaults to the id with - as _");
    assert_eq!(t.visibility, Visibility::Public);
    assert_eq!(t.version, 1);
    assert_eq!(t.cost, Cost::PerRun(1));
    assert_eq!(t.source, dir.path().join("t.json"));
    let names: Vec<&str> = t.inputs.keys().map(String::as_str).collect();
    assert_eq!(names, ["image", "scale", "method"], "input order is kept");
}

#[test]
fn unknown_top_level_field_is_named() {
    let mut v = tool_json("t");
    v["colour"] = json!("red");
    assert_error(&v, "colour", &["unknown field `colour`"]);
}

#[test]
fn unknown_input_field_has_its_path() {
    let v = with(tool_json("t"), "/inputs/scale/label", json!("x"));
    assert_error(&v, "inputs.scale.label", &["unknown field `label`"]);
}

#[test]
fn unknown_service_lists_allowed_ones() {
    let v = with(tool_json("t"), "/service", json!("replicate"));
    assert_error(&v, "service", &["replicate", "comfyui", "media"]);
}

#[test]
fn bad_category_and_input_type_are_named() {
    let v = with(tool_json("t"), "/category", json!("painting"));
    assert_error(&v, "category", &["painting", "text-to-image"]);
    let v = with(tool_json("t"), "/inputs/scale/type", json!("float"));
    assert_error(&v, "inputs.scale.type", &["float", "number"]);
}

#[test]
fn json_syntax_error_gives_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    std::fs::write(&path, "{\n  \"id\": \"x\",\n  oops\n}").unwrap();
    let (_, errors) = check_dir(dir.path());
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, path);
    assert!(errors[0].reason.contains("line 3"), "{}", errors[0]);
}

#[test]
fn binding_to_missing_node() {
    let v = with(tool_json("t"), "/comfyui/bindings/scale", json!(["99.inputs.scale_by"]));
    assert_error(&v, "comfyui.bindings.scale[0]", &["node \"99\"", "not in the workflow"]);
}

#[test]
fn binding_to_missing_node_field() {
    let v = with(tool_json("t"), "/comfyui/bindings/scale", json!(["2.inputs.factor"]));
    assert_error(&v, "comfyui.bindings.scale[0]", &["no input \"factor\"", "ImageScaleBy", "scale_by"]);
}

#[test]
fn binding_target_must_have_the_right_form() {
    let v = with(tool_json("t"), "/comfyui/bindings/scale", json!(["2.scale_by"]));
    assert_error(&v, "comfyui.bindings.scale[0]", &["node_id.inputs.field"]);
}

#[test]
fn binding_onto_a_link_is_refused() {
    let v = with(tool_json("t"), "/comfyui/bindings/scale", json!(["2.inputs.image"]));
    assert_error(&v, "comfyui.bindings.scale[0]", &["link", "cut the graph"]);
}

#[test]
fn binding_for_unknown_input() {
    let mut v = tool_json("t");
    v["comfyui"]["bindings"]["strength"] = json!(["2.inputs.scale_by"]);
    assert_error(&v, "comfyui.bindings.strength", &["not an input", "image, scale, method"]);
}

#[test]
fn empty_binding_list_is_an_error() {
    let v = with(tool_json("t"), "/comfyui/bindings/method", json!([]));
    assert_error(&v, "comfyui.bindings.method", &["empty binding list is not allowed"]);
}

#[test]
fn unbound_input_is_an_error() {
    let v = without(tool_json("t"), "/comfyui/bindings/method");
    assert_error(&v, "inputs.method", &["not bound into the workflow"]);
}

#[test]
fn two_inputs_bound_to_one_place() {
    let v = with(tool_json("t"), "/comfyui/bindings/method", json!(["2.inputs.scale_by"]));
    assert_error(&v, "comfyui.bindings.method[0]", &["already bound to input \"scale\""]);
}

#[test]
fn output_must_be_an_existing_node() {
    let v = with(tool_json("t"), "/comfyui/outputs", json!(["3", "8"]));
    assert_error(&v, "comfyui.outputs[1]", &["node \"8\"", "not in the workflow"]);
    let v = with(tool_json("t"), "/comfyui/outputs", json!([]));
    assert_error(&v, "comfyui.outputs", &["at least one output"]);
}

#[test]
fn lora_node_must_exist() {
    let v = with(tool_json("t"), "/comfyui/loras", json!({"node": "4"}));
    assert_error(&v, "comfyui.loras.node", &["node \"4\""]);
}

#[test]
fn graph_structure_is_checked() {
    let v = with(tool_json("t"), "/comfyui/workflow/2/inputs/image", json!(["7", 0]));
    assert_error(&v, "comfyui.workflow.2.inputs.image", &["links to node \"7\""]);
    let v = without(tool_json("t"), "/comfyui/workflow/3/class_type");
    assert_error(&v, "comfyui.workflow.3.class_type", &["missing"]);
    let v = with(tool_json("t"), "/comfyui/workflow/3/inputs", json!("x"));
    assert_error(&v, "comfyui.workflow.3.inputs", &["must be an object"]);
    let v = with(tool_json("t"), "/comfyui/workflow", json!([1, 2]));
    assert_error(&v, "comfyui.workflow", &["API-format graph"]);
}

#[test]
fn default_of_wrong_type() {
    let v = with(tool_json("t"), "/inputs/scale/default", json!("big"));
    assert_error(&v, "inputs.scale.default", &["expected a number", "\"big\""]);
}

#[test]
fn default_out_of_range() {
    let v = with(tool_json("t"), "/inputs/scale/default", json!(5));
    assert_error(&v, "inputs.scale.default", &["5 is above the maximum 4"]);
    let v = with(tool_json("t"), "/inputs/scale/default", json!(0.5));
    assert_error(&v, "inputs.scale.default", &["0.5 is below the minimum 1"]);
}

#[test]
fn default_off_step() {
    let v = with(tool_json("t"), "/inputs/scale/default", json!(2.25));
    assert_error(&v, "inputs.scale.default", &["not on the step", "0.5"]);
}

#[test]
fn enum_default_not_in_choices() {
    let v = with(tool_json("t"), "/inputs/method/default", json!("bicubic"));
    assert_error(&v, "inputs.method.default", &["\"bicubic\" is not one of: bilinear, lanczos"]);
}

#[test]
fn enum_without_choices() {
    let v = without(tool_json("t"), "/inputs/method/choices");
    assert_error(&v, "inputs.method.choices", &["enum input needs choices"]);
    let v = with(tool_json("t"), "/inputs/method/choices", json!([]));
    assert_error(&v, "inputs.method.choices", &["at least one choice"]);
}

#[test]
fn min_greater_than_max() {
    let v = with(tool_json("t"), "/inputs/scale/min", json!(5));
    assert_error(&v, "inputs.scale.min", &["min 5 is greater than max 4"]);
}

#[test]
fn range_on_non_numeric_input_and_fractional_integer_bounds() {
    let v = with(tool_json("t"), "/inputs/method/max", json!(3));
    assert_error(&v, "inputs.method.max", &["only integer and number inputs take max"]);
    let mut v = tool_json("t");
    v["inputs"]["steps"] = json!({"type": "integer", "step": 0.5});
    v["comfyui"]["workflow"]["2"]["inputs"]["steps"] = json!(1);
    v["comfyui"]["bindings"]["steps"] = json!(["2.inputs.steps"]);
    assert_error(&v, "inputs.steps.step", &["not a whole number"]);
}

#[test]
fn two_primary_inputs() {
    let v = with(tool_json("t"), "/inputs/method/primary", json!(true));
    assert_error(&v, "inputs.method.primary", &["at most one primary", "\"image\""]);
}

#[test]
fn primary_must_be_text_or_image() {
    let v = with(tool_json("t"), "/inputs/image/primary", json!(false));
    let v = with(v, "/inputs/scale/primary", json!(true));
    assert_error(&v, "inputs.scale.primary", &["must be text or image", "number"]);
}

#[test]
fn bad_id_syntax() {
    assert_error(&tool_json("My Tool"), "id", &["\"My Tool\" is not a valid id"]);
    assert_error(&tool_json("-x"), "id", &["not a valid id"]);
    assert_error(&tool_json(&"a".repeat(65)), "id", &["not a valid id"]);
}

#[test]
fn bad_command_syntax() {
    let mut v = tool_json("t");
    v["command"] = json!("Big-Command");
    assert_error(&v, "command", &["\"Big-Command\" is not a valid command", "Telegram"]);
    let mut v = tool_json("t");
    v["command"] = json!("a".repeat(33));
    assert_error(&v, "command", &["not a valid command"]);
}

#[test]
fn bad_input_name() {
    let mut v = tool_json("t");
    let scale = v["inputs"].as_object_mut().unwrap().shift_remove("scale").unwrap();
    v["inputs"]["Scale"] = scale;
    v["comfyui"]["bindings"]["Scale"] = json!(["2.inputs.scale_by"]);
    v = without(v, "/comfyui/bindings/scale");
    assert_error(&v, "inputs.Scale", &["not a valid input name"]);
}

#[test]
fn missing_comfyui_section() {
    let v = without(tool_json("t"), "/comfyui");
    assert_error(&v, "comfyui", &["missing", "service \"comfyui\""]);
}

#[test]
fn media_section_only_with_media_service() {
    let mut v = tool_json("t");
    v["media"] = json!({"operation": "blur"});
    assert_error(&v, "media", &["only allowed with service \"media\""]);
}

#[test]
fn media_tool_needs_no_bindings_but_needs_its_section() {
    let media = json!({
        "id": "shrink", "name": "Shrink", "category": "utility", "service": "media",
        "inputs": {"image": {"type": "image", "primary": true, "required": true},
                   "width": {"type": "integer", "default": 256, "min": 1}},
        "cost": {"per_run": 1},
        "media": {"operation": "resize"}
    });
    let t = parse(&media);
    assert_eq!(t.media.unwrap().operation, MediaOperation::Resize);
    assert!(t.node_types().is_empty());
    let v = without(media.clone(), "/media");
    assert_error(&v, "media", &["missing", "operation"]);
    let v = with(media, "/media/operation", json!("sharpen"));
    assert_error(&v, "media.operation", &["sharpen", "strip-metadata"]);
}

#[test]
fn cost_shapes_are_checked() {
    let v = with(tool_json("t"), "/cost", json!({"per_second": 2}));
    assert_error(&v, "cost", &["needs estimate_seconds"]);
    let v = with(tool_json("t"), "/cost", json!({"per_run": 1, "multiplier": 2}));
    assert_error(&v, "cost", &["multiplier", "config"]);
    let v = with(tool_json("t"), "/cost", json!({"per_run": 0}));
    assert_error(&v, "cost", &["positive"]);
    let v = with(tool_json("t"), "/cost", json!({"per_run": 1.5}));
    assert_error(&v, "cost.per_run", &["1.5"]);
    let t = parse(&with(tool_json("t"), "/cost", json!({"per_second": 2, "estimate_seconds": 10})));
    assert_eq!(t.cost, Cost::PerSecond { points: 2, estimate_seconds: 10 });
    assert_eq!(t.cost.estimate(), 20);
}

#[test]
fn every_problem_in_a_file_is_reported() {
    let v = with(tool_json("Bad Id"), "/inputs/scale/default", json!(9));
    let v = with(v, "/comfyui/outputs", json!(["42"]));
    let (_, errors) = errors_for(&v);
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert!(fields.contains(&"id"), "{fields:?}");
    assert!(fields.contains(&"inputs.scale.default"), "{fields:?}");
    assert!(fields.contains(&"comfyui.outputs[0]"), "{fields:?}");
}

// ---------- loading a folder ----------

#[test]
fn one_bad_file_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.json", &tool_json("alpha"));
    let bad = write(dir.path(), "b.json", &with(tool_json("beta"), "/service", json!("x")));
    std::fs::write(dir.path().join("c.json"), "not json").unwrap();
    write(dir.path(), "d.json", &tool_json("delta"));
    let (reg, errors) = ToolRegistry::load(Some(dir.path()));
    assert!(reg.get("alpha").is_some());
    assert!(reg.get("delta").is_some());
    assert!(reg.get("beta").is_none());
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].file, bad);
    assert_eq!(errors[1].file, dir.path().join("c.json"));
    assert_eq!(reg.last_errors(), errors);
}

#[test]
fn only_visible_json_files_are_read() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.json", &tool_json("alpha"));
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    std::fs::write(dir.path().join(".a.json.swp"), "junk").unwrap();
    write(dir.path(), ".hidden.json", &tool_json("hidden-one"));
    let (tools, errors) = check_dir(dir.path());
    assert!(errors.is_empty(), "{errors:?}");
    let ids: Vec<&str> = tools.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["alpha"]);
}

#[test]
fn missing_folder_means_builtins_only() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let (reg, errors) = ToolRegistry::load(Some(&missing));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(reg.list().len(), builtin_tools().0.len());
    let (none, _) = ToolRegistry::load(None);
    assert_eq!(none.list().len(), reg.list().len());
    // But checking a folder that is not there is worth saying.
    let (_, errors) = check_dir(&missing);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].reason.contains("not a folder"));
}

#[test]
fn duplicate_id_across_files_names_both() {
    let dir = tempfile::tempdir().unwrap();
    let first = write(dir.path(), "a.json", &tool_json("same"));
    let mut second_v = tool_json("same");
    second_v["command"] = json!("other");
    let second = write(dir.path(), "b.json", &second_v);
    let (tools, errors) = check_dir(dir.path());
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].source, first);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, second);
    assert_eq!(errors[0].field, "id");
    assert!(errors[0].reason.contains("duplicate tool id \"same\""));
    assert!(errors[0].reason.contains(&first.display().to_string()));
}

#[test]
fn duplicate_command_across_files_names_both() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = tool_json("one");
    a["command"] = json!("go");
    let mut b = tool_json("two");
    b["command"] = json!("go");
    let first = write(dir.path(), "a.json", &a);
    let second = write(dir.path(), "b.json", &b);
    let (reg, errors) = ToolRegistry::load(Some(dir.path()));
    assert_eq!(reg.by_command("go").unwrap().id, "one");
    assert!(reg.get("two").is_none());
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, second);
    assert_eq!(errors[0].field, "command");
    assert!(errors[0].reason.contains("duplicate command \"go\""));
    assert!(errors[0].reason.contains("\"one\""));
    assert!(errors[0].reason.contains(&first.display().to_string()));
}

#[test]
fn command_clashing_with_a_builtin_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = tool_json("my-sd");
    v["command"] = json!("sd15");
    let path = write(dir.path(), "x.json", &v);
    let (reg, errors) = ToolRegistry::load(Some(dir.path()));
    assert_eq!(reg.by_command("sd15").unwrap().id, "txt2img-sd15");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, path);
    assert!(errors[0].reason.contains("<builtin>/txt2img-sd15.json"), "{}", errors[0]);
}

#[test]
fn file_tool_overrides_builtin() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = tool_json("upscale");
    v["name"] = json!("Operator upscale");
    let path = write(dir.path(), "zz-upscale.json", &v);
    let (reg, errors) = ToolRegistry::load(Some(dir.path()));
    assert!(errors.is_empty(), "{errors:?}");
    let t = reg.get("upscale").unwrap();
    assert_eq!(t.name, "Operator upscale");
    assert_eq!(t.source, path);
    assert!(!t.is_builtin());
    assert_eq!(reg.list().len(), builtin_tools().0.len());
    // The override may reuse the built-in's command without clashing with it.
    assert_eq!(reg.by_command("upscale").unwrap().source, path);
}

#[test]
fn broken_override_keeps_the_builtin() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "upscale.json", &with(tool_json("upscale"), "/inputs/scale/default", json!(99)));
    let (reg, errors) = ToolRegistry::load(Some(dir.path()));
    assert_eq!(errors.len(), 1);
    assert!(reg.get("upscale").unwrap().is_builtin());
}

// ---------- registry ----------

#[test]
fn registry_lookups_and_generation() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "b.json", &tool_json("bbb"));
    write(dir.path(), "a.json", &tool_json("zzz"));
    let (reg, _) = ToolRegistry::load(Some(dir.path()));
    let ids: Vec<String> = reg.list().iter().map(|t| t.id.clone()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "list is sorted by id");
    assert_eq!(reg.by_command("zzz").unwrap().id, "zzz");
    assert!(reg.by_command("nope").is_none());

    let mut rx = reg.subscribe();
    let g0 = reg.generation();
    assert!(reg.reload().is_empty());
    assert_eq!(reg.generation(), g0, "an unchanged folder does not bump the generation");
    assert!(!rx.has_changed().unwrap());

    write(dir.path(), "c.json", &tool_json("ccc"));
    let clone = reg.clone();
    clone.reload();
    assert_eq!(reg.generation(), g0 + 1, "clones share one set");
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), g0 + 1);
    assert!(reg.get("ccc").is_some());

    write(dir.path(), "c.json", &with(tool_json("ccc"), "/name", json!("Renamed")));
    reg.reload();
    assert_eq!(reg.generation(), g0 + 2, "an edited tool bumps the generation");
    assert_eq!(reg.get("ccc").unwrap().name, "Renamed");
}

#[test]
fn derived_values_are_made_once_per_generation_and_type() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.json", &tool_json("aaa"));
    let (reg, _) = ToolRegistry::load(Some(dir.path()));
    let names = |reg: &ToolRegistry| reg.list().iter().map(|t| t.id.clone()).collect::<Vec<_>>().join(",");
    let made = std::cell::Cell::new(0);
    let list = |reg: &ToolRegistry| {
        reg.derived(|| {
            made.set(made.get() + 1);
            names(reg)
        })
    };
    let first = list(&reg);
    assert!(first.contains("aaa"));
    assert!(std::sync::Arc::ptr_eq(&first, &list(&reg.clone())), "clones share the value");
    assert_eq!(made.get(), 1);
    // Another type has its own slot.
    assert_eq!(*reg.derived(|| 7u32), 7);
    assert_eq!(*reg.derived(|| 8u32), 7, "made once");
    assert_eq!(made.get(), 1);

    // Unchanged folder: same generation, same value.
    reg.reload();
    assert!(std::sync::Arc::ptr_eq(&first, &list(&reg)));
    write(dir.path(), "b.json", &tool_json("bbb"));
    reg.reload();
    let second = list(&reg);
    assert_eq!(made.get(), 2, "a new generation makes it again");
    assert!(second.contains("bbb"), "{second}");
    assert_eq!(*reg.derived(|| 8u32), 8, "every type is made again");
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hot_reload_adds_and_removes_tools() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, _) = ToolRegistry::load(Some(dir.path()));
    let watcher = reg.watch().unwrap();
    let g0 = reg.generation();
    let path = write(dir.path(), "hot.json", &tool_json("hot"));
    wait_until("the new tool appears", || reg.get("hot").is_some());
    assert!(reg.generation() > g0);
    std::fs::remove_file(&path).unwrap();
    wait_until("the deleted tool goes", || reg.get("hot").is_none());

    drop(watcher);
    // Give any in-flight reload time to finish, then check that nothing is watched any more.
    std::thread::sleep(Duration::from_millis(400));
    write(dir.path(), "late.json", &tool_json("late"));
    std::thread::sleep(Duration::from_millis(800));
    assert!(reg.get("late").is_none(), "dropping the watcher stops reloads");
}

#[test]
fn hot_reload_waits_for_a_missing_folder_to_appear() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("tools");
    let (reg, _) = ToolRegistry::load(Some(&dir));
    let _watcher = reg.watch().unwrap();
    std::fs::create_dir(&dir).unwrap();
    // Written right after the folder appears, possibly before its own watch starts: the
    // re-read after starting that watch must still find it.
    write(&dir, "late.json", &tool_json("late"));
    wait_until("a tool in the new folder appears", || reg.get("late").is_some());
}

#[test]
fn watch_without_folder_is_an_error() {
    let (reg, _) = ToolRegistry::load(None);
    assert!(matches!(reg.watch(), Err(WatchError::NoFolder)));
}

// ---------- parameters ----------

fn param_tool() -> ToolDef {
    parse(&json!({
        "id": "p", "name": "P", "category": "text-to-image", "service": "comfyui",
        "inputs": {
            "prompt": {"type": "text", "required": true, "primary": true, "max_length": 10},
            "steps": {"type": "integer", "default": 20, "min": 1, "max": 50},
            "cfg": {"type": "number", "default": 7, "min": 1, "max": 30, "step": 0.5},
            "width": {"type": "integer", "default": 512, "step": 8},
            "hires": {"type": "boolean", "default": false},
            "sampler": {"type": "enum", "choices": ["euler", "ddim"], "default": "euler"},
            "seed": {"type": "seed"},
            "image": {"type": "image"},
            "ckpt": {"type": "checkpoint", "choices": ["a.safetensors", "b.safetensors"], "default": "a.safetensors"},
            "note": {"type": "text"}
        },
        "cost": {"per_run": 1},
        "comfyui": {
            "workflow": {
                "1": {"class_type": "N", "inputs": {"prompt": "", "steps": 1, "cfg": 1, "width": 1, "hires": false,
                      "sampler": "", "seed": 0, "image": "", "ckpt": "", "note": ""}}
            },
            "bindings": {
                "prompt": ["1.inputs.prompt"], "steps": ["1.inputs.steps"], "cfg": ["1.inputs.cfg"],
                "width": ["1.inputs.width"], "hires": ["1.inputs.hires"], "sampler": ["1.inputs.sampler"],
                "seed": ["1.inputs.seed"], "image": ["1.inputs.image"], "ckpt": ["1.inputs.ckpt"], "note": ["1.inputs.note"]
            },
            "outputs": ["1"]
        }
    }))
}

#[test]
fn precedence_explicit_over_saved_over_default() {
    let tool = param_tool();
    let explicit = map(json!({"prompt": "cat", "steps": 30}));
    let saved = map(json!({"steps": 10, "cfg": 9.5, "retired_input": 1}));
    let r = resolve_params(&tool, &explicit, &saved, &mut rng()).unwrap();
    assert_eq!(r.values["steps"], json!(30), "explicit beats saved");
    assert_eq!(r.values["cfg"], json!(9.5), "saved beats default");
    assert_eq!(r.values["width"], json!(512), "default used last");
    assert_eq!(r.values["sampler"], json!("euler"));
    assert!(!r.values.contains_key("retired_input"), "unknown saved keys are dropped");
    assert!(!r.values.contains_key("note"), "no value, no default: left out");
    assert!(!r.values.contains_key("image"));
    let keys: Vec<&str> = r.values.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["prompt", "steps", "cfg", "width", "hires", "sampler", "seed", "ckpt"],
        "values follow the tool's input order"
    );
}

#[test]
fn invalid_saved_value_falls_back_to_default() {
    let tool = param_tool();
    let explicit = map(json!({"prompt": "cat"}));
    let saved = map(json!({"steps": 500, "sampler": "gone"}));
    let r = resolve_params(&tool, &explicit, &saved, &mut rng()).unwrap();
    assert_eq!(r.values["steps"], json!(20));
    assert_eq!(r.values["sampler"], json!("euler"));
}

#[test]
fn strings_are_accepted_for_numbers_and_booleans() {
    let tool = param_tool();
    let explicit = map(json!({
        "prompt": "cat", "steps": " 12 ", "cfg": "2.5", "width": "1024", "hires": "YES",
        "seed": "123", "image": "media:abc_DEF-9"
    }));
    let r = resolve_params(&tool, &explicit, &Map::new(), &mut rng()).unwrap();
    assert_eq!(r.values["steps"], json!(12));
    assert_eq!(r.values["cfg"], json!(2.5));
    assert_eq!(r.values["width"], json!(1024));
    assert_eq!(r.values["hires"], json!(true));
    assert_eq!(r.values["seed"], json!(123));
    assert_eq!(r.values["image"], json!("media:abc_DEF-9"));
    assert!(r.random_seeds.is_empty());
    for (text, expected) in [("off", false), ("0", false), ("on", true), ("no", false), ("1", true)] {
        let e = map(json!({"prompt": "x", "hires": text}));
        let r = resolve_params(&tool, &e, &Map::new(), &mut rng()).unwrap();
        assert_eq!(r.values["hires"], json!(expected), "{text}");
    }
}

#[test]
fn every_param_error_is_reported_at_once() {
    let tool = param_tool();
    let explicit = map(json!({
        "steps": 2.5,
        "cfg": 40,
        "width": 100,
        "hires": "maybe",
        "sampler": "heun",
        "seed": 5_000_000_000u64,
        "image": "/etc/passwd",
        "ckpt": "c.safetensors",
        "note": 3,
        "colour": "red"
    }));
    let err = resolve_params(&tool, &explicit, &Map::new(), &mut rng()).unwrap_err();
    let by_field: HashMap<&str, &str> = err.0.iter().map(|e| (e.field.as_str(), e.reason.as_str())).collect();
    let expect = [
        ("colour", "unknown input; known: prompt, steps, cfg, width, hires, sampler, seed, image, ckpt, note"),
        ("prompt", "required"),
        ("steps", "expected an integer, got 2.5"),
        ("cfg", "40 is above the maximum 30"),
        ("width", "100 is not on the step: must be a multiple of 8"),
        ("hires", "expected true or false, got \"maybe\""),
        ("sampler", "\"heun\" is not one of: euler, ddim"),
        ("seed", "seed 5000000000 out of range"),
        ("image", "expected a stored media reference like media:<id>"),
        ("ckpt", "\"c.safetensors\" is not one of: a.safetensors, b.safetensors"),
        ("note", "expected text, got 3"),
    ];
    for (field, reason) in expect {
        let got = by_field.get(field).unwrap_or_else(|| panic!("no error for {field}: {err}"));
        assert!(got.starts_with(reason), "{field}: {got:?} does not start with {reason:?}");
    }
    assert_eq!(err.0.len(), expect.len(), "{err}");
    let shown = err.to_string();
    assert!(shown.contains("; prompt: required; steps: expected an integer"), "{shown}");
}

#[test]
fn more_param_errors() {
    let tool = param_tool();
    let cases = [
        (json!({"prompt": "far too long here"}), "prompt", "too long: 17 characters, at most 10"),
        (json!({"prompt": ""}), "prompt", "required; must not be empty"),
        (json!({"prompt": "x", "cfg": 2.25}), "cfg", "2.25 is not on the step: must be 1 plus a multiple of 0.5"),
        (json!({"prompt": "x", "steps": 0}), "steps", "0 is below the minimum 1"),
        (json!({"prompt": "x", "steps": "ten"}), "steps", "expected an integer, got \"ten\""),
        (json!({"prompt": "x", "seed": -2}), "seed", "seed -2 out of range"),
        (json!({"prompt": "x", "image": "media:"}), "image", "expected a stored media reference"),
        (
            json!({"prompt": "x", "image": format!("media:{}", "a".repeat(65))}),
            "image",
            "expected a stored media reference",
        ),
        (json!({"prompt": "x", "ckpt": ""}), "ckpt", "expected a model file name"),
    ];
    for (explicit, field, reason) in cases {
        let err = resolve_params(&tool, &map(explicit.clone()), &Map::new(), &mut rng()).unwrap_err();
        assert_eq!(err.0.len(), 1, "{explicit}: {err}");
        assert_eq!(err.0[0].field, field);
        assert!(err.0[0].reason.starts_with(reason), "{explicit}: {}", err.0[0].reason);
    }
}

#[test]
fn seeds_are_randomised_and_recorded() {
    let tool = param_tool();
    for seed in [json!(-1), json!(null), json!(""), json!("-1")] {
        let e = map(json!({"prompt": "x", "seed": seed}));
        let r = resolve_params(&tool, &e, &Map::new(), &mut rng()).unwrap();
        assert_eq!(r.random_seeds, ["seed"], "{seed}");
        assert!(r.values["seed"].as_u64().unwrap() <= u64::from(u32::MAX));
    }
    let e = map(json!({"prompt": "x"}));
    let r = resolve_params(&tool, &e, &Map::new(), &mut rng()).unwrap();
    assert_eq!(r.random_seeds, ["seed"], "a missing seed is random");

    // Different generator states give different seeds: the value really comes from the rng.
    let mut g = rng();
    let seeds: std::collections::HashSet<u64> = (0..20)
        .map(|_| resolve_params(&tool, &e, &Map::new(), &mut g).unwrap().values["seed"].as_u64().unwrap())
        .collect();
    assert!(seeds.len() > 15, "{seeds:?}");

    // A saved fixed seed is honoured, and 0 and u32::MAX are valid.
    let r = resolve_params(&tool, &e, &map(json!({"seed": 42})), &mut rng()).unwrap();
    assert_eq!(r.values["seed"], json!(42));
    assert!(r.random_seeds.is_empty());
    for s in [0u64, u64::from(u32::MAX)] {
        let e = map(json!({"prompt": "x", "seed": s}));
        let r = resolve_params(&tool, &e, &Map::new(), &mut rng()).unwrap();
        assert_eq!(r.values["seed"], json!(s));
    }
}

#[test]
fn media_reference_syntax() {
    assert!(is_media_ref("media:a"));
    assert!(is_media_ref(&format!("media:{}", "Z".repeat(64))));
    assert!(!is_media_ref("media:a.b"));
    assert!(!is_media_ref("media:../x"));
    assert!(!is_media_ref("file:a"));
}

// ---------- binding ----------

#[test]
fn binding_writes_every_place_and_image_names() {
    let mut v = tool_json("t");
    // Bind scale to a second place as well.
    v["comfyui"]["workflow"]["4"] =
        json!({"class_type": "ImageScaleBy", "inputs": {"image": ["2", 0], "upscale_method": "area", "scale_by": 1.0}});
    v["comfyui"]["bindings"]["scale"] = json!(["2.inputs.scale_by", "4.inputs.scale_by"]);
    let tool = parse(&v);
    let explicit = map(json!({"image": "media:m1", "scale": "3.5"}));
    let params = resolve_params(&tool, &explicit, &Map::new(), &mut rng()).unwrap();
    let uploads = HashMap::from([("image".to_string(), "station_abc.png".to_string())]);
    let bound = bind_workflow(&tool, &params.values, &uploads).unwrap();
    assert_eq!(bound["1"]["inputs"]["image"], json!("station_abc.png"));
    assert_eq!(bound["2"]["inputs"]["scale_by"], json!(3.5));
    assert_eq!(bound["4"]["inputs"]["scale_by"], json!(3.5));
    assert_eq!(bound["2"]["inputs"]["upscale_method"], json!("lanczos"));
    assert_eq!(bound["2"]["inputs"]["image"], json!(["1", 0]), "links are untouched");
    assert_eq!(bound["4"]["inputs"]["upscale_method"], json!("area"), "unbound literals stay");
    // The definition itself is not modified.
    assert_eq!(tool.comfyui.as_ref().unwrap().workflow["2"]["inputs"]["scale_by"], json!(1.0));
}

#[test]
fn binding_errors() {
    let tool = parse(&tool_json("t"));
    let params = map(json!({"image": "media:m1"}));
    assert_eq!(bind_workflow(&tool, &params, &HashMap::new()), Err(BindError::MissingUpload("image".into())));
    let media = parse(&json!({
        "id": "m", "name": "M", "category": "utility", "service": "media",
        "cost": {"per_run": 1}, "media": {"operation": "invert"}
    }));
    assert_eq!(bind_workflow(&media, &Map::new(), &HashMap::new()), Err(BindError::NotComfyUi("m".into())));
}

#[test]
fn tool_helpers() {
    let tool = parse(&tool_json("t"));
    let types: Vec<String> = tool.node_types().into_iter().collect();
    assert_eq!(types, ["ImageScaleBy", "LoadImage", "SaveImage"]);
    assert_eq!(tool.input_for_node("1"), Some("image"));
    assert_eq!(tool.input_for_node("2"), Some("scale"), "first bound input in order");
    assert_eq!(tool.input_for_node("3"), None);
    assert_eq!(tool.primary_input().map(|(n, _)| n), Some("image"));

    let p = param_tool();
    assert_eq!(p.checkpoint_param(&map(json!({"ckpt": "b.safetensors"}))).as_deref(), Some("b.safetensors"));
    assert_eq!(p.checkpoint_param(&Map::new()).as_deref(), Some("a.safetensors"), "falls back to the default");
    assert_eq!(tool.checkpoint_param(&Map::new()), None);
}

#[test]
fn tool_def_serialises_in_file_shape() {
    let v = tool_json("t");
    let tool = parse(&v);
    let out = serde_json::to_value(&tool).unwrap();
    assert_eq!(out["cost"], json!({"per_run": 1}));
    assert_eq!(out["category"], json!("upscale"));
    assert_eq!(out["inputs"]["scale"]["type"], json!("number"));
    // What is serialised reads back as the same tool.
    let again = parse(&out);
    assert_eq!(again, ToolDef { source: again.source.clone(), ..tool });
}

// ---------- built-ins ----------

#[test]
fn builtins_load_without_errors() {
    let (tools, errors) = builtin_tools();
    assert!(errors.is_empty(), "{errors:?}");
    let mut ids: Vec<&str> = tools.iter().map(|t| t.id.as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "blur",
            "comfy-resize",
            "convert",
            "crop",
            "flip",
            "img2img",
            "img2img-sd15",
            "invert",
            "resize",
            "rotate",
            "strip-metadata",
            "thumbnail",
            "txt2img",
            "txt2img-flux",
            "txt2img-sd15",
            "txt2img-sdxl",
            "upscale",
            "upscale-model",
            "watermark"
        ]
    );
    let (reg, errors) = ToolRegistry::load(None);
    assert!(errors.is_empty(), "built-ins clash with each other: {errors:?}");
    for (cmd, id) in [
        ("sd15", "txt2img-sd15"),
        ("sdxl", "txt2img-sdxl"),
        ("flux", "txt2img-flux"),
        ("img2img", "img2img-sd15"),
        ("comfy_resize", "comfy-resize"),
        ("upscale", "upscale"),
        ("draw", "txt2img"),
        ("reimagine", "img2img"),
    ] {
        assert_eq!(reg.by_command(cmd).unwrap().id, id);
    }
    for t in reg.list() {
        assert!(t.is_builtin());
        let hidden = t.visibility == Visibility::Hidden;
        let has_file_name = t.inputs.values().any(|i| i.kind == InputType::Checkpoint);
        assert_eq!(hidden, has_file_name, "{}: templates hard-wired to a file are hidden, the others public", t.id);
        // Tools with a model input are public: the core lists them only
        // while some backend has a model of that kind.
        if let Some((_, m)) = t.model_input() {
            assert!(crate::MODEL_KINDS.contains(&m.model_kind.as_deref().unwrap_or_default()), "{}", t.id);
        }
    }
}

#[test]
fn each_builtin_resolves_and_binds() {
    for tool in builtin_tools().0 {
        let mut explicit = Map::new();
        let mut uploads = HashMap::new();
        if let Some((name, def)) = tool.primary_input() {
            match def.kind {
                InputType::Image => {
                    explicit.insert(name.into(), json!("media:in1"));
                    uploads.insert(name.to_string(), "uploaded_in1.png".to_string());
                }
                _ => {
                    explicit.insert(name.into(), json!("a lighthouse at dusk"));
                }
            }
        }
        for (name, def) in &tool.inputs {
            if def.required && !explicit.contains_key(name) && def.kind == InputType::Text {
                explicit.insert(name.clone(), json!("a lighthouse at dusk"));
            }
        }
        // A model input is filled by the core from the inventory.
        if let Some((name, _)) = tool.model_input() {
            explicit.insert(name.into(), json!("some-model.safetensors"));
        }
        // What the tools' rules ask for (a size for resize and crop).
        if matches!(tool.id.as_str(), "resize" | "crop") {
            explicit.insert("width".into(), json!(64));
            explicit.insert("height".into(), json!(64));
        }
        let params =
            resolve_params(&tool, &explicit, &Map::new(), &mut rng()).unwrap_or_else(|e| panic!("{}: {e}", tool.id));
        // Native media tools have no workflow to bind.
        let Some(comfy) = tool.comfyui.as_ref() else { continue };
        let bound = bind_workflow(&tool, &params.values, &uploads).unwrap_or_else(|e| panic!("{}: {e}", tool.id));
        for (input, targets) in &comfy.bindings {
            let expected = match tool.inputs[input].kind {
                InputType::Image => json!("uploaded_in1.png"),
                _ => params.values[input].clone(),
            };
            for target in targets {
                let t = BindingTarget::parse(target).unwrap();
                assert_eq!(bound[t.node]["inputs"][t.field], expected, "{}: {target}", tool.id);
            }
        }
        assert!(!tool.node_types().is_empty());
    }
}

/// Built-ins must match a stock ComfyUI: node names, input names, enum choices and ranges are
/// checked against the recorded `/object_info` for every node the recording covers.
#[test]
fn builtins_match_recorded_object_info() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/comfyui/transcripts/object_info_subset.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("skipping: {} is not available", path.display());
        return;
    };
    let info: Value = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    for tool in builtin_tools().0 {
        let Some(comfy) = tool.comfyui.as_ref() else { continue };
        for (node_id, node) in comfy.workflow.as_object().unwrap() {
            let class = node["class_type"].as_str().unwrap();
            let Some(spec) = info.get(class) else {
                continue;
            };
            let declared = &spec["input"]["required"];
            for key in node["inputs"].as_object().unwrap().keys() {
                assert!(
                    declared.get(key).is_some(),
                    "{}: node {node_id} ({class}) has input {key} that ComfyUI does not know",
                    tool.id
                );
            }
            for key in declared.as_object().unwrap().keys() {
                assert!(
                    node["inputs"].get(key).is_some(),
                    "{}: node {node_id} ({class}) lacks required input {key}",
                    tool.id
                );
            }
            checked += 1;
        }
        for (input, targets) in &comfy.bindings {
            let def = &tool.inputs[input];
            for target in targets {
                let t = BindingTarget::parse(target).unwrap();
                let class = comfy.workflow[t.node]["class_type"].as_str().unwrap();
                let Some(spec) = info.get(class) else {
                    continue;
                };
                let decl = &spec["input"]["required"][t.field];
                if let Some(allowed) = decl[0].as_array().filter(|a| !a.is_empty())
                    && def.kind == InputType::Enum
                {
                    for c in def.choices() {
                        assert!(allowed.contains(&json!(c)), "{}: {input} choice {c} unknown to {class}", tool.id);
                    }
                }
                if !matches!(def.kind, InputType::Integer | InputType::Number) {
                    continue;
                }
                if let Some(min) = decl[1]["min"].as_f64() {
                    assert!(def.min.unwrap() >= min, "{}: {input} min below {class}'s", tool.id);
                }
                if let Some(max) = decl[1]["max"].as_f64() {
                    assert!(def.max.unwrap() <= max, "{}: {input} max above {class}'s", tool.id);
                }
            }
        }
    }
    assert!(checked > 10, "only {checked} nodes were checked");
}

/// The examples in the operator reference must stay valid as the format evolves.
#[test]
fn tools_md_examples_load() {
    let doc = include_str!("../TOOLS.md");
    // Whole tool files (fragments such as a `rules` line are shown too).
    let blocks: Vec<&str> = doc
        .split("```json\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .filter(|b| b.trim_start().starts_with('{'))
        .collect();
    assert_eq!(blocks.len(), 3);
    let dir = tempfile::tempdir().unwrap();
    for (i, block) in blocks.iter().enumerate() {
        std::fs::write(dir.path().join(format!("example{i}.json")), block).unwrap();
    }
    let (tools, errors) = check_dir(dir.path());
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(tools.len(), 3);
    // The caption tool of "Text outputs" (training's auto-captions).
    assert!(tools.iter().any(|t| t.id == "caption"), "the caption example loads");
    let portrait = tools.iter().find(|t| t.id == "portrait").unwrap();
    let params =
        resolve_params(portrait, &map(json!({"prompt": "a lighthouse keeper"})), &Map::new(), &mut rng()).unwrap();
    let bound = bind_workflow(portrait, &params.values, &HashMap::new()).unwrap();
    assert_eq!(bound["6"]["inputs"]["text"], json!("a lighthouse keeper"));
    assert_eq!(bound["3"]["inputs"]["sampler_name"], json!("dpmpp_2m"));
}

// ---------- issue 17: skipped entries, logging once, file size ----------

/// Log lines of the whole test process (a global subscriber: the watcher's
/// reload thread logs too), for tests to filter by their own folder.
fn captured_logs() -> &'static std::sync::Mutex<Vec<u8>> {
    static LOGS: std::sync::OnceLock<std::sync::Mutex<Vec<u8>>> = std::sync::OnceLock::new();
    static INIT: std::sync::Once = std::sync::Once::new();
    struct Sink;
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            captured_logs().lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = LOGS.get_or_init(Default::default);
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_writer(|| Sink)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .try_init();
    });
    logs
}

fn log_lines_with(needles: &[&str]) -> usize {
    let text = String::from_utf8_lossy(&captured_logs().lock().unwrap()).to_string();
    text.lines().filter(|l| needles.iter().all(|n| l.contains(n))).count()
}

/// Issue 17, item 11: `*.json` entries that are no readable file are listed
/// with a reason each, and logged once — also when the tools folder is
/// created after start (its parent, the data folder, kept triggering
/// reloads that logged "overrides the built-in tool" every time).
#[cfg(unix)]
#[test]
fn skipped_entries_are_listed_with_a_reason_and_logged_once() {
    captured_logs();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("tools");
    let (reg, _) = ToolRegistry::load(Some(&dir));
    let _watcher = reg.watch().unwrap();
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(dir.join("loop.json"), dir.join("loop.json")).unwrap();
    std::os::unix::fs::symlink(dir.join("nothing-here.json.bak"), dir.join("dangling.json")).unwrap();
    std::fs::create_dir(dir.join("folder.json")).unwrap();
    let fifo = std::process::Command::new("mkfifo").arg(dir.join("pipe.json")).status().unwrap();
    assert!(fifo.success());
    let mut resize = tool_json("resize");
    resize["command"] = json!("resize");
    write(&dir, "resize.json", &resize);
    wait_until("the file replaces the built-in", || reg.get("resize").is_some_and(|t| !t.is_builtin()));

    let (_, errors) = check_dir(&dir);
    let expected = [
        ("loop.json", "symbolic link loop"),
        ("dangling.json", "does not exist"),
        ("folder.json", "a folder"),
        ("pipe.json", "named pipe"),
    ];
    for (name, reason) in expected {
        let e =
            errors.iter().find(|e| e.file.ends_with(name)).unwrap_or_else(|| panic!("{name} not listed: {errors:?}"));
        assert!(e.reason.contains(reason), "{name}: {e}");
    }
    assert_eq!(errors.len(), expected.len(), "{errors:?}");

    // The data folder keeps changing (the database lives there) and the
    // folder is reloaded again: nothing new, nothing logged again.
    for i in 0..5 {
        std::fs::write(parent.path().join(format!("station.db-{i}")), "x").unwrap();
        reg.reload();
        std::thread::sleep(DEBOUNCE_WAIT);
    }
    let shown = dir.display().to_string();
    assert_eq!(log_lines_with(&["overrides the built-in tool", &shown]), 1, "one override line");
    for (name, _) in expected {
        let path = dir.join(name).display().to_string();
        assert_eq!(log_lines_with(&["tool not loaded", &path]), 1, "{name} logged once");
    }
}

/// Longer than the registry's debounce, so a reload from the watcher would have run.
const DEBOUNCE_WAIT: Duration = Duration::from_millis(400);

/// Issue 17, item 13: a tool file over `tools.max_file_bytes` is refused
/// with an error naming the limit, so no huge description is ever served.
#[test]
fn tool_files_over_the_size_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut big = tool_json("big");
    big["description"] = json!("x".repeat(2 * 1024 * 1024));
    big["command"] = json!("big");
    let path = write(dir.path(), "big.json", &big);
    let mut small = tool_json("small");
    small["command"] = json!("small");
    write(dir.path(), "small.json", &small);
    let (tools, errors) = check_dir(dir.path());
    assert_eq!(tools.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["small"]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].file, path);
    assert!(errors[0].reason.contains("tools.max_file_bytes") && errors[0].reason.contains("1048576"), "{}", errors[0]);
    let (reg, _) = ToolRegistry::load(Some(dir.path()));
    assert!(reg.get("big").is_none() && reg.get("small").is_some());
    // The operator can raise it.
    let (tools, errors) = check_dir_with(dir.path(), LoadOptions { max_file_bytes: 4 * 1024 * 1024 });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(tools.len(), 2);
}

/// Issue 17, item 9: `rules` between inputs are validated when a tool loads
/// (file, field, reason) and checked when parameters resolve, every
/// problem at once.
#[test]
fn cross_field_rules_are_validated_and_checked() {
    let mut bad = tool_json("ruled");
    bad["rules"] = json!([
        {"one_of": ["scale", "nope"]},
        {"requires": {"ghost": "scale"}},
        {"excludes": {}},
        {"sometimes": ["scale"]}
    ]);
    let (_, errors) = errors_for(&bad);
    assert!(!errors.is_empty());
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    // An unknown rule kind is a shape error reported on its own.
    assert!(fields.iter().all(|f| f.starts_with("rules")), "{errors:?}");
    bad["rules"].as_array_mut().unwrap().pop();
    let (_, errors) = errors_for(&bad);
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["rules[0].one_of[1]", "rules[1].requires", "rules[2]"], "{errors:?}");
    assert!(errors[0].reason.contains("no input named \"nope\""), "{}", errors[0]);

    let (builtins, errors) = builtin_tools();
    assert!(errors.is_empty(), "{errors:?}");
    let tool = |id: &str| builtins.iter().find(|t| t.id == id).unwrap().clone();
    let image = json!("media:0123456789abcdef0123456789abcdef");
    let resolve = |t: &ToolDef, params: Value| {
        let params = params.as_object().unwrap().clone();
        resolve_params(t, &params, &Map::new(), &mut StdRng::seed_from_u64(1))
            .err()
            .map(|e| e.0.into_iter().map(|f| (f.field, f.reason)).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let resize = tool("resize");
    let e = resolve(&resize, json!({"image": image}));
    assert_eq!(e, [("width".to_string(), "give one of width, height, scale".to_string())]);
    let e = resolve(&resize, json!({"image": image, "scale": 2, "width": 10}));
    assert_eq!(e, [("scale".to_string(), "cannot be combined with width".to_string())]);
    assert!(resolve(&resize, json!({"image": image, "scale": 2})).is_empty());
    assert!(resolve(&resize, json!({"image": image, "width": 10, "height": 5})).is_empty());
    let crop = tool("crop");
    // Every problem at once: no size and an anchor without aspect.
    let e = resolve(&crop, json!({"image": image, "anchor": "top"}));
    let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["width", "anchor"], "{e:?}");
    assert!(e[1].1.contains("aspect"), "{e:?}");
    assert!(resolve(&crop, json!({"image": image, "anchor": "top", "aspect": "1:1"})).is_empty());
    let e = resolve(&crop, json!({"image": image, "aspect": "1:1", "x": 3}));
    assert_eq!(e, [("aspect".to_string(), "cannot be combined with x".to_string())]);
}

#[test]
fn model_inputs_are_checked_and_base_model_defaults_apply() {
    let mut tool = json!({
        "id": "m", "name": "M", "category": "text-to-image", "service": "comfyui",
        "inputs": {
            "prompt": {"type": "text", "required": true, "primary": true},
            "model": {"type": "model", "kind": "checkpoint"},
            "width": {"type": "integer", "default": 512, "min": 64, "max": 2048}
        },
        "base_model_defaults": {"SDXL": {"width": 1024}},
        "cost": {"per_run": 1},
        "comfyui": {"workflow": {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ""}},
                    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
                    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
                    "9": {"class_type": "SaveImage", "inputs": {"images": ["4", 0]}}},
                    "bindings": {"model": ["4.inputs.ckpt_name"], "prompt": ["6.inputs.text"],
                                 "width": ["5.inputs.width"]}, "outputs": ["9"]}
    });
    let t = parse(&tool);
    assert_eq!(t.model_input().map(|(n, d)| (n, d.model_kind.as_deref())), Some(("model", Some("checkpoint"))));
    let defaults = t.base_model_defaults["SDXL"].clone();
    let explicit: Map<String, Value> =
        serde_json::from_value(json!({"prompt": "x", "model": " a.safetensors "})).unwrap();
    let r = crate::resolve_params_with_defaults(&t, &explicit, &Map::new(), &defaults, &mut rand::rng()).unwrap();
    assert_eq!(r.values["width"], json!(1024));
    assert_eq!(r.values["model"], json!("a.safetensors"));
    let explicit: Map<String, Value> = serde_json::from_value(json!({"prompt": "x", "width": 640})).unwrap();
    let r = crate::resolve_params_with_defaults(&t, &explicit, &Map::new(), &defaults, &mut rand::rng()).unwrap();
    assert_eq!(r.values["width"], json!(640), "an explicit value beats the base model's default");
    let e = crate::resolve_params(
        &t,
        &serde_json::from_value(json!({"prompt": "x", "model": 3})).unwrap(),
        &Map::new(),
        &mut rand::rng(),
    )
    .unwrap_err();
    assert_eq!(e.0[0].field, "model");

    tool["inputs"]["model"] = json!({"type": "model", "kind": "spaceship"});
    tool["base_model_defaults"] = json!({"SDXL": {"width": 9999, "nope": 1}});
    assert_error(&tool, "inputs.model.kind", &["spaceship"]);
    assert_error(&tool, "base_model_defaults.SDXL.width", &["2048"]);
    assert_error(&tool, "base_model_defaults.SDXL.nope", &["no such input"]);
    tool["inputs"]["model"] = json!({"type": "text", "kind": "checkpoint"});
    assert_error(&tool, "inputs.model.kind", &["only model inputs take kind"]);
}

// ---------- hosted deployments (service "comfydeploy") ----------

fn hosted_json() -> Value {
    json!({
        "id": "hosted", "name": "Hosted", "category": "text-to-image", "service": "comfydeploy",
        "inputs": {"prompt": {"type": "text", "required": true, "primary": true},
                   "seed": {"type": "seed", "default": -1}},
        "cost": {"per_second": 1, "estimate_seconds": 10},
        "comfydeploy": {"deployment_id": "dep-1", "inputs": {"prompt": "positive_prompt", "seed": "seed"}}
    })
}

#[test]
fn a_hosted_tool_binds_its_inputs_to_the_deployments_external_inputs() {
    let t = parse(&hosted_json());
    assert_eq!(t.service, crate::Service::Comfydeploy);
    let spec = t.comfydeploy.as_ref().unwrap();
    assert_eq!(spec.deployment_id, "dep-1");
    assert_eq!(spec.inputs["prompt"], "positive_prompt");
    assert!(t.comfyui.is_none() && t.media.is_none());
}

#[test]
fn a_hosted_tool_names_each_problem_of_its_binding() {
    assert_error(&without(hosted_json(), "/comfydeploy"), "comfydeploy", &["missing", "deployment_id"]);
    assert_error(
        &with(hosted_json(), "/comfydeploy/deployment_id", json!(" ")),
        "comfydeploy.deployment_id",
        &["empty"],
    );
    assert_error(
        &with(hosted_json(), "/comfydeploy/deployment_id", json!("a/b")),
        "comfydeploy.deployment_id",
        &["not a deployment id"],
    );
    let v = with(hosted_json(), "/comfydeploy/inputs/colour", json!("colour"));
    assert_error(&v, "comfydeploy.inputs.colour", &["not an input of this tool", "prompt, seed"]);
    let v = with(hosted_json(), "/comfydeploy/inputs/seed", json!("positive_prompt"));
    assert_error(&v, "comfydeploy.inputs.seed", &["already filled by input \"prompt\""]);
    let v = without(hosted_json(), "/comfydeploy/inputs/seed");
    assert_error(&v, "inputs.seed", &["not sent to the deployment", "comfydeploy.inputs"]);
    let v = with(hosted_json(), "/inputs/model", json!({"type": "model", "kind": "checkpoint"}));
    let v = with(v, "/comfydeploy/inputs/model", json!("ckpt"));
    assert_error(&v, "inputs.model.type", &["models built in"]);
    let v = with(hosted_json(), "/comfydeploy/deployment", json!("x"));
    assert_error(&v, "comfydeploy.deployment", &["unknown field `deployment`"]);
    // Sections of other services are refused on a hosted tool, and the reverse.
    let v = with(hosted_json(), "/media", json!({"operation": "blur"}));
    assert_error(&v, "media", &["only allowed with service \"media\"", "\"comfydeploy\""]);
    let mut v = tool_json("t");
    v["comfydeploy"] = json!({"deployment_id": "d", "inputs": {}});
    assert_error(&v, "comfydeploy", &["only allowed with service \"comfydeploy\"", "\"comfyui\""]);
}
