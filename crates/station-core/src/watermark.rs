//! The operator's automatic watermark on job results.
//!
//! With `media.auto_watermark` set (the name of one of `media.watermarks`, or
//! `text:YOUR TEXT`), every image a job produces is watermarked before it is
//! stored as the job's output: ComfyUI results and native media results
//! alike, except those of the `watermark` operation itself (the user already
//! chose a mark there; a second would be stacked on it). The stored result
//! IS the watermarked image; no unwatermarked copy is kept.
//!
//! An account is spared when it opted out AND the operator allows opting out
//! (`media.watermark_opt_out`, on by default). The choice is kept with the
//! account's settings, in `tool_settings` under the reserved tool id
//! [`ACCOUNT_SETTINGS`] (`{"watermark_opt_out": true}`).
//!
//! The mark is stamped with `station_media::ops::watermark` and the image
//! re-encoded in its own format (PNG, lossless WebP and GIF without loss;
//! JPEG at quality 90; an animated image keeps its first frame).

use std::sync::Arc;

use serde_json::Value;
use station_media::image::DynamicImage;
use station_media::ops::{self, WatermarkOptions};
use station_media::{DecodeLimits, MediaFormat};
use station_store::{AccountRow, StoreError};
use station_tools::{MediaOperation, ToolDef};

use crate::Station;
use crate::config::MediaConfig;

/// Reserved `tool_settings` tool id holding per-account (not per-tool) settings.
pub const ACCOUNT_SETTINGS: &str = "_account";
/// The key of the opt-out flag in [`ACCOUNT_SETTINGS`].
pub const OPT_OUT_KEY: &str = "watermark_opt_out";
/// Prefix of `media.auto_watermark` for a text watermark.
pub const TEXT_PREFIX: &str = "text:";

/// Why a watermark setting was refused.
#[derive(Debug, thiserror::Error)]
pub enum WatermarkError {
    /// The operator does not let users opt out.
    #[error(
        "watermark_opt_out: this Station does not allow turning the watermark off \
         (the operator set media.watermark_opt_out = false)"
    )]
    OptOutNotAllowed,
    /// Reading or writing the setting failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The automatic watermark as configured: off, or a decoded logo or a text
/// with its placement. Built (and the logo file read) once at start.
#[derive(Clone, Default)]
pub struct AutoWatermark {
    stamp: Option<Arc<Stamp>>,
}

struct Stamp {
    logo: Option<DynamicImage>,
    options: WatermarkOptions,
    limits: DecodeLimits,
}

