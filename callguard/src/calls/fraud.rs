//! Fraud thresholds on the calls the slow path lets through (issue 17, item 2), after OpenSIPS'
//! `fraud_detection` module: per caller (From user at From host) and per source (an IPv4
//! address, an IPv6 /64), calls a minute, calls to international or premium numbers an hour,
//! call attempts begun within [`PARALLEL_SECS`] (the calls in setup at once), and numbers dialed
//! in sequence (each one more than the last: a dialer walking a number range). A stolen
//! password turns into a bill this way: an extension that suddenly dials fifty international
//! calls a minute. A call that would cross a threshold is refused (`deny/fraud`), and, when
//! `fraud.ban_secs` is set, its source is banned.
//!
//! Only calls the number rules allow are counted: a refused call costs nothing. A call is counted
//! once: the same INVITE sent again with credentials after the PBX's `407` (same Call-ID, From
//! and number, RFC 3261 §8.1.3.5) is not a second call. Windows are fixed (they start at the
//! first call counted and last their length), as OpenSIPS' are. Only a source threshold bans,
//! and only a source proven to receive at its address (callers are named by the From header,
//! which anyone can write; a spoofed source cannot be proven).

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::{
    calls::policy::{Decision, Facts, Step, Verdict, normalize},
    config::{Fraud, FraudLimits},
};

/// The window of [`FraudLimits::parallel`], in seconds: a call is set up within seconds, so
/// the attempts begun within this window are those in setup at once.
pub const PARALLEL_SECS: u64 = 10;

/// Callers and sources tracked at most; past it, those idle for an hour are forgotten, and if
/// that is not enough, all (a flood of made-up From users must not grow memory or make each
/// call scan the table).
const TRACKED_MAX: usize = 100_000;

/// Calls remembered as counted, for [`COUNTED_FOR`]: a re-sent INVITE is not counted again.
const COUNTED_MAX: usize = 100_000;

/// How long a counted call is remembered: Timer B (an INVITE transaction's lifetime).
const COUNTED_FOR: Duration = Duration::from_secs(32);

/// Longest user or host kept in a caller's key.
const NAME_MAX: usize = 64;

/// A fixed window: when it began and what it counted.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    start: Option<Instant>,
    count: u32,
}

impl Window {
    /// The count with one more call at `now`, the window restarted when `len` has passed.
    fn with_one_more(&self, now: Instant, len: Duration) -> Self {
        match self.start {
            Some(s) if now.duration_since(s) < len => Self { start: self.start, count: self.count + 1 },
            _ => Self { start: Some(now), count: 1 },
        }
    }
}

/// What is counted for one caller or source.
#[derive(Clone, Debug, Default)]
struct Track {
    minute: Window,
    hour_international: Window,
    parallel: Window,
    /// The last number dialed, as digits, and how many in a row counted up to it.
    last: Option<u128>,
    run: u32,
    seen: Option<Instant>,
}

/// Which threshold a call crossed, with its count and limit.
struct Crossed {
    what: &'static str,
    count: u32,
    limit: u32,
}

impl Track {
    /// The track with `call` counted at `now`, and the threshold it crosses, if one. A refused
    /// call is not counted, but the sequence notes its number all the same: a dialer that skips
    /// the refused number does not start a new run.
    fn count(&self, l: &FraudLimits, call: &Call, now: Instant) -> (Self, Option<Crossed>) {
        let mut t = self.clone();
        t.seen = Some(now);
        t.minute = self.minute.with_one_more(now, Duration::from_secs(60));
        t.parallel = self.parallel.with_one_more(now, Duration::from_secs(PARALLEL_SECS));
        if call.international {
            t.hour_international = self.hour_international.with_one_more(now, Duration::from_secs(3600));
        }
        (t.last, t.run) = match (self.last, call.digits) {
            // The same number again is no step, up or back.
            (Some(last), Some(d)) if last == d => (self.last, self.run),
            (Some(last), Some(d)) if last.checked_add(1) == Some(d) => (Some(d), self.run + 1),
            (_, d) => (d, u32::from(d.is_some())),
        };
        let checks = [
            ("calls_per_minute", t.minute.count, l.calls_per_minute),
            ("international_per_hour", t.hour_international.count, l.international_per_hour),
            ("parallel", t.parallel.count, l.parallel),
            ("sequential", t.run, l.sequential),
        ];
        match checks.into_iter().find(|&(_, count, limit)| limit != 0 && count > limit) {
            Some((what, count, limit)) => (self.refused(&t), Some(Crossed { what, count, limit })),
            None => (t, None),
        }
    }

