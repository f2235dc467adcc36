//! Reading tool files and built-ins into one consistent set.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::def::{RawToolDef, ToolDef};
use crate::validate::validate;

/// Source path prefix for built-in tools compiled into the binary.
pub const BUILTIN_PREFIX: &str = "<builtin>";

/// Built-in tool files: (file name, contents).
const BUILTINS: &[(&str, &str)] = &[
    ("resize.json", include_str!("../builtin/resize.json")),
    ("convert.json", include_str!("../builtin/convert.json")),
    ("crop.json", include_str!("../builtin/crop.json")),
    ("thumbnail.json", include_str!("../builtin/thumbnail.json")),
    ("watermark.json", include_str!("../builtin/watermark.json")),
    ("rotate.json", include_str!("../builtin/rotate.json")),
    ("flip.json", include_str!("../builtin/flip.json")),
    ("strip-metadata.json", include_str!("../builtin/strip-metadata.json")),
    ("upscale.json", include_str!("../builtin/upscale.json")),
    ("blur.json", include_str!("../builtin/blur.json")),
    ("invert.json", include_str!("../builtin/invert.json")),
    ("comfy-resize.json", include_str!("../builtin/comfy-resize.json")),
    ("txt2img-sd15.json", include_str!("../builtin/txt2img-sd15.json")),
    ("txt2img-sdxl.json", include_str!("../builtin/txt2img-sdxl.json")),
    ("txt2img-flux.json", include_str!("../builtin/txt2img-flux.json")),
    ("img2img-sd15.json", include_str!("../builtin/img2img-sd15.json")),
    ("upscale-model.json", include_str!("../builtin/upscale-model.json")),
];

/// A tool file (or built-in) that could not be loaded, or a problem in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct ToolLoadError {
    /// The file, or `<builtin>/NAME.json`.
    pub file: PathBuf,
    /// JSON path of the bad field (`inputs.scale.default`); empty for whole-file problems.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ToolLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.field, self.reason)
        }
    }
}

/// Parses and validates one tool file's text; every problem found is returned.
pub(crate) fn parse_tool(text: &str, source: &Path) -> Result<ToolDef, Vec<ToolLoadError>> {
    let err = |field: String, reason: String| ToolLoadError { file: source.to_path_buf(), field, reason };
    let de = &mut serde_json::Deserializer::from_str(text);
    let raw: RawToolDef = match serde_path_to_error::deserialize(de) {
        Ok(raw) => raw,
        Err(e) => {
            let path = e.path().to_string();
            let field = if path == "." { String::new() } else { path };
            return Err(vec![err(field, e.into_inner().to_string())]);
        }
    };
    let def = raw.into_def(source.to_path_buf());
    let problems = validate(&def);
    if problems.is_empty() { Ok(def) } else { Err(problems.into_iter().map(|p| err(p.field, p.reason)).collect()) }
}

/// The built-in tools, parsed and validated.
pub fn builtin_tools() -> (Vec<Arc<ToolDef>>, Vec<ToolLoadError>) {
    let mut tools = Vec::new();
    let mut errors = Vec::new();
    for (name, text) in BUILTINS {
        let source = Path::new(BUILTIN_PREFIX).join(name);
        match parse_tool(text, &source) {
            Ok(def) => tools.push(Arc::new(def)),
            Err(e) => errors.extend(e),
        }
    }
    (tools, errors)
}

/// The `*.json` files directly in `dir`, sorted by file name so loading is deterministic.
/// Hidden files (editor swap files, `.#x.json`) are skipped. A missing folder has no files.
fn tool_files(dir: &Path) -> Result<Vec<PathBuf>, ToolLoadError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ToolLoadError {
                file: dir.to_path_buf(),
                field: String::new(),
                reason: format!("cannot read the tools folder: {e}"),
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && name.ends_with(".json") && p.is_file()
        })
        .collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Loads built-ins, then every tool file in `dir`, into one set keyed by id.
///
/// A file tool with a built-in's id replaces the built-in. Two files with one id, or two tools
/// with one command, reject the later file (built-ins come first, files in name order).
pub(crate) fn load_all(dir: Option<&Path>) -> (BTreeMap<String, Arc<ToolDef>>, Vec<ToolLoadError>) {
    let (builtins, mut errors) = builtin_tools();

    let mut files: Vec<Arc<ToolDef>> = Vec::new();
    if let Some(dir) = dir {
        match tool_files(dir) {
            Ok(paths) => {
                for path in paths {
                    let text = match std::fs::read_to_string(&path) {
                        Ok(t) => t,
                        Err(e) => {
                            errors.push(ToolLoadError {
                                file: path,
                                field: String::new(),
                                reason: format!("cannot read: {e}"),
                            });
                            continue;
                        }
                    };
                    match parse_tool(&text, &path) {
                        Ok(def) => {
                            if let Some(first) = files.iter().find(|t| t.id == def.id) {
                                errors.push(ToolLoadError {
                                    file: path,
                                    field: "id".into(),
                                    reason: format!(
                                        "duplicate tool id \"{}\": already defined in {}",
                                        def.id,
                                        first.source.display()
                                    ),
                                });
                            } else {
                                files.push(Arc::new(def));
                            }
                        }
                        Err(e) => errors.extend(e),
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }

    // Overrides are settled before commands are compared, so whether a file's command clashes
    // with a built-in does not depend on whether the override file sorts before or after it.
    let mut ordered: Vec<Arc<ToolDef>> = Vec::new();
    for b in builtins {
        match files.iter().find(|f| f.id == b.id) {
            Some(f) => tracing::info!(
                tool = %b.id,
                file = %f.source.display(),
                "tool file overrides the built-in tool"
            ),
            None => ordered.push(b),
        }
    }
    ordered.extend(files);

    let mut by_id = BTreeMap::new();
    let mut commands: HashMap<String, Arc<ToolDef>> = HashMap::new();
    for tool in ordered {
        if let Some(first) = commands.get(&tool.command) {
            errors.push(ToolLoadError {
                file: tool.source.clone(),
                field: "command".into(),
                reason: format!(
                    "duplicate command \"{}\": already used by tool \"{}\" in {}",
                    tool.command,
                    first.id,
                    first.source.display()
                ),
            });
            continue;
        }
        commands.insert(tool.command.clone(), tool.clone());
        by_id.insert(tool.id.clone(), tool);
    }
    (by_id, errors)
}

/// Checks the tool files in `dir` as the registry would load them (including clashes with
/// built-ins), for `station tools check DIR`. Returns the tools from `dir` that loaded.
pub fn check_dir(dir: &Path) -> (Vec<Arc<ToolDef>>, Vec<ToolLoadError>) {
    // The registry tolerates a missing folder, but asking to check one that is not there is
    // almost certainly a typo worth reporting.
    if !dir.is_dir() {
        let err = ToolLoadError {
            file: dir.to_path_buf(),
            field: String::new(),
            reason: "not a folder (or does not exist)".into(),
        };
        return (Vec::new(), vec![err]);
    }
    let (by_id, errors) = load_all(Some(dir));
    let tools = by_id.into_values().filter(|t| !t.is_builtin()).collect();
    (tools, errors)
}
