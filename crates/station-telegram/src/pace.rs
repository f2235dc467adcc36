//! The outgoing pace: about one message a second per chat, 20 a minute per
//! group and 30 a second overall, plus whatever `retry_after` Telegram asks.
//!
//! Each send reserves a moment and sleeps until it. Per chat (and so per
//! group) reservations only move forward, so a group's limit is a sliding
//! window over its last sends. The overall limit is counted in calendar
//! seconds at half the rate, which keeps every sliding second within it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Outgoing limits.
#[derive(Debug, Clone)]
pub struct PaceLimits {
    /// Least time between two messages to one chat.
    pub chat_interval: Duration,
    /// Messages per group in any `group_window`.
    pub group_max: usize,
    /// The group window (a minute on Telegram).
    pub group_window: Duration,
    /// Messages per second over all chats.
    pub global_per_second: u32,
}

impl Default for PaceLimits {
    fn default() -> Self {
        PaceLimits {
            chat_interval: Duration::from_millis(1050),
            group_max: 20,
            group_window: Duration::from_secs(60),
            global_per_second: 30,
        }
    }
}

#[derive(Default)]
struct State {
    chat_next: HashMap<i64, Instant>,
    groups: HashMap<i64, VecDeque<Instant>>,
    seconds: BTreeMap<u64, u32>,
}

/// The pacer, shared by every delivery.
pub struct Pacer {
    limits: PaceLimits,
    origin: Instant,
    state: Mutex<State>,
}

impl Pacer {
    /// A pacer with these limits.
    pub fn new(limits: PaceLimits) -> Pacer {
        Pacer { limits, origin: Instant::now(), state: Mutex::new(State::default()) }
    }

    /// The limits in use.
    pub fn limits(&self) -> &PaceLimits {
        &self.limits
    }

    fn reserve(&self, chat: i64, group: bool) -> Instant {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut t = s.chat_next.get(&chat).copied().unwrap_or(now).max(now);
        if group {
            let w = s.groups.entry(chat).or_default();
            while w.front().is_some_and(|x| now.duration_since(*x) >= self.limits.group_window) {
                w.pop_front();
            }
            if w.len() >= self.limits.group_max {
                let oldest = w[w.len() - self.limits.group_max];
                t = t.max(oldest + self.limits.group_window + Duration::from_millis(20));
            }
        }
        let per_second = (self.limits.global_per_second / 2).max(1);
        let mut sec = t.duration_since(self.origin).as_secs();
        while s.seconds.get(&sec).copied().unwrap_or(0) >= per_second {
            sec += 1;
            t = t.max(self.origin + Duration::from_secs(sec));
        }
        *s.seconds.entry(sec).or_default() += 1;
        let stale = now.duration_since(self.origin).as_secs().saturating_sub(2);
        s.seconds.retain(|k, _| *k >= stale);
        if group {
            s.groups.entry(chat).or_default().push_back(t);
        }
        s.chat_next.insert(chat, t + self.limits.chat_interval);
        t
    }

    /// Waits for this chat's next slot.
    pub async fn acquire(&self, chat: i64, group: bool) {
        let at = self.reserve(chat, group);
        tokio::time::sleep_until(at).await;
    }

    /// How long a send to this chat would wait now.
    pub fn backlog(&self, chat: i64) -> Duration {
        let s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.chat_next.get(&chat).map(|t| t.saturating_duration_since(Instant::now())).unwrap_or_default()
    }

    /// Telegram said to wait `secs` before writing to this chat again.
    pub fn penalize(&self, chat: i64, secs: u64) {
        let until = Instant::now() + Duration::from_secs(secs) + Duration::from_millis(50);
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = s.chat_next.entry(chat).or_insert(until);
        *next = (*next).max(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spaces_one_chat_and_not_the_others() {
        let p = Pacer::new(PaceLimits::default());
        let t0 = Instant::now();
        p.acquire(1, false).await;
        p.acquire(2, false).await;
        assert!(t0.elapsed() < Duration::from_millis(10));
        p.acquire(1, false).await;
        assert!(t0.elapsed() >= Duration::from_millis(1050));
        p.penalize(2, 5);
        let t1 = Instant::now();
        p.acquire(2, false).await;
        assert!(t1.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn groups_and_the_global_limit() {
        let p = Pacer::new(PaceLimits { chat_interval: Duration::ZERO, group_max: 3, ..Default::default() });
        let t0 = Instant::now();
        for _ in 0..3 {
            p.acquire(-1, true).await;
        }
        assert!(t0.elapsed() < Duration::from_millis(10));
        p.acquire(-1, true).await;
        assert!(t0.elapsed() >= Duration::from_secs(60));
        // 15 per calendar second overall.
        let p = Pacer::new(PaceLimits { chat_interval: Duration::ZERO, ..Default::default() });
        let t0 = Instant::now();
        for i in 0..16 {
            p.acquire(i, false).await;
        }
        assert!(t0.elapsed() >= Duration::from_millis(999), "{:?}", t0.elapsed());
    }
}
