//! Secrets at rest and in comparison: API keys, sign-in tokens, session ids
//! and link codes are stored only as their SHA-256 (random 256-bit secrets
//! need no slow hash), and secrets sent by clients are compared in constant
//! time.

use sha2::{Digest, Sha256};

/// Whether two secrets are equal, in time independent of where they differ
/// (webhook secrets, CSRF tokens): the one comparison every front end uses.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Hex SHA-256 of a secret: what is stored and looked up.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(digest_secret(secret))
}

/// The raw SHA-256 of a secret (what [`hash_secret`] writes in hex).
pub(crate) fn digest_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}
