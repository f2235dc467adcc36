//! The LoRA catalog record, who may use it, and which base models it fits.

use serde::{Deserialize, Serialize};

/// Who can see and use a LoRA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Everyone, including anonymous callers.
    #[default]
    Public,
    /// Only the owner and accounts holding a live [`Grant`].
    Private,
}

impl Visibility {
    /// Parses `public` / `private`, case-insensitively and ignoring surrounding whitespace.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "public" => Some(Self::Public),
            "private" => Some(Self::Private),
            _ => None,
        }
    }

    /// The lowercase name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
        }
    }
}

/// Permission for one account to use a private LoRA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// Account id of the grantee.
    pub account: String,
    /// Unix milliseconds after which the grant no longer counts; `None` never expires.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// A revoked grant never counts, whatever its expiry.
    #[serde(default)]
    pub revoked: bool,
}

impl Grant {
    /// True when the grant is not revoked and has not expired at `now_ms`
    /// (a grant expiring exactly at `now_ms` is already expired).
    pub fn is_live(&self, now_ms: i64) -> bool {
        !self.revoked && self.expires_at.is_none_or(|at| at > now_ms)
    }
}

/// One LoRA in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraRecord {
    /// Stable internal id.
    pub id: String,
    /// Unique, URL-safe name used in `<lora:SLUG:WEIGHT>` tags (see [`crate::validate_slug`]).
    pub slug: String,
    /// Human-readable name.
    pub name: String,
    /// Free-text description.
    #[serde(default)]
    pub description: String,
    /// Words that apply this LoRA when typed in a prompt; the first one is the canonical word.
    #[serde(default)]
    pub trigger_words: Vec<String>,
    /// Alternative words that also apply this LoRA (replaced by the first trigger word).
    #[serde(default)]
    pub cognates: Vec<String>,
    /// Weight used when the prompt gives none; `None` means 1.0.
    #[serde(default)]
    pub default_weight: Option<f64>,
    /// Base model family the LoRA was trained for (SD1.5, SDXL, ILLUSTRIOUS, FLUX, …).
    pub checkpoint: String,
    /// File name of the LoRA on the ComfyUI servers (the `lora_name` input of `LoraLoader`).
    pub filename: String,
    /// Free-form tags for browsing.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Owning account id; `None` for LoRAs owned by the operator.
    #[serde(default)]
    pub owner: Option<String>,
    /// Public or private.
    #[serde(default)]
    pub visibility: Visibility,
    /// Last change, unix milliseconds; the newer record wins trigger conflicts.
    #[serde(default)]
    pub updated_at: i64,
    /// Accounts allowed to use the LoRA while it is private.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Average user rating, if any.
    #[serde(default)]
    pub rating: Option<f64>,
    /// URLs or storage keys of preview images.
    #[serde(default)]
    pub preview_images: Vec<String>,
    /// Creation time, unix milliseconds.
    #[serde(default)]
    pub created_at: i64,
}

/// How an account relates to a LoRA it may use; lower ranks win trigger conflicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// A private LoRA owned by the account.
    OwnPrivate,
    /// A private LoRA shared with the account through a live grant.
    Granted,
    /// A public LoRA.
    Public,
}

impl LoraRecord {
    /// How `account` may use this LoRA at `now_ms`, or `None` when it may not.
    ///
    /// Public LoRAs are usable by everyone (even without an account); private ones by their
    /// owner and by accounts holding a live grant.
    pub fn access(&self, account: Option<&str>, now_ms: i64) -> Option<Access> {
        match self.visibility {
            Visibility::Public => Some(Access::Public),
            Visibility::Private => {
                let account = account?;
                if self.owner.as_deref() == Some(account) {
                    Some(Access::OwnPrivate)
                } else if self.grants.iter().any(|g| g.account == account && g.is_live(now_ms)) {
                    Some(Access::Granted)
                } else {
                    None
                }
            }
        }
    }

    /// True when `account` may use this LoRA at `now_ms`.
    pub fn is_visible_to(&self, account: Option<&str>, now_ms: i64) -> bool {
        self.access(account, now_ms).is_some()
    }

    /// The default weight, 1.0 when unset.
    pub fn effective_default_weight(&self) -> f64 {
        self.default_weight.unwrap_or(1.0)
    }
}

