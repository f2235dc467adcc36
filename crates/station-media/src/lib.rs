//! station-media: Station's native media layer.
//!
//! - [`store`]: a content-addressed blob store (sha256, atomic writes, cached
//!   thumbnails) behind the [`BlobStore`] trait.
//! - [`object`]: the same store on S3-compatible object storage (async
//!   underneath, driven from the blocking pool).
//! - [`decode`](mod@decode): bounded decoding that detects the type from content and refuses
//!   decompression bombs before allocating.
//! - [`ops`]: pure image operations (resize, crop, convert, watermark, ...) with
//!   serde option structs, using SIMD resizing.
//!
//! Everything is synchronous (CPU-bound, or blocking on the object store):
//! async callers should run it under
//! `tokio::task::spawn_blocking`.

pub mod decode;
pub mod error;
pub mod object;
pub mod ops;
pub mod store;

/// The `image` crate this one is built on, so callers name the same `DynamicImage`
/// type without pinning a version of their own.
pub use image;

pub use decode::{DecodeLimits, ImageInfo, MediaFormat, decode, extension_for_mime, probe};
pub use error::{MediaError, Result};
pub use object::{ObjectBlobStore, ObjectStoreSettings};
pub use store::{BlobStore, MediaStore, StoredBlob};
