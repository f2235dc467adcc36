//! Group commit for job outcomes.
//!
//! Draining a queue of fast jobs is bound by one commit per finished job (a
//! WAL flush on PostgreSQL, a round of SQLite's single write lock). A
//! [`FinishBatcher`] funnels every outcome of a process through one task that
//! records whatever has arrived in ONE [`Store::finish_jobs`] transaction:
//! while a commit is in flight the next outcomes queue up and share the next
//! commit, so batches grow with load and a lone job waits for nobody (no
//! timer: an idle queue pays no extra latency).
//!
//! Each caller learns whether its own outcome was recorded only after the
//! commit that recorded it, so nothing downstream (events, settlement) can
//! run ahead of the database. Each job stays fenced by its own lease owner.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::db::{Store, StoreError};
use crate::jobs::{Finished, JobFinish};

/// Largest batch one transaction records by default.
pub const DEFAULT_MAX_BATCH: usize = 256;

struct Pending {
    finish: JobFinish,
    reply: oneshot::Sender<Result<Finished, String>>,
}

/// Sends job outcomes to the batching task. Cheap to clone; the task ends when
/// every clone is dropped (after recording what was sent).
#[derive(Clone)]
pub struct FinishBatcher {
    tx: mpsc::UnboundedSender<Pending>,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    commits: AtomicU64,
    outcomes: AtomicU64,
}

impl FinishBatcher {
    /// A batcher over `store` recording at most `max_batch` (≥ 1) outcomes per
    /// transaction, and the task that does the recording: spawn it (it ends
    /// once every [`FinishBatcher`] clone is gone).
    pub fn new(store: Store, max_batch: usize) -> (FinishBatcher, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let task = run(store, rx, max_batch.max(1), stats.clone());
        (FinishBatcher { tx, stats }, task)
    }

    /// Records one outcome (in a shared transaction) and returns, after the
    /// commit, whether it was applied: false when `owner` no longer holds the
    /// job's lease, in which case nothing was changed for it.
    pub async fn finish(&self, finish: JobFinish) -> Result<bool, StoreError> {
        Ok(self.finish_settling(finish).await?.recorded)
    }

    /// [`FinishBatcher::finish`], also telling how the job's hold was
    /// settled in the same transaction when [`JobFinish::settle`] asked.
    pub async fn finish_settling(&self, finish: JobFinish) -> Result<Finished, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { finish, reply })
            .map_err(|_| StoreError::Batch("the job finisher has stopped (shutting down?)".into()))?;
        rx.await
            .map_err(|_| StoreError::Batch("the job finisher stopped before recording this outcome".into()))?
            .map_err(StoreError::Batch)
    }

    /// Transactions committed so far.
    pub fn commits(&self) -> u64 {
        self.stats.commits.load(Ordering::Relaxed)
    }

    /// Outcomes sent through those transactions (applied or not).
    pub fn outcomes(&self) -> u64 {
        self.stats.outcomes.load(Ordering::Relaxed)
    }
}

async fn run(store: Store, mut rx: mpsc::UnboundedReceiver<Pending>, max_batch: usize, stats: Arc<Stats>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        // Let tasks woken by the same event (a claim's jobs finishing
        // together) hand in their outcomes before this batch closes.
        tokio::task::yield_now().await;
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let finishes: Vec<JobFinish> = batch.iter().map(|p| p.finish.clone()).collect();
        let result = store.finish_jobs_settling(&finishes).await;
        stats.outcomes.fetch_add(batch.len() as u64, Ordering::Relaxed);
        match result {
            Ok(applied) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                for (p, a) in batch.into_iter().zip(applied) {
                    let _ = p.reply.send(Ok(a));
                }
            }
            Err(e) => {
                // Nothing of this batch was committed: every caller hears so,
                // and its lease lapses into reconciliation as after a crash.
                let msg = e.to_string();
                for p in batch {
                    let _ = p.reply.send(Err(msg.clone()));
                }
            }
        }
    }
}