/// Whether a LoRA trained for `lora_checkpoint` can be used by a tool whose base model is
/// `tool_base_model`.
///
/// Comparison ignores case and surrounding whitespace. SDXL tools accept SD1.5, SDXL and
/// ILLUSTRIOUS LoRAs; SD1.5 tools accept SD1.5; tools whose base starts with `FLUX` accept any
/// `FLUX*` family; KONTEXT tools accept KONTEXT and `FLUX*`; any other base must match exactly.
pub fn is_compatible(tool_base_model: &str, lora_checkpoint: &str) -> bool {
    let tool = tool_base_model.trim().to_ascii_uppercase();
    let lora = lora_checkpoint.trim().to_ascii_uppercase();
    let is_flux = |s: &str| s.starts_with("FLUX");
    match tool.as_str() {
        "SDXL" => matches!(lora.as_str(), "SD1.5" | "SDXL" | "ILLUSTRIOUS"),
        "KONTEXT" => lora == "KONTEXT" || is_flux(&lora),
        t if is_flux(t) => is_flux(&lora),
        t => t == lora,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(visibility: Visibility, owner: Option<&str>, grants: Vec<Grant>) -> LoraRecord {
        LoraRecord {
            id: "1".into(),
            slug: "x".into(),
            name: "X".into(),
            description: String::new(),
            trigger_words: vec!["x".into()],
            cognates: vec![],
            default_weight: None,
            checkpoint: "SD1.5".into(),
            filename: "x.safetensors".into(),
            tags: vec![],
            owner: owner.map(str::to_owned),
            visibility,
            updated_at: 0,
            grants,
            rating: None,
            preview_images: vec![],
            created_at: 0,
        }
    }

    fn grant(account: &str, expires_at: Option<i64>, revoked: bool) -> Grant {
        Grant { account: account.into(), expires_at, revoked }
    }

    #[test]
    fn public_is_visible_to_everyone() {
        let r = record(Visibility::Public, Some("alice"), vec![]);
        assert_eq!(r.access(None, 0), Some(Access::Public));
        assert_eq!(r.access(Some("bob"), 0), Some(Access::Public));
        assert_eq!(r.access(Some("alice"), 0), Some(Access::Public));
    }

    #[test]
    fn private_needs_owner_or_live_grant() {
        let r = record(
            Visibility::Private,
            Some("alice"),
            vec![
                grant("bob", None, false),
                grant("carol", Some(1000), false),
                grant("dave", None, true),
                grant("erin", Some(1001), false),
            ],
        );
        assert_eq!(r.access(None, 1000), None);
        assert_eq!(r.access(Some("alice"), 1000), Some(Access::OwnPrivate));
        assert_eq!(r.access(Some("bob"), 1000), Some(Access::Granted));
        assert_eq!(r.access(Some("carol"), 999), Some(Access::Granted));
        assert_eq!(r.access(Some("carol"), 1000), None, "expires exactly now");
        assert_eq!(r.access(Some("dave"), 0), None, "revoked");
        assert_eq!(r.access(Some("erin"), 1000), Some(Access::Granted));
        assert_eq!(r.access(Some("mallory"), 0), None);
    }

    #[test]
    fn private_without_owner_only_by_grant() {
        let r = record(Visibility::Private, None, vec![grant("bob", None, false)]);
        assert!(!r.is_visible_to(Some("alice"), 0));
        assert!(r.is_visible_to(Some("bob"), 0));
    }

    #[test]
    fn compatibility_table() {
        let yes = [
            ("SDXL", "SD1.5"),
            ("SDXL", "SDXL"),
            ("sdxl", "Illustrious"),
            ("SD1.5", "sd1.5"),
            ("FLUX", "FLUX"),
            ("FLUX", "FLUX.1"),
            ("FLUX.1", "flux"),
            ("KONTEXT", "KONTEXT"),
            ("KONTEXT", "FLUX.1"),
            ("ILLUSTRIOUS", "illustrious"),
            ("PONY", " pony "),
        ];
        let no = [
            ("SDXL", "FLUX"),
            ("SD1.5", "SDXL"),
            ("SD1.5", "ILLUSTRIOUS"),
            ("FLUX", "SDXL"),
            ("FLUX", "KONTEXT"),
            ("KONTEXT", "SDXL"),
            ("ILLUSTRIOUS", "SDXL"),
            ("PONY", "SDXL"),
        ];
        for (tool, lora) in yes {
            assert!(is_compatible(tool, lora), "{tool} should accept {lora}");
        }
        for (tool, lora) in no {
            assert!(!is_compatible(tool, lora), "{tool} should reject {lora}");
        }
    }

    #[test]
    fn record_serde_round_trip_and_defaults() {
        let r = record(Visibility::Private, Some("a"), vec![grant("b", Some(5), false)]);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["visibility"], "private");
        let back: LoraRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
        let minimal: LoraRecord =
            serde_json::from_str(r#"{"id":"1","slug":"s","name":"S","checkpoint":"SDXL","filename":"s.safetensors"}"#)
                .unwrap();
        assert_eq!(minimal.visibility, Visibility::Public);
        assert_eq!(minimal.effective_default_weight(), 1.0);
    }
}
