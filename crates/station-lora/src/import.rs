//! The LoRA import file: a JSON array of records, validated field by field.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::record::{Grant, LoraRecord, Visibility};

/// Longest accepted slug, in bytes.
pub const MAX_SLUG_LEN: usize = 100;

/// Why a slug was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    /// The slug is empty.
    #[error("slug is empty")]
    Empty,
    /// The slug is longer than [`MAX_SLUG_LEN`].
    #[error("slug is {len} characters long, at most {MAX_SLUG_LEN} allowed")]
    TooLong {
        /// Actual length in bytes.
        len: usize,
    },
    /// The slug holds a character outside `a-z 0-9 - _ .`.
    #[error("slug contains {ch:?}; only lowercase a-z, digits, '-', '_' and '.' are allowed")]
    BadChar {
        /// The offending character.
        ch: char,
    },
    /// The slug starts or ends with `-`, `_` or `.`.
    #[error("slug must start and end with a lowercase letter or digit")]
    BadEdge,
}

/// Checks slug syntax: 1 to [`MAX_SLUG_LEN`] characters from `a-z`, `0-9`, `-`, `_`, `.`,
/// starting and ending with a letter or digit.
///
/// Lowercase only, so that slugs typed in chat (`<lora:Milady:1>`) resolve case-insensitively
/// without two catalog entries ever differing only by case. `:` and `>` are excluded because
/// they delimit inline `<lora:slug:weight>` tags.
pub fn validate_slug(slug: &str) -> Result<(), SlugError> {
    if slug.is_empty() {
        return Err(SlugError::Empty);
    }
    if slug.len() > MAX_SLUG_LEN {
        return Err(SlugError::TooLong { len: slug.len() });
    }
    if let Some(ch) = slug.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.')) {
        return Err(SlugError::BadChar { ch });
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(slug.chars().next()) || !edge_ok(slug.chars().last()) {
        return Err(SlugError::BadEdge);
    }
    Ok(())
}

/// Why an import file was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImportError {
    /// The text is not valid JSON.
    #[error("import is not valid JSON at line {line}, column {column}: {message}")]
    Json {
        /// 1-based line of the syntax error.
        line: usize,
        /// 1-based column of the syntax error.
        column: usize,
        /// The parser's explanation.
        message: String,
    },
    /// The top-level value is not an array.
    #[error("import must be a JSON array of LoRA records, found {found}")]
    NotArray {
        /// JSON type that was found instead.
        found: &'static str,
    },
    /// One field of one record is invalid.
    #[error("record {index}{}: field `{field}`: {reason}", slug.as_ref().map(|s| format!(" (slug {s:?})")).unwrap_or_default())]
    Field {
        /// 0-based position of the record in the array.
        index: usize,
        /// The record's slug when it could be read, to find it in large files.
        slug: Option<String>,
        /// Field path inside the record, e.g. `grants[1].expires_at`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One alternative word in the import file (`{"word": "..."}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportCognate {
    /// The alternative word.
    pub word: String,
}

/// One grant in the import file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportGrant {
    /// Account id or platform identity such as `telegram:123`, kept as written.
    pub account: String,
    /// Expiry in unix milliseconds; `None` never expires.
    pub expires_at: Option<i64>,
}

/// One record of the import file, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportRecord {
    /// Valid slug (see [`validate_slug`]), unique within the file.
    pub slug: String,
    /// Display name; the slug when the file gives none.
    pub name: String,
    /// Trigger words, trimmed and non-empty.
    pub trigger_words: Vec<String>,
    /// Alternative words, trimmed and non-empty.
    pub cognates: Vec<ImportCognate>,
    /// Default weight within [0, 2], if given.
    pub default_weight: Option<f64>,
    /// Base model family, non-empty.
    pub checkpoint: String,
    /// LoRA file name, non-empty.
    pub filename: String,
    /// Public or private (required: guessing could publish a private LoRA).
    pub visibility: Visibility,
    /// Owner: an account id or a platform identity such as `telegram:123`, kept as written.
    pub owned_by: Option<String>,
    /// Last change in unix milliseconds, if given.
    pub updated_at: Option<i64>,
    /// Accounts the LoRA is shared with.
    pub grants: Vec<ImportGrant>,
}

impl ImportRecord {
    /// Builds a catalog record with the given id and creation time.
    ///
    /// Account strings (`owned_by`, grant accounts) are copied verbatim; callers that need
    /// account ids must map platform identities first. A missing `updated_at` becomes
    /// `now_ms`.
    pub fn into_record(self, id: String, now_ms: i64) -> LoraRecord {
        LoraRecord {
            id,
            slug: self.slug,
            name: self.name,
            description: String::new(),
            trigger_words: self.trigger_words,
            cognates: self.cognates.into_iter().map(|c| c.word).collect(),
            default_weight: self.default_weight,
            checkpoint: self.checkpoint,
            filename: self.filename,
            tags: Vec::new(),
            owner: self.owned_by,
            visibility: self.visibility,
            updated_at: self.updated_at.unwrap_or(now_ms),
            grants: self
                .grants
                .into_iter()
                .map(|g| Grant { account: g.account, expires_at: g.expires_at, revoked: false })
                .collect(),
            rating: None,
            preview_images: Vec::new(),
            created_at: now_ms,
        }
    }
}

