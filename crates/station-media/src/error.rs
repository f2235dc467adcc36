//! The one error type of this crate.

use image::ImageError;

/// Everything that can go wrong while storing, decoding or transforming media.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The data ends before the image it describes is complete.
    #[error("{format} data is truncated: the file ends before the image is complete")]
    Truncated {
        /// Detected container format (e.g. "png").
        format: &'static str,
    },
    /// The data is not a valid image of the detected format.
    #[error("{format} data is corrupt: {reason}")]
    Corrupt {
        /// Detected container format.
        format: &'static str,
        /// What the decoder objected to.
        reason: String,
    },
    /// A size limit was exceeded (input bytes, pixels, side length, output size).
    #[error("{what} is {actual}, over the limit of {limit}")]
    TooLarge {
        /// Which quantity was too large (e.g. "image width").
        what: &'static str,
        /// The limit in force.
        limit: u64,
        /// The value found.
        actual: u64,
    },
    /// The decoder itself refused to allocate (its own memory limit was hit).
    #[error("{format} decoder refused to allocate: {reason}")]
    DecoderLimit {
        /// Detected container format.
        format: &'static str,
        /// Decoder message (the image crate gives no numbers here).
        reason: String,
    },
    /// The content is not an image format this crate handles.
    #[error("unsupported format: {0}")]
    UnsupportedFormat(String),
    /// An operation option is out of range or inconsistent.
    #[error("invalid option `{field}`: {reason}")]
    InvalidOption {
        /// Option name as it appears in the serde options struct.
        field: &'static str,
        /// Why the value was refused.
        reason: String,
    },
    /// A blob hash is not 64 lowercase hex characters.
    #[error("invalid blob hash {0:?}: expected 64 lowercase hex characters")]
    InvalidHash(String),
    /// No blob with this hash is stored.
    #[error("blob {0} not found")]
    NotFound(String),
    /// Encoding the output image failed.
    #[error("encoding {format} failed: {reason}")]
    Encode {
        /// Output format.
        format: &'static str,
        /// Encoder message.
        reason: String,
    },
    /// The SIMD resizer refused the request.
    #[error("resize failed: {0}")]
    Resize(String),
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, including the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The object store (S3-compatible) refused or failed a request.
    #[error("object store: {0}")]
    Remote(String),
}

/// Result alias used throughout the crate.
pub type Result<T, E = MediaError> = std::result::Result<T, E>;

impl MediaError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        MediaError::Io { context: context.into(), source }
    }

    pub(crate) fn option(field: &'static str, reason: impl Into<String>) -> Self {
        MediaError::InvalidOption { field, reason: reason.into() }
    }

    /// Classifies a decoder error: the codecs report running out of input in several
    /// ways (io EOF, or a format error whose text says so), and callers deserve one
    /// `Truncated` variant for all of them.
    pub(crate) fn from_decode(format: &'static str, err: ImageError) -> Self {
        match err {
            ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => MediaError::Truncated { format },
            ImageError::Limits(l) => MediaError::DecoderLimit { format, reason: l.to_string() },
            ImageError::Unsupported(u) => MediaError::UnsupportedFormat(u.to_string()),
            other => {
                let reason = other.to_string();
                let lower = reason.to_ascii_lowercase();
                if lower.contains("eof")
                    || lower.contains("end of file")
                    || lower.contains("unexpected end")
                    || lower.contains("truncated")
                    || lower.contains("no more data")
                {
                    MediaError::Truncated { format }
                } else {
                    MediaError::Corrupt { format, reason }
                }
            }
        }
    }
}