    /// This track after a refused call: nothing counted, but the sequence of `t`.
    fn refused(&self, t: &Self) -> Self {
        Self { last: t.last, run: t.run, seen: t.seen, ..self.clone() }
    }
}

/// A call as the thresholds see it.
struct Call {
    /// To an international number or a premium prefix.
    international: bool,
    /// The number as digits, when it is all digits (after `+`): for the sequence.
    digits: Option<u128>,
}

/// The fraud thresholds' counts, per caller and per source.
#[derive(Debug, Default)]
pub struct FraudGuard {
    tracks: HashMap<String, Track>,
    /// The calls counted in the last [`COUNTED_FOR`], by Call-ID, From and number.
    counted: HashMap<String, Instant>,
}

/// A call refused by a threshold: the decision, and the source to ban (when configured).
#[derive(Debug)]
pub struct Refusal {
    /// The `deny/fraud` decision.
    pub decision: Decision,
    /// The source, when it crossed a source threshold and `calls.fraud.ban_secs` asks for a ban
    /// (the slow path bans it only when it is proven).
    pub ban: Option<IpAddr>,
}

impl FraudGuard {
    /// Counts an initial INVITE the number rules allowed, or refuses it when it crosses a
    /// threshold. `call` names the call (its Call-ID and From): the same call to the same number
    /// is counted once. Other decisions pass unchanged and uncounted.
    pub fn check(
        &mut self,
        cfg: &Fraud,
        intl: &str,
        f: &Facts,
        call: &str,
        decision: Decision,
        now: Instant,
    ) -> Result<Decision, Refusal> {
        let initial_invite = decision.step != Step::InDialog && f.method == "INVITE";
        if !cfg.enabled || decision.verdict != Verdict::Allow || !initial_invite {
            return Ok(decision);
        }
        let Some(dialed) = decision.dial.as_deref().or(f.dialed.as_deref()) else { return Ok(decision) };
        let number = normalize(dialed, intl);
        let call_key = format!("{call}\n{number}");
        if self.counted.get(&call_key).is_some_and(|t| now.duration_since(*t) < COUNTED_FOR) {
            return Ok(decision);
        }
        let premium = cfg.premium.iter().any(|p| number.starts_with(normalize(p, intl).as_str()));
        let this = Call {
            international: number.starts_with('+') || premium,
            digits: number.trim_start_matches('+').parse().ok(),
        };
        let short = |s: &str| s.chars().take(NAME_MAX).collect::<String>().to_ascii_lowercase();
        let caller =
            format!("caller {}@{}", short(f.from_user.as_deref().unwrap_or_default()), short(&f.from_host));
        let source = f.source.map(|a| format!("source {}", crate::net::source_net(a)));
        let mut tracks = Vec::new();
        let mut crossed = None;
        for (key, limits) in [(Some(caller), &cfg.caller), (source, &cfg.source)] {
            let Some(key) = key else { continue };
            let (t, c) = self.tracks.get(&key).cloned().unwrap_or_default().count(limits, &this, now);
            if crossed.is_none()
                && let Some(c) = c
            {
                crossed = Some((key.clone(), c));
            }
            tracks.push((key, t));
        }
        if crossed.is_some() {
            // Nothing is counted for a refused call, under any key; its number still goes into
            // each sequence.
            for (k, t) in &mut tracks {
                *t = self.tracks.get(k).cloned().unwrap_or_default().refused(t);
            }
        }
        self.tracks.extend(tracks);
        self.sweep(now);
        let Some((key, c)) = crossed else {
            self.counted.insert(call_key, now);
            return Ok(decision);
        };
        let scope = if key.starts_with("source") { "source" } else { "caller" };
        Err(Refusal {
            decision: Decision {
                verdict: Verdict::Deny,
                step: Step::Fraud,
                rule: format!("fraud.{scope}.{} = {}", c.what, c.limit),
                why: format!("{key}: this call would be {} ({} at most)", describe(c.what, c.count), c.limit),
                dial: None,
            },
            ban: f.source.filter(|_| cfg.ban_secs != 0 && scope == "source"),
        })
    }