/// Parses and validates an import file: a JSON array of LoRA records.
///
/// Required per record: `slug`, `checkpoint`, `filename`, `visibility` (`public`/`private`).
/// Optional: `name` (defaults to the slug), `trigger_words` (strings), `cognates` (objects
/// `{"word": …}` or plain strings), `default_weight` (number in [0, 2]), `owned_by`,
/// `updated_at` and `grants[].expires_at` (unix milliseconds or an RFC 3339 time),
/// `grants` (`{"account", "expires_at"}`). `null` counts as absent. Unknown fields are
/// ignored so that exports from other systems import unchanged. Slugs must be unique.
///
/// The first problem found is returned, naming the array index and the field.
pub fn parse_import(json: &str) -> Result<Vec<ImportRecord>, ImportError> {
    let value: Value = serde_json::from_str(json).map_err(|e| ImportError::Json {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let Value::Array(items) = value else {
        return Err(ImportError::NotArray { found: json_type(&value) });
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let record = parse_one(index, item)?;
        if let Some(first) = seen.insert(record.slug.clone(), index) {
            return Err(ImportError::Field {
                index,
                slug: Some(record.slug),
                field: "slug".into(),
                reason: format!("duplicates the slug of record {first}"),
            });
        }
        out.push(record);
    }
    Ok(out)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads fields of one record, attaching the record index and slug to every error.
struct Reader<'a> {
    index: usize,
    slug: Option<String>,
    obj: &'a Map<String, Value>,
}

impl Reader<'_> {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> ImportError {
        ImportError::Field { index: self.index, slug: self.slug.clone(), field: field.into(), reason: reason.into() }
    }

    /// The field's value, treating `null` as absent.
    fn get(&self, field: &str) -> Option<&Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    fn opt_string(&self, field: &str) -> Result<Option<String>, ImportError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Err(self.err(field, "is empty")),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(other) => Err(self.err(field, format!("expected a string, found {}", json_type(other)))),
        }
    }

    fn string(&self, field: &str) -> Result<String, ImportError> {
        self.opt_string(field)?.ok_or_else(|| self.err(field, "is required"))
    }

    fn array(&self, field: &str) -> Result<&[Value], ImportError> {
        match self.get(field) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(other) => Err(self.err(field, format!("expected an array, found {}", json_type(other)))),
        }
    }

    fn word(&self, field: String, v: &Value) -> Result<String, ImportError> {
        match v {
            Value::String(s) if s.trim().is_empty() => Err(self.err(field, "is empty")),
            Value::String(s) => Ok(s.trim().to_owned()),
            other => Err(self.err(field, format!("expected a string, found {}", json_type(other)))),
        }
    }

    fn time(&self, field: String, v: Option<&Value>) -> Result<Option<i64>, ImportError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected whole unix milliseconds, got {n}"))),
            Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s.trim())
                .map(|t| Some(t.timestamp_millis()))
                .map_err(|e| self.err(field, format!("{s:?} is not an RFC 3339 time: {e}"))),
            Some(other) => {
                Err(self
                    .err(field, format!("expected unix milliseconds or an RFC 3339 time, found {}", json_type(other))))
            }
        }
    }
}