impl AutoWatermark {
    /// Reads `media.auto_watermark` and its placement settings. Errors name
    /// the setting and say how to fix it (unknown watermark name, unreadable
    /// logo file, opacity or scale out of range), so they surface at start
    /// rather than on every job.
    pub fn from_config(media: &MediaConfig, limits: DecodeLimits) -> Result<AutoWatermark, String> {
        let Some(spec) = media.auto_watermark.as_deref().map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(AutoWatermark::default());
        };
        let mut options = WatermarkOptions {
            position: media.auto_watermark_position,
            margin: media.auto_watermark_margin,
            opacity: media.auto_watermark_opacity,
            scale: media.auto_watermark_scale,
            ..WatermarkOptions::default()
        };
        if !(0.0..=1.0).contains(&options.opacity) {
            return Err(format!("media.auto_watermark_opacity: {} is not in 0..=1", options.opacity));
        }
        if !(options.scale > 0.0 && options.scale <= 1.0) {
            return Err(format!(
                "media.auto_watermark_scale: {} is not in (0, 1] (the mark's width as a fraction of the image's)",
                options.scale
            ));
        }
        let logo = if let Some(text) = spec.strip_prefix(TEXT_PREFIX) {
            let text = text.trim();
            if text.is_empty() {
                return Err("media.auto_watermark: the text after \"text:\" is empty".into());
            }
            if text.chars().count() > ops::MAX_WATERMARK_TEXT {
                return Err(format!("media.auto_watermark: text longer than {} characters", ops::MAX_WATERMARK_TEXT));
            }
            options.text = Some(text.to_string());
            None
        } else {
            let Some(path) = media.watermarks.get(spec) else {
                let known: Vec<&str> = media.watermarks.keys().map(String::as_str).collect();
                return Err(format!(
                    "media.auto_watermark: no watermark named {spec:?} in media.watermarks ({}); \
                     add it there or use \"text:YOUR TEXT\"",
                    if known.is_empty() { "none are configured".to_string() } else { known.join(", ") }
                ));
            };
            let bytes = std::fs::read(path)
                .map_err(|e| format!("media.watermarks.{spec}: cannot read {}: {e}", path.display()))?;
            let img = station_media::decode(&bytes, &limits)
                .map_err(|e| format!("media.watermarks.{spec}: {} is not a usable image: {e}", path.display()))?;
            Some(img)
        };
        Ok(AutoWatermark { stamp: Some(Arc::new(Stamp { logo, options, limits })) })
    }

    /// Whether an automatic watermark is configured.
    pub fn is_on(&self) -> bool {
        self.stamp.is_some()
    }

    /// Whether results of `tool` are watermarked (all but the watermark
    /// operation's own; a tool deleted since submission is watermarked).
    pub fn applies_to(&self, tool: Option<&ToolDef>) -> bool {
        self.is_on() && !tool.and_then(|t| t.media.as_ref()).is_some_and(|m| m.operation == MediaOperation::Watermark)
    }

    /// `bytes` with the watermark stamped on, re-encoded in the same format.
    /// CPU-bound: runs on the blocking pool.
    pub async fn apply(&self, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        let Some(stamp) = self.stamp.clone() else { return Ok(bytes) };
        tokio::task::spawn_blocking(move || stamp.apply(&bytes))
            .await
            .map_err(|e| format!("watermarking crashed: {e}"))?
    }
}

impl Stamp {
    fn apply(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let format = station_media::decode::detect_format(bytes).map_err(|e| format!("watermark: {e}"))?;
        let img = station_media::decode(bytes, &self.limits).map_err(|e| format!("watermark: {e}"))?;
        let marked = ops::watermark(&img, self.logo.as_ref(), &self.options).map_err(|e| format!("watermark: {e}"))?;
        let quality = (format == MediaFormat::Jpeg).then_some(ops::DEFAULT_JPEG_QUALITY);
        ops::encode(&marked, format, quality).map_err(|e| format!("watermark: {e}"))
    }
}

impl Station {
    /// Turns the automatic watermark off (`true`) or back on (`false`) for an
    /// account's future results. Opting out is refused with
    /// [`WatermarkError::OptOutNotAllowed`] when the operator does not allow
    /// it; opting back in is always allowed.
    pub async fn set_watermark_opt_out(&self, account: &AccountRow, opt_out: bool) -> Result<(), WatermarkError> {
        if opt_out && !self.config.media.watermark_opt_out {
            return Err(WatermarkError::OptOutNotAllowed);
        }
        let mut settings = self.store.tool_settings(&account.id, ACCOUNT_SETTINGS).await?;
        settings.insert(OPT_OUT_KEY.into(), Value::Bool(opt_out));
        self.store.save_tool_settings(&account.id, ACCOUNT_SETTINGS, &settings, station_store::now_ms()).await?;
        Ok(())
    }

    /// Whether the account asked not to have its results watermarked (what it
    /// asked, whether or not the operator currently honours it).
    pub async fn watermark_opt_out(&self, account_id: &str) -> Result<bool, StoreError> {
        let settings = self.store.tool_settings(account_id, ACCOUNT_SETTINGS).await?;
        Ok(settings.get(OPT_OUT_KEY).and_then(Value::as_bool).unwrap_or(false))
    }

    /// Whether this account's results of `tool_id` get the automatic watermark.
    pub async fn watermarks_results(&self, account_id: &str, tool_id: &str) -> Result<bool, StoreError> {
        if !self.auto_watermark.applies_to(self.tools.get(tool_id).as_deref()) {
            return Ok(false);
        }
        Ok(!(self.config.media.watermark_opt_out && self.watermark_opt_out(account_id).await?))
    }
}
