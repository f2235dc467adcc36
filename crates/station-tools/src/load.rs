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
    ("txt2img.json", include_str!("../builtin/txt2img.json")),
    ("img2img.json", include_str!("../builtin/img2img.json")),
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
/// `source` names the file in errors (and [`ToolDef::source`]).
pub fn parse_tool(text: &str, source: &Path) -> Result<ToolDef, Vec<ToolLoadError>> {
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

/// How tool files are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Largest tool file read, in bytes (`tools.max_file_bytes`); a larger
    /// one is refused with an error naming the limit, so no tool (and no
    /// 100 MB description) of that size ever reaches `GET /api/v1/tools`.
    pub max_file_bytes: u64,
}

/// 1 MiB: the largest built-in workflow is a few KB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1024 * 1024;

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { max_file_bytes: DEFAULT_MAX_FILE_BYTES }
    }
}

/// Why a `*.json` entry of the tools folder is not a file that can be read:
/// a symbolic link loop or one to nothing, a named pipe, a folder, a socket
/// or device. `None` for a regular file (or a link to one).
fn not_a_file(path: &Path) -> Option<String> {
    let link = std::fs::symlink_metadata(path).ok()?;
    let target = || std::fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_default();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        // ELOOP: too many levels of symbolic links.
        Err(e) if e.raw_os_error() == Some(40) => {
            return Some(format!("skipped: a symbolic link loop (to {})", target()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && link.file_type().is_symlink() => {
            return Some(format!("skipped: a symbolic link to {}, which does not exist", target()));
        }
        Err(e) => return Some(format!("skipped: cannot read: {e}")),
    };
    let kind = meta.file_type();
    if kind.is_file() {
        return None;
    }
    if kind.is_dir() {
        return Some("skipped: a folder, not a tool file".into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return Some("skipped: a named pipe (FIFO), not a tool file".into());
        }
        if kind.is_socket() {
            return Some("skipped: a socket, not a tool file".into());
        }
        if kind.is_block_device() || kind.is_char_device() {
            return Some("skipped: a device, not a tool file".into());
        }
    }
    Some("skipped: not a regular file".into())
}

/// Reads a tool file of at most `max` bytes: a larger one is refused
/// without reading it (and one growing while read is cut at `max + 1`).
fn read_limited(path: &Path, max: u64) -> Result<String, String> {
    use std::io::Read;
    let too_big = |n: u64| {
        format!(
            "the file is {n} bytes, over the limit of {max} (tools.max_file_bytes); a tool file holds a workflow and short texts"
        )
    };
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let len = file.metadata().map_err(|e| format!("cannot read: {e}"))?.len();
    if len > max {
        return Err(too_big(len));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| format!("cannot read: not UTF-8 text ({e})"))
}

/// The `*.json` files directly in `dir`, sorted by file name so loading is deterministic,
/// and the `*.json` entries that are no readable file (a symbolic link loop or one to
/// nothing, a named pipe, a folder), each with the reason it is skipped.
/// Hidden files (editor swap files, `.#x.json`) are ignored. A missing folder has no files.
fn tool_files(dir: &Path) -> Result<(Vec<PathBuf>, Vec<ToolLoadError>), ToolLoadError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => {
            return Err(ToolLoadError {
                file: dir.to_path_buf(),
                field: String::new(),
                reason: format!("cannot read the tools folder: {e}"),
            });
        }
    };
    let mut files: Vec<PathBuf> = vec![];
    let mut skipped = vec![];
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        match not_a_file(&path) {
            None => files.push(path),
            Some(reason) => skipped.push(ToolLoadError { file: path, field: String::new(), reason }),
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    skipped.sort_by(|a, b| a.file.cmp(&b.file));
    Ok((files, skipped))
}

/// Things worth saying once about a load that are not errors: a tool file
/// replacing a built-in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Notices {
    /// (built-in id, file replacing it).
    pub overrides: Vec<(String, PathBuf)>,
}

/// Loads built-ins, then every tool file in `dir`, into one set keyed by id.
///
/// A file tool with a built-in's id replaces the built-in. Two files with one id, or two tools
/// with one command, reject the later file (built-ins come first, files in name order).
pub(crate) fn load_all(
    dir: Option<&Path>,
    options: LoadOptions,
) -> (BTreeMap<String, Arc<ToolDef>>, Vec<ToolLoadError>, Notices) {
    let (builtins, mut errors) = builtin_tools();
    let mut notices = Notices::default();

    let mut files: Vec<Arc<ToolDef>> = Vec::new();
    if let Some(dir) = dir {
        match tool_files(dir) {
            Ok((paths, skipped)) => {
                errors.extend(skipped);
                for path in paths {
                    let text = match read_limited(&path, options.max_file_bytes) {
                        Ok(t) => t,
                        Err(reason) => {
                            errors.push(ToolLoadError { file: path, field: String::new(), reason });
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
            // Logged by the registry when it changes, not on every reload.
            Some(f) => notices.overrides.push((b.id.clone(), f.source.clone())),
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
    (by_id, errors, notices)
}

/// Checks the tool files in `dir` as the registry would load them (including clashes with
/// built-ins), for `station tools check DIR`. Returns the tools from `dir` that loaded.
pub fn check_dir(dir: &Path) -> (Vec<Arc<ToolDef>>, Vec<ToolLoadError>) {
    check_dir_with(dir, LoadOptions::default())
}

/// [`check_dir`] reading files as `options` say (`tools.max_file_bytes`).
/// Entries that are skipped (symbolic link loops, links to nothing, named
/// pipes, folders named `*.json`) are among the errors, each with its reason.
pub fn check_dir_with(dir: &Path, options: LoadOptions) -> (Vec<Arc<ToolDef>>, Vec<ToolLoadError>) {
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
    let (by_id, errors, _) = load_all(Some(dir), options);
    let tools = by_id.into_values().filter(|t| !t.is_builtin()).collect();
    (tools, errors)
}