fn parse_one(index: usize, item: &Value) -> Result<ImportRecord, ImportError> {
    let Value::Object(obj) = item else {
        return Err(ImportError::Field {
            index,
            slug: None,
            field: "(record)".into(),
            reason: format!("expected an object, found {}", json_type(item)),
        });
    };
    let mut r = Reader { index, slug: None, obj };
    let slug = r.string("slug")?;
    if let Err(e) = validate_slug(&slug) {
        return Err(r.err("slug", format!("{slug:?}: {e}")));
    }
    r.slug = Some(slug.clone());

    let name = r.opt_string("name")?.unwrap_or_else(|| slug.clone());
    let trigger_words = r
        .array("trigger_words")?
        .iter()
        .enumerate()
        .map(|(i, v)| r.word(format!("trigger_words[{i}]"), v))
        .collect::<Result<Vec<_>, _>>()?;
    let cognates = r
        .array("cognates")?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let word = match v {
                Value::Object(o) => r.word(format!("cognates[{i}].word"), o.get("word").unwrap_or(&Value::Null))?,
                other => r.word(format!("cognates[{i}]"), other)?,
            };
            Ok(ImportCognate { word })
        })
        .collect::<Result<Vec<_>, ImportError>>()?;
    let default_weight = match r.get("default_weight") {
        None => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(w) if (0.0..=2.0).contains(&w) => Some(w),
            _ => return Err(r.err("default_weight", format!("{n} is outside [0, 2]"))),
        },
        Some(other) => {
            return Err(r.err("default_weight", format!("expected a number, found {}", json_type(other))));
        }
    };
    let checkpoint = r.string("checkpoint")?;
    let filename = r.string("filename")?;
    let visibility = match r.get("visibility") {
        None => return Err(r.err("visibility", "is required (\"public\" or \"private\")")),
        Some(Value::String(s)) => Visibility::parse(s)
            .ok_or_else(|| r.err("visibility", format!("{s:?} is neither \"public\" nor \"private\"")))?,
        Some(other) => {
            return Err(r.err("visibility", format!("expected a string, found {}", json_type(other))));
        }
    };
    let owned_by = r.opt_string("owned_by")?;
    let updated_at = r.time("updated_at".into(), r.get("updated_at"))?;
    let grants = r
        .array("grants")?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let Value::Object(g) = v else {
                return Err(r.err(format!("grants[{i}]"), format!("expected an object, found {}", json_type(v))));
            };
            let account = r.word(format!("grants[{i}].account"), g.get("account").unwrap_or(&Value::Null))?;
            let expires_at = r.time(format!("grants[{i}].expires_at"), g.get("expires_at"))?;
            Ok(ImportGrant { account, expires_at })
        })
        .collect::<Result<Vec<_>, ImportError>>()?;

    Ok(ImportRecord {
        slug,
        name,
        trigger_words,
        cognates,
        default_weight,
        checkpoint,
        filename,
        visibility,
        owned_by,
        updated_at,
        grants,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"[
      {
        "slug": "milady-v1",
        "name": "Milady",
        "trigger_words": ["milady", " Remilio "],
        "cognates": [{"word": "miladys"}, "mi-lady"],
        "default_weight": 0.8,
        "checkpoint": "SDXL",
        "filename": "milady_v1.safetensors",
        "visibility": "Private",
        "owned_by": "telegram:123",
        "updated_at": 1700000000000,
        "grants": [
          {"account": "acc-1", "expires_at": null},
          {"account": "discord:9", "expires_at": "2024-01-01T00:00:00Z"}
        ],
        "civitai_id": 42
      },
      {"slug": "plain", "checkpoint": "FLUX", "filename": "p.safetensors", "visibility": "public"}
    ]"#;

    #[test]
    fn parses_full_and_minimal_records() {
        let recs = parse_import(FULL).unwrap();
        assert_eq!(recs.len(), 2);
        let a = &recs[0];
        assert_eq!(a.slug, "milady-v1");
        assert_eq!(a.name, "Milady");
        assert_eq!(a.trigger_words, vec!["milady", "Remilio"]);
        assert_eq!(
            a.cognates,
            vec![ImportCognate { word: "miladys".into() }, ImportCognate { word: "mi-lady".into() }]
        );
        assert_eq!(a.default_weight, Some(0.8));
        assert_eq!(a.visibility, Visibility::Private);
        assert_eq!(a.owned_by.as_deref(), Some("telegram:123"));
        assert_eq!(a.updated_at, Some(1_700_000_000_000));
        assert_eq!(a.grants[0].expires_at, None);
        assert_eq!(a.grants[1].account, "discord:9");
        assert_eq!(a.grants[1].expires_at, Some(1_704_067_200_000));
        let b = &recs[1];
        assert_eq!(b.name, "plain");
        assert!(b.trigger_words.is_empty() && b.grants.is_empty());
        assert_eq!(b.default_weight, None);
        assert_eq!(b.updated_at, None);
    }

    #[test]
    fn into_record_keeps_accounts_verbatim() {
        let rec = parse_import(FULL).unwrap().remove(0).into_record("id-1".into(), 5);
        assert_eq!(rec.id, "id-1");
        assert_eq!(rec.owner.as_deref(), Some("telegram:123"));
        assert_eq!(rec.cognates, vec!["miladys", "mi-lady"]);
        assert_eq!(rec.updated_at, 1_700_000_000_000);
        assert_eq!(rec.created_at, 5);
        assert!(rec.grants.iter().all(|g| !g.revoked));
        let plain = parse_import(FULL).unwrap().remove(1).into_record("id-2".into(), 5);
        assert_eq!(plain.updated_at, 5);
    }

    fn field_error(json: &str) -> (usize, Option<String>, String, String) {
        match parse_import(json).unwrap_err() {
            ImportError::Field { index, slug, field, reason } => (index, slug, field, reason),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    const OK: &str = r#"{"slug":"ok","checkpoint":"SDXL","filename":"f","visibility":"public"}"#;

    fn with(second: &str) -> String {
        format!("[{OK},{second}]")
    }

    #[test]
    fn errors_name_index_and_field() {
        let cases = [
            (r#"{"checkpoint":"SDXL","filename":"f","visibility":"public"}"#, "slug", "is required"),
            (
                r#"{"slug":"Bad Slug","checkpoint":"SDXL","filename":"f","visibility":"public"}"#,
                "slug",
                "\"Bad Slug\": slug contains 'B'",
            ),
            (
                r#"{"slug":"ok","checkpoint":"SDXL","filename":"f","visibility":"public"}"#,
                "slug",
                "duplicates the slug of record 0",
            ),
            (
                r#"{"slug":"b","checkpoint":"SDXL","filename":"f","visibility":"public","trigger_words":["x",3]}"#,
                "trigger_words[1]",
                "expected a string, found a number",
            ),
            (
                r#"{"slug":"b","checkpoint":"SDXL","filename":"f","visibility":"public","cognates":[{"word":"  "}]}"#,
                "cognates[0].word",
                "is empty",
            ),
            (
                r#"{"slug":"b","checkpoint":"SDXL","filename":"f","visibility":"public","default_weight":3}"#,
                "default_weight",
                "3 is outside [0, 2]",
            ),
            (
                r#"{"slug":"b","checkpoint":"SDXL","filename":"f","visibility":"secret"}"#,
                "visibility",
                "\"secret\" is neither",
            ),
            (r#"{"slug":"b","checkpoint":"SDXL","filename":"f"}"#, "visibility", "is required"),
            (r#"{"slug":"b","checkpoint":"","filename":"f","visibility":"public"}"#, "checkpoint", "is empty"),
            (r#"{"slug":"b","checkpoint":"SDXL","visibility":"public"}"#, "filename", "is required"),
            (
                r#"{"slug":"b","checkpoint":"SDXL","filename":"f","visibility":"public","grants":[{"account":"a","expires_at":"tomorrow"}]}"#,
                "grants[0].expires_at",
                "\"tomorrow\" is not an RFC 3339 time",
            ),
            (
                r#"{"slug":"b","checkpoint":"SDXL","filename":"f","visibility":"public","grants":[{"expires_at":1}]}"#,
                "grants[0].account",
                "expected a string, found null",
            ),
            (
                r#"{"slug":"b","checkpoint":"SDXL","filename":"f","visibility":"public","updated_at":1.5}"#,
                "updated_at",
                "expected whole unix milliseconds, got 1.5",
            ),
            ("7", "(record)", "expected an object, found a number"),
        ];
        for (second, want_field, want_reason) in cases {
            let (index, _, field, reason) = field_error(&with(second));
            assert_eq!(index, 1, "{second}");
            assert_eq!(field, want_field, "{second}");
            assert!(reason.starts_with(want_reason), "{second}: reason {reason:?} should start with {want_reason:?}");
        }
    }

    #[test]
    fn error_message_names_record_slug_and_field() {
        let json =
            with(r#"{"slug":"b","checkpoint":"SDXL","filename":"f","visibility":"public","default_weight":"high"}"#);
        let (_, slug, _, _) = field_error(&json);
        assert_eq!(slug.as_deref(), Some("b"));
        assert_eq!(
            parse_import(&json).unwrap_err().to_string(),
            "record 1 (slug \"b\"): field `default_weight`: expected a number, found a string"
        );
    }

    #[test]
    fn top_level_errors() {
        assert_eq!(parse_import(r#"{"slug":"a"}"#).unwrap_err(), ImportError::NotArray { found: "an object" });
        assert!(matches!(parse_import("[{").unwrap_err(), ImportError::Json { line: 1, .. }));
        assert_eq!(parse_import("[]").unwrap(), vec![]);
    }

    #[test]
    fn slug_rules() {
        for ok in ["a", "milady-v1", "x_y.z", "9", &"a".repeat(MAX_SLUG_LEN)] {
            assert_eq!(validate_slug(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_slug(""), Err(SlugError::Empty));
        assert_eq!(validate_slug(&"a".repeat(MAX_SLUG_LEN + 1)), Err(SlugError::TooLong { len: MAX_SLUG_LEN + 1 }));
        assert_eq!(validate_slug("a:b"), Err(SlugError::BadChar { ch: ':' }));
        assert_eq!(validate_slug("Abc"), Err(SlugError::BadChar { ch: 'A' }));
        assert_eq!(validate_slug("a b"), Err(SlugError::BadChar { ch: ' ' }));
        assert_eq!(validate_slug("é"), Err(SlugError::BadChar { ch: 'é' }));
        assert_eq!(validate_slug("-a"), Err(SlugError::BadEdge));
        assert_eq!(validate_slug("a."), Err(SlugError::BadEdge));
    }
}
