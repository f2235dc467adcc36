//! Saved parameters per account and tool: the middle layer of parameter
//! precedence (explicit > saved > tool default). Every front end saves
//! through [`SettingsService`], so what may be saved is decided once: known
//! inputs only, never images, every value valid for its input.

use serde_json::{Map, Value};
use station_store::{AccountRow, StoreError};
use station_tools::{FieldError, InputType, ToolDef, coerce_text, resolve_params};

use crate::Station;

/// Why settings were not saved. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Some values are not acceptable; every bad one is listed.
    #[error("invalid settings: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(#[from] StoreError),
}

/// The saved-settings service of a [`Station`] ([`Station::settings`]).
pub struct SettingsService<'a> {
    station: &'a Station,
}

impl Station {
    /// Saved parameters per account and tool.
    pub fn settings(&self) -> SettingsService<'_> {
        SettingsService { station: self }
    }
}

impl SettingsService<'_> {
    /// `account`'s saved values for `tool` (empty when none).
    pub async fn get(&self, account: &AccountRow, tool: &ToolDef) -> Result<Map<String, Value>, StoreError> {
        self.station.store.tool_settings(&account.id, &tool.id).await
    }

    /// Replaces `account`'s saved values for `tool` with `params`, each
    /// checked ([`check_settings`]). Returns what was saved.
    pub async fn replace(
        &self,
        account: &AccountRow,
        tool: &ToolDef,
        params: Map<String, Value>,
    ) -> Result<Map<String, Value>, SettingsError> {
        check_settings(tool, &params).map_err(SettingsError::Invalid)?;
        self.write(account, tool, &params).await?;
        Ok(params)
    }

    /// Saves one value; text is read as the input's type ([`coerce_text`]).
    /// Returns the value saved.
    pub async fn set(
        &self,
        account: &AccountRow,
        tool: &ToolDef,
        name: &str,
        value: &Value,
    ) -> Result<Value, SettingsError> {
        let value = match (tool.inputs.get(name), value) {
            (Some(def), Value::String(s)) => coerce_text(def, s),
            _ => value.clone(),
        };
        let mut one = Map::new();
        one.insert(name.to_string(), value.clone());
        check_settings(tool, &one).map_err(SettingsError::Invalid)?;
        let mut saved = self.get(account, tool).await?;
        saved.insert(name.to_string(), value.clone());
        self.write(account, tool, &saved).await?;
        Ok(value)
    }

    /// Forgets one saved value (the tool's default applies again).
    pub async fn unset(&self, account: &AccountRow, tool: &ToolDef, name: &str) -> Result<(), StoreError> {
        let mut saved = self.get(account, tool).await?;
        if saved.remove(name).is_some() {
            self.write(account, tool, &saved).await?;
        }
        Ok(())
    }

    /// Forgets every saved value of `tool`.
    pub async fn clear(&self, account: &AccountRow, tool: &ToolDef) -> Result<(), StoreError> {
        self.write(account, tool, &Map::new()).await
    }

    async fn write(&self, account: &AccountRow, tool: &ToolDef, params: &Map<String, Value>) -> Result<(), StoreError> {
        self.station.store.save_tool_settings(&account.id, &tool.id, params, station_store::now_ms()).await
    }
}

/// Checks values to save for `tool`: known inputs, no images, no nulls,
/// every value valid for its input. Every problem is listed.
pub fn check_settings(tool: &ToolDef, params: &Map<String, Value>) -> Result<(), Vec<FieldError>> {
    let mut issues = vec![];
    for (k, v) in params {
        let issue = |reason: String| FieldError { field: k.clone(), reason };
        match tool.inputs.get(k) {
            None => issues.push(issue(format!(
                "unknown input; known: {}",
                tool.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
            ))),
            Some(i) if i.kind == InputType::Image => issues.push(issue("images cannot be saved as a setting".into())),
            Some(_) if v.is_null() => issues.push(issue("null cannot be saved; leave the input out".into())),
            Some(_) => {}
        }
    }
    if issues.is_empty()
        && let Err(errors) = resolve_params(tool, params, &Map::new(), &mut rand::rng())
    {
        // Only the saved fields matter (a missing prompt is not this request's problem).
        issues = errors.0.into_iter().filter(|e| params.contains_key(&e.field)).collect();
    }
    if issues.is_empty() { Ok(()) } else { Err(issues) }
}
