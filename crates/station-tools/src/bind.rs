//! Writing resolved parameters into a copy of a tool's ComfyUI workflow.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::def::{BindingTarget, InputType, ToolDef};

/// Why a workflow could not be bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// The tool is not run by ComfyUI.
    #[error("tool \"{0}\" has no ComfyUI workflow")]
    NotComfyUi(String),
    /// An image input has a value but no uploaded file name on the backend.
    #[error("{0}: the image was not uploaded to the backend")]
    MissingUpload(String),
    /// A binding points somewhere the workflow does not have (only possible for definitions
    /// built in code, since loading checks this).
    #[error("{input}: binding target \"{target}\" is not in the workflow")]
    BadTarget {
        /// The tool input.
        input: String,
        /// The binding target.
        target: String,
    },
}

/// Returns a copy of `tool`'s workflow with each bound input's value from `params` written to
/// every place it is bound. Image inputs take the backend file name from `uploaded_images`
/// (keyed by input name) instead of their `media:` reference. Inputs without a value keep the
/// workflow's own literal.
pub fn bind_workflow(
    tool: &ToolDef,
    params: &Map<String, Value>,
    uploaded_images: &HashMap<String, String>,
) -> Result<Value, BindError> {
    let comfy = tool.comfyui.as_ref().ok_or_else(|| BindError::NotComfyUi(tool.id.clone()))?;
    let mut graph = comfy.workflow.clone();
    for (name, def) in &tool.inputs {
        let Some(targets) = comfy.bindings.get(name) else {
            continue;
        };
        let value = if def.kind == InputType::Image {
            match (uploaded_images.get(name), params.get(name)) {
                (Some(file), _) => Value::String(file.clone()),
                (None, Some(_)) => return Err(BindError::MissingUpload(name.clone())),
                (None, None) => continue,
            }
        } else {
            match params.get(name) {
                Some(v) => v.clone(),
                None => continue,
            }
        };
        for target in targets {
            let slot = BindingTarget::parse(target)
                .and_then(|t| graph.get_mut(t.node)?.get_mut("inputs")?.as_object_mut()?.get_mut(t.field))
                .ok_or_else(|| BindError::BadTarget { input: name.clone(), target: target.clone() })?;
            *slot = value.clone();
        }
    }
    Ok(graph)
}
