//! Counting failures to stop guessing: sign-ins and reset tokens (the API), authorization codes
//! (the slow path). Failures are counted per key (a source, a user, a caller) in a sliding
//! window; a key with `max` failures in the window is blocked until the oldest leaves it.
//!
//! A subject's limit (a user's, a caller's) counts and blocks only sources that subject has
//! succeeded from before (the "known device" exemption of OWASP's authentication guidance):
//! otherwise anyone could lock `admin` out by failing to sign in as `admin`, or a caller out of
//! their authorization codes by dialing wrong ones in their name. Every source keeps its own
//! limit, known or not, so a known source cannot be used to guess either.
//!
//! Kept in memory: a restart forgets it, which an attacker cannot cause from outside. Bounded:
//! a spray of sources or names takes at most [`KEYS`] keys per map.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    time::{Duration, Instant},
};

/// Keys kept at most, per map: bounds the memory a spray of sources or user names can take.
const KEYS: usize = 100_000;

/// Failures kept per key, so the largest limit a configuration may set. With [`KEYS`], it bounds
/// the memory: a few megabytes even when every key is full.
pub const FAILURES_MAX: usize = 64;

/// The key of a source: `what:` and its IPv4 address, or the /64 of its IPv6 address (one host
/// usually holds a whole /64, and would otherwise get a fresh limit per address); `what:local`
/// for none (the Unix socket).
pub fn source_key(what: &str, ip: Option<IpAddr>) -> String {
    let source = match ip {
        None => "local".into(),
        Some(IpAddr::V6(a)) if a.to_ipv4_mapped().is_none() => {
            let s = a.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(ip) => ip.to_canonical().to_string(),
    };
    format!("{what}:{source}")
}

/// Failures per key in a sliding window, and the (subject, source) pairs that succeeded.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: HashMap<String, VecDeque<Instant>>,
    /// (subject key, source key) → the last success.
    known: HashMap<(String, String), Instant>,
}

impl Throttle {
    /// How long until `key` may try again, when it has `max` failures within `window`.
    pub fn blocked(&mut self, key: &str, max: u32, window: Duration) -> Option<Duration> {
        let now = Instant::now();
        let q = self.failures.get_mut(key)?;
        while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
            q.pop_front();
        }
        if q.len() >= max as usize {
            q.front().map(|t| window.saturating_sub(now.duration_since(*t)))
        } else {
            None
        }
    }

    /// How long until `source` may try again for `subject`: the source's own limit, and the
    /// subject's unless `source` has succeeded for `subject` before.
    pub fn blocked_for(
        &mut self,
        source: &str,
        subject: &str,
        max: u32,
        window: Duration,
    ) -> Option<Duration> {
        self.blocked(source, max, window)
            .or_else(|| if self.knows(subject, source) { None } else { self.blocked(subject, max, window) })
    }

    /// Begins an attempt from `source` for `subject`: `Err(wait)` when either is blocked; else
    /// the attempt is counted as a failure at once, before it is checked, so that parallel
    /// attempts cannot all pass before the first failure is recorded. A success takes it back
    /// ([`Throttle::succeeded`]).
    pub fn begin(&mut self, source: &str, subject: &str, max: u32, window: Duration) -> Result<(), Duration> {
        if let Some(wait) = self.blocked_for(source, subject, max, window) {
            return Err(wait);
        }
        self.fail(source, window);
        if !self.knows(subject, source) {
            self.fail(subject, window);
        }
        Ok(())
    }

    /// Records a success: the attempt's count ([`Throttle::begin`]) is taken back, the subject's
    /// failures are forgotten, and `source` is known for `subject` from now on.
    pub fn succeeded(&mut self, source: &str, subject: &str) {
        if let Some(q) = self.failures.get_mut(source) {
            q.pop_back();
        }
        self.failures.remove(subject);
        if self.known.len() >= KEYS {
            // Forget the oldest half rather than refuse to learn.
            let mut times: Vec<Instant> = self.known.values().copied().collect();
            times.sort_unstable();
            let cut = times[times.len() / 2];
            self.known.retain(|_, t| *t > cut);
        }
        self.known.insert((subject.to_owned(), source.to_owned()), Instant::now());
    }

    fn knows(&self, subject: &str, source: &str) -> bool {
        self.known.contains_key(&(subject.to_owned(), source.to_owned()))
    }

    /// Records a failure of `key`.
    pub fn fail(&mut self, key: &str, window: Duration) {
        let now = Instant::now();
        if self.failures.len() > KEYS {
            // Forget keys with nothing recent.
            self.failures.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        let q = self.failures.entry(key.to_owned()).or_default();
        q.push_back(now);
        if q.len() > FAILURES_MAX {
            q.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv6 host holds a whole /64: every address in it is one key; IPv4 addresses (also
    /// written IPv4-mapped) are each their own.
    #[test]
    fn source_keys_take_an_ipv6_slash_64_as_one_source() {
        let key = |a: &str| source_key("ip", Some(a.parse().unwrap()));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_eq!(key("2001:db8:1:2::1"), "ip:2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        assert_eq!(source_key("ip", None), "ip:local");
    }

    /// Parallel attempts cannot all pass the check before the first failure is recorded: each
    /// is counted when it begins, and a success takes its count back.
    #[test]
    fn attempts_are_counted_before_they_are_checked() {
        let mut t = Throttle::default();
        let w = Duration::from_secs(60);
        for _ in 0..3 {
            assert!(t.begin("ip:a", "u", 3, w).is_ok());
        }
        assert!(t.begin("ip:a", "u", 3, w).is_err(), "the fourth attempt in flight is refused");
        let mut t = Throttle::default();
        for _ in 0..10 {
            assert!(t.begin("ip:b", "u", 3, w).is_ok());
            t.succeeded("ip:b", "u");
        }
    }

    /// A subject's failures block the sources it never succeeded from, not the known ones.
    #[test]
    fn a_stranger_cannot_lock_a_subject_out_of_a_known_source() {
        let mut t = Throttle::default();
        let w = Duration::from_secs(60);
        assert!(t.begin("ip:home", "alice", 3, w).is_ok());
        t.succeeded("ip:home", "alice");
        for s in ["ip:x", "ip:y", "ip:z"] {
            assert!(t.begin(s, "alice", 3, w).is_ok());
        }
        assert!(t.begin("ip:new", "alice", 3, w).is_err(), "alice is blocked for new sources");
        assert!(t.begin("ip:home", "alice", 3, w).is_ok(), "but not from home");
    }
}
