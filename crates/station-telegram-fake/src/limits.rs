//! Flood control as the Bot API applies it: per chat (about one message a
//! second, a small burst allowed), per group (20 a minute) and per bot (30 a
//! second). A request over a limit gets `429` with `retry_after`; a request
//! sent to a chat before an earlier `retry_after` ran out is also counted as
//! a violation (the bot ignored what it was told).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Rate limits of the fake server.
#[derive(Debug, Clone)]
pub struct RateLimits {
    /// Messages per second one chat may receive on average.
    pub chat_per_second: f64,
    /// Messages a chat may receive at once before the per-second rate applies.
    pub chat_burst: f64,
    /// Messages per minute one group may receive.
    pub group_per_minute: usize,
    /// Messages per second over all chats.
    pub global_per_second: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits { chat_per_second: 1.0, chat_burst: 3.0, group_per_minute: 20, global_per_second: 30 }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Book-keeping for the limits.
#[derive(Debug, Default)]
pub struct Limiter {
    pub limits: RateLimits,
    chats: HashMap<i64, Bucket>,
    groups: HashMap<i64, VecDeque<Instant>>,
    global: VecDeque<Instant>,
    penalty: HashMap<i64, Instant>,
    global_penalty: Option<Instant>,
    /// 429 answers served.
    pub served_429: u64,
    /// Requests made while an earlier `retry_after` was still running.
    pub violations: u64,
}

fn secs_ceil(d: Duration) -> u64 {
    (d.as_millis().div_ceil(1000) as u64).max(1)
}

impl Limiter {
    /// A limiter with these limits.
    pub fn new(limits: RateLimits) -> Limiter {
        Limiter { limits, ..Default::default() }
    }

    /// Takes one message slot for `chat` (a group when `group`), or returns
    /// the seconds to wait.
    pub fn take(&mut self, chat: i64, group: bool, now: Instant) -> Result<(), u64> {
        if let Some(until) = self.penalty.get(&chat).copied()
            && now < until
        {
            self.violations += 1;
            self.served_429 += 1;
            return Err(secs_ceil(until - now));
        }
        if let Some(until) = self.global_penalty
            && now < until
        {
            self.violations += 1;
            self.served_429 += 1;
            return Err(secs_ceil(until - now));
        }
        while self.global.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1)) {
            self.global.pop_front();
        }
        if self.global.len() >= self.limits.global_per_second {
            let until = self.global[0] + Duration::from_secs(1);
            self.global_penalty = Some(until);
            self.served_429 += 1;
            return Err(secs_ceil(until - now));
        }
        let rate = self.limits.chat_per_second;
        let burst = self.limits.chat_burst;
        let b = self.chats.entry(chat).or_insert(Bucket { tokens: burst, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - b.tokens) / rate);
            self.penalty.insert(chat, now + wait);
            self.served_429 += 1;
            return Err(secs_ceil(wait));
        }
        if group {
            let w = self.groups.entry(chat).or_default();
            while w.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
                w.pop_front();
            }
            if w.len() >= self.limits.group_per_minute {
                let until = w[0] + Duration::from_secs(60);
                self.penalty.insert(chat, until);
                self.served_429 += 1;
                return Err(secs_ceil(until - now));
            }
            w.push_back(now);
        }
        b.tokens -= 1.0;
        self.global.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_one_a_second_and_violations_counted() {
        let mut l = Limiter::new(RateLimits::default());
        let t0 = Instant::now();
        for _ in 0..3 {
            l.take(1, false, t0).unwrap();
        }
        let wait = l.take(1, false, t0).unwrap_err();
        assert_eq!(wait, 1);
        assert_eq!(l.served_429, 1);
        assert_eq!(l.violations, 0);
        // Ignoring retry_after is a violation.
        l.take(1, false, t0 + Duration::from_millis(500)).unwrap_err();
        assert_eq!(l.violations, 1);
        l.take(1, false, t0 + Duration::from_millis(1000)).unwrap();
        // Another chat is independent.
        l.take(2, false, t0).unwrap();
    }

    #[test]
    fn groups_get_twenty_a_minute() {
        let mut l = Limiter::new(RateLimits { chat_burst: 100.0, ..Default::default() });
        let t0 = Instant::now();
        for i in 0..20 {
            l.take(-5, true, t0 + Duration::from_millis(i * 1000)).unwrap();
        }
        let wait = l.take(-5, true, t0 + Duration::from_secs(20)).unwrap_err();
        assert_eq!(wait, 40);
    }
}
