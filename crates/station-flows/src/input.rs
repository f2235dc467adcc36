//! The durable name of the input being handled.
//!
//! An adapter that can name an input (`telegram:<bot>:<update>`,
//! `discord:<interaction>`) hands it to [`crate::Flows::handle_once`]; every
//! durable write the input causes is recorded under a key derived from that
//! name (the first write under the name itself, which `handle_once` checks;
//! the n-th under `NAME#n`), and every job it submits is keyed
//! [`job_key`]`(NAME, n)`. Replayed after a crash, the same input produces
//! the same keys, so nothing it already did happens twice. [`InputKey`]
//! travels with the input through the engine, the flow context ([`crate::flow::Cx`])
//! and the result actions as an argument.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// The name of the input being handled, and how many writes and jobs it
/// has made so far. `InputKey::none()` for inputs nobody will replay.
#[derive(Debug, Clone, Default)]
pub struct InputKey(Option<Arc<Counters>>);

#[derive(Debug)]
struct Counters {
    key: String,
    writes: AtomicU32,
    jobs: AtomicU32,
}

impl InputKey {
    /// An input that is never handed over twice (the terminal chat).
    pub fn none() -> InputKey {
        InputKey(None)
    }

    /// The input named `key`.
    pub fn new(key: &str) -> InputKey {
        InputKey(Some(Arc::new(Counters { key: key.to_string(), writes: AtomicU32::new(0), jobs: AtomicU32::new(0) })))
    }

    /// The key to record with the input's next durable write: the input's
    /// own key for the first write, `KEY#n` for the n-th. None when unnamed.
    pub(crate) fn next_write(&self) -> Option<String> {
        let c = self.0.as_ref()?;
        Some(match c.writes.fetch_add(1, Ordering::SeqCst) {
            0 => c.key.clone(),
            n => format!("{}#{}", c.key, n + 1),
        })
    }

    /// The idempotency key of the next job the input submits.
    pub(crate) fn next_job(&self) -> Option<String> {
        let c = self.0.as_ref()?;
        Some(job_key(&c.key, c.jobs.fetch_add(1, Ordering::SeqCst) + 1))
    }
}

/// The idempotency key of the `n`-th job (from 1) an input submits: a
/// replayed input submits under the same keys, so it queues and charges nothing new.
pub fn job_key(input_key: &str, n: u32) -> String {
    format!("{input_key}/job{n}")
}