    /// Keeps the tables within their bounds.
    fn sweep(&mut self, now: Instant) {
        if self.tracks.len() > TRACKED_MAX {
            self.tracks
                .retain(|_, t| t.seen.is_some_and(|s| now.duration_since(s) < Duration::from_secs(3600)));
            if self.tracks.len() > TRACKED_MAX {
                tracing::warn!(
                    "fraud thresholds: over {TRACKED_MAX} callers and sources within an hour; counts start afresh"
                );
                self.tracks.clear();
            }
        }
        if self.counted.len() > COUNTED_MAX {
            self.counted.retain(|_, t| now.duration_since(*t) < COUNTED_FOR);
            if self.counted.len() > COUNTED_MAX {
                self.counted.clear();
            }
        }
    }
}

/// A count in words.
fn describe(what: &str, count: u32) -> String {
    match what {
        "calls_per_minute" => format!("call {count} within a minute"),
        "international_per_hour" => format!("international or premium call {count} within an hour"),
        "parallel" => format!("call attempt {count} begun within {PARALLEL_SECS} s"),
        _ => format!("number {count} dialed in sequence"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::policy::Verdict;

    fn facts(dialed: &str, user: &str, source: &str) -> Facts {
        Facts {
            method: "INVITE".into(),
            dialed: Some(dialed.into()),
            from_user: Some(user.into()),
            from_host: "tenant.example".into(),
            source: Some(source.parse().unwrap()),
            ..Facts::default()
        }
    }

    fn allow() -> Decision {
        Decision {
            verdict: Verdict::Allow,
            step: Step::Default,
            rule: "-".into(),
            why: String::new(),
            dial: None,
        }
    }

    fn limits(
        calls_per_minute: u32,
        international_per_hour: u32,
        parallel: u32,
        sequential: u32,
    ) -> FraudLimits {
        FraudLimits { calls_per_minute, international_per_hour, parallel, sequential }
    }

    fn cfg(caller: FraudLimits, source: FraudLimits) -> Fraud {
        Fraud { enabled: true, caller, source, premium: vec!["1900".into()], ban_secs: 0 }
    }

    /// Places `n` calls one second apart from `t0`; returns the index of the first refused
    /// and its decision.
    fn first_refused(
        g: &mut FraudGuard,
        c: &Fraud,
        t0: Instant,
        n: u32,
        call: impl Fn(u32) -> Facts,
    ) -> Option<(u32, Decision)> {
        (0..n).find_map(|i| {
            let now = t0 + Duration::from_secs(u64::from(i));
            g.check(c, "00", &call(i), &format!("call-{i}"), allow(), now).err().map(|r| (i, r.decision))
        })
    }

    #[test]
    fn each_threshold_refuses_the_call_past_it() {
        let t0 = Instant::now();
        let off = limits(0, 0, 0, 0);
        // Calls a minute: the sixth within the minute is refused; a minute later they pass.
        let c = cfg(limits(5, 0, 0, 0), off);
        let mut g = FraudGuard::default();
        let (i, d) = first_refused(&mut g, &c, t0, 10, |_| facts("0301234", "101", "198.51.100.1")).unwrap();
        assert_eq!((i, d.verdict, d.step), (5, Verdict::Deny, Step::Fraud));
        assert_eq!(d.rule, "fraud.caller.calls_per_minute = 5");
        assert!(
            d.why.contains("caller 101@tenant.example") && d.why.contains("call 6 within a minute"),
            "{}",
            d.why
        );
        let later = t0 + Duration::from_secs(61);
        assert!(g.check(&c, "00", &facts("0301234", "101", "198.51.100.1"), "later", allow(), later).is_ok());
        // Another caller has counts of their own.
        assert!(g.check(&c, "00", &facts("0301234", "102", "198.51.100.1"), "other", allow(), t0).is_ok());

        // International and premium calls an hour; national calls do not count.
        let c = cfg(limits(0, 3, 0, 0), off);
        let mut g = FraudGuard::default();
        let dial = ["0301234", "+4930123", "0301234", "004420794", "19005551212", "0049301"];
        let (i, d) =
            first_refused(&mut g, &c, t0, 6, |i| facts(dial[i as usize], "101", "198.51.100.1")).unwrap();
        assert_eq!((i, d.step), (5, Step::Fraud), "{}", d.why);
        assert_eq!(d.rule, "fraud.caller.international_per_hour = 3");

        // Attempts in setup at once: four within ten seconds.
        let c = cfg(limits(0, 0, 3, 0), off);
        let mut g = FraudGuard::default();
        let (i, _) = first_refused(&mut g, &c, t0, 6, |_| facts("0301234", "101", "198.51.100.1")).unwrap();
        assert_eq!(i, 3);

        // Numbers counting up, however written; a break in the sequence starts it anew.
        let c = cfg(limits(0, 0, 0, 3), off);
        let mut g = FraudGuard::default();
        let dial = ["0301230", "0301231", "0301233", "0301234", "0301235", "0301236"];
        let (i, d) =
            first_refused(&mut g, &c, t0, 6, |i| facts(dial[i as usize], "101", "198.51.100.1")).unwrap();
        assert_eq!(i, 5, "{}", d.why);
        let mut g = FraudGuard::default();
        let dial = ["+4930100", "004930101", "+49 30 102", "+4930103"];
        assert!(
            first_refused(&mut g, &c, t0, 4, |i| facts(dial[i as usize], "101", "198.51.100.1")).is_some()
        );
        let mut g = FraudGuard::default();
        assert!(first_refused(&mut g, &c, t0, 10, |_| facts("0301234", "101", "198.51.100.1")).is_none());
    }

    #[test]
    fn a_source_is_counted_across_its_callers_and_a_refused_call_is_not_counted() {
        let t0 = Instant::now();
        let c = Fraud { ban_secs: 60, ..cfg(limits(0, 0, 0, 0), limits(4, 0, 0, 0)) };
        let mut g = FraudGuard::default();
        // Many callers behind one IPv6 /64: one source.
        let refused = (0..6u32).find_map(|i| {
            let f = facts("0301234", &format!("10{i}"), &format!("2001:db8::{i}"));
            g.check(&c, "00", &f, &format!("c{i}"), allow(), t0).err()
        });
        let r = refused.expect("the fifth call from the /64 is refused");
        assert_eq!(r.ban, Some("2001:db8::4".parse().unwrap()), "a source threshold bans");
        assert!(r.decision.why.contains("source 2001:db8::/64"), "{}", r.decision.why);
        // Denied calls and in-dialog requests are neither refused nor counted.
        let mut deny = allow();
        deny.verdict = Verdict::Deny;
        let mut g = FraudGuard::default();
        for _ in 0..10 {
            assert_eq!(
                g.check(&c, "00", &facts("1", "1", "198.51.100.9"), "d", deny.clone(), t0).unwrap().verdict,
                Verdict::Deny
            );
        }
        assert!(g.check(&c, "00", &facts("1", "1", "198.51.100.9"), "a", allow(), t0).is_ok());
    }

    /// The review's findings: a call re-sent with credentials after a `407` is one call; a
    /// caller threshold (the From header, anyone's to write) never bans; a dialer that skips
    /// the refused number stays in its sequence; repeating a number is no step.
    #[test]
    fn a_call_counts_once_and_only_a_source_threshold_bans() {
        let t0 = Instant::now();
        let off = limits(0, 0, 0, 0);
        let c = Fraud { ban_secs: 60, ..cfg(limits(2, 0, 0, 3), off) };
        let mut g = FraudGuard::default();
        let f = facts("0301230", "101", "198.51.100.1");
        for _ in 0..5 {
            assert!(g.check(&c, "00", &f, "invite-1", allow(), t0).is_ok(), "the same call, re-sent");
        }
        assert!(g.check(&c, "00", &facts("0301231", "101", "198.51.100.1"), "invite-2", allow(), t0).is_ok());
        let r =
            g.check(&c, "00", &facts("0301232", "101", "198.51.100.1"), "invite-3", allow(), t0).unwrap_err();
        assert_eq!(r.decision.rule, "fraud.caller.calls_per_minute = 2");
        assert_eq!(r.ban, None, "a caller threshold does not ban");
        // Sequence: 0301230, 0301231, (0301232 refused), 0301233 is the fourth in a row.
        let later = t0 + Duration::from_secs(61);
        let r = g
            .check(&c, "00", &facts("0301233", "101", "198.51.100.1"), "invite-4", allow(), later)
            .unwrap_err();
        assert_eq!(r.decision.rule, "fraud.caller.sequential = 3", "{}", r.decision.why);
        let mut g = FraudGuard::default();
        for (i, n) in ["0301230", "0301230", "0301231", "0301231", "0301232"].iter().enumerate() {
            let now = t0 + Duration::from_secs(30 * i as u64);
            assert!(
                g.check(&c, "00", &facts(n, "101", "198.51.100.1"), &format!("r{i}"), allow(), now).is_ok(),
                "{n}"
            );
        }
        // Turned off: nothing counts.
        let c = Fraud { enabled: false, ..c };
        let mut g = FraudGuard::default();
        assert!(first_refused(&mut g, &c, t0, 10, |_| facts("0301234", "101", "198.51.100.1")).is_none());
    }
}
