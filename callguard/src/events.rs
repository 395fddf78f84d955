//! Events from the kernel: sampled drops and bans, read from the `CG_EVENTS` ring buffer.
//!
//! The daemon reads the ring buffer as it becomes readable ([`read_ring`]), turns bans into deny
//! rules (`service::Service::auto_bans`), logs drops at most `events.log_per_sec` a second (the rest
//! are counted and summarised), keeps the last [`RECENT`] events, and streams them to
//! `callguard events --follow` through [`Hub`].

use std::{
    collections::VecDeque,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use aya::maps::{MapData, RingBuf};
use callguard_common::{
    Reason,
    events::{Event, event},
    sip,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::{io::unix::AsyncFd, sync::broadcast};

/// What an [`EventRecord`] reports.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A sampled drop in the kernel.
    Drop,
    /// The kernel banned the source (rate, extension scan or signature).
    Ban,
    /// The slow path decided a handed-up request.
    Call,
    /// The kernel guarded a user whose failed authentications, from any sources, reached
    /// `auth.user_failures` (the source is that of the last failure).
    Guard,
}

impl EventKind {
    /// The lower-case name, as in the JSON and the log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Ban => "ban",
            Self::Call => "call",
            Self::Guard => "guard",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A drop sample, a ban or a decided call, as the daemon reports it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct EventRecord {
    /// When the kernel saw the packet.
    pub time: DateTime<Utc>,
    /// What happened.
    pub kind: EventKind,
    /// The source (for IPv6 bans and rate drops: its /64).
    #[schema(value_type = String)]
    pub source: IpAddr,
    /// The reason's name.
    pub reason: String,
    /// The request method (`unknown` when it is not one callguard knows, or not a request).
    pub method: String,
    /// The rule that decided, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
    /// The signature that matched, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<u32>,
    /// The first bytes of the User-Agent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    /// For bans: what was done (the rule written, or why none was).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// For guards: the user (the To's user part, percent escapes decoded; empty when the To
    /// could not be read).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
}

/// Events kept for `callguard events` without `--follow`: this many drops, and as many bans
/// (kept apart, so that a flood of drop samples does not push the bans out).
pub const RECENT: usize = 200;

/// The recent events and the live feed.
#[derive(Debug)]
pub struct Hub {
    /// Recent drops (index 0) and bans (index 1).
    recent: Mutex<[VecDeque<EventRecord>; 2]>,
    live: broadcast::Sender<EventRecord>,
    log: Mutex<LogLimiter>,
}

impl Hub {
    /// A hub that logs at most `log_per_sec` drop events a second.
    pub fn new(log_per_sec: u32) -> Arc<Self> {
        Arc::new(Self {
            recent: Mutex::new([VecDeque::with_capacity(RECENT), VecDeque::with_capacity(RECENT)]),
            live: broadcast::channel(1024).0,
            log: Mutex::new(LogLimiter { per_sec: log_per_sec, window: Instant::now(), logged: 0, held: 0 }),
        })
    }

    /// Records an event: recent list, live subscribers, and the log (drops rate-limited).
    pub fn publish(&self, rec: EventRecord) {
        if rec.kind == EventKind::Ban {
            // Limited like the rest: a storm of spoofed sources is a ban each, and must not
            // flood the journal (every ban the kernel wrote still reaches `callguard events` and
            // the store; signature bans are written within the kernel's event budget).
            if self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).admit() {
                tracing::warn!(
                    source = %rec.source, reason = %rec.reason, detail = %rec.detail, "source banned"
                );
            }
        } else {
            let mut log = self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if rec.kind == EventKind::Call {
                if log.admit() {
                    tracing::info!(
                        source = %rec.source, decision = %rec.reason, method = %rec.method,
                        rule = %rec.detail, "call decided"
                    );
                }
            } else if log.admit() {
                tracing::info!(
                    source = %rec.source, reason = %rec.reason, method = %rec.method,
                    user_agent = %rec.user_agent, rule = ?rec.rule, signature = ?rec.signature,
                    "dropped (sampled)"
                );
            }
        }
        let mut recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bans and guards are kept apart from the drops, which a flood makes many.
        let list = &mut recent[usize::from(matches!(rec.kind, EventKind::Ban | EventKind::Guard))];
        if list.len() == RECENT {
            list.pop_front();
        }
        list.push_back(rec.clone());
        drop(recent);
        // No subscriber is not an error.
        let _ = self.live.send(rec);
    }

    /// The recent drops and bans, oldest first.
    pub fn recent(&self) -> Vec<EventRecord> {
        let recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut all: Vec<EventRecord> = recent.iter().flatten().cloned().collect();
        all.sort_by_key(|r| r.time);
        all
    }

    /// A live feed.
    pub fn subscribe(&self) -> broadcast::Receiver<EventRecord> {
        self.live.subscribe()
    }
}

/// At most `per_sec` log lines a second; what is held back is summarised in the next window.
#[derive(Debug)]
struct LogLimiter {
    per_sec: u32,
    window: Instant,
    logged: u32,
    held: u64,
}

impl LogLimiter {
    fn admit(&mut self) -> bool {
        if self.window.elapsed().as_secs() >= 1 {
            if self.held > 0 {
                tracing::info!(
                    held_back = self.held,
                    "events (drops, calls, bans) not logged in the last second"
                );
            }
            self.window = Instant::now();
            self.logged = 0;
            self.held = 0;
        }
        if self.logged < self.per_sec {
            self.logged += 1;
            true
        } else {
            self.held += 1;
            false
        }
    }
}

/// A kernel event turned into a record (rule and signature ids are filled in by the daemon).
pub fn record(e: &Event, clock: &crate::clock::Clock) -> EventRecord {
    let time: DateTime<Utc> = clock.wall_at(e.ts_ns);
    let ua_len = usize::from(e.ua_len).min(e.ua.len());
    let text = &e.ua[..ua_len];
    let guard = e.kind == event::GUARD_USER;
    EventRecord {
        time,
        kind: match e.kind {
            event::DROP => EventKind::Drop,
            event::GUARD_USER => EventKind::Guard,
            _ => EventKind::Ban,
        },
        source: e.addr(),
        reason: match event::ban_cause(e.kind) {
            Some(cause) => cause.into(),
            None => Reason::from_code(u32::from(e.reason)).map_or("unknown", Reason::name).into(),
        },
        method: sip::method::NAMES.get(usize::from(e.method)).copied().unwrap_or("unknown").into(),
        rule: None,
        signature: None,
        user_agent: if guard { String::new() } else { String::from_utf8_lossy(text).into_owned() },
        detail: String::new(),
        user: if guard { user_text(text) } else { String::new() },
    }
}

/// A user part as a To writes it (percent escapes, RFC 3261 §25.1), decoded for people: what
/// the kernel's user key hashed, in its original case. Control characters (an escaped line
/// break would forge a log line) become `?`.
pub fn user_text(raw: &[u8]) -> String {
    let hex = |c: u8| char::from(c).to_digit(16);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match (raw[i], raw.get(i + 1).copied().and_then(hex), raw.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// Waits until the ring buffer has events and returns them all.
pub async fn read_ring(ring: &mut AsyncFd<RingBuf<MapData>>) -> std::io::Result<Vec<Event>> {
    loop {
        let mut guard = ring.readable_mut().await?;
        let rb = guard.get_inner_mut();
        let mut out = Vec::new();
        while let Some(item) = rb.next() {
            if item.len() == size_of::<Event>() {
                // SAFETY: the kernel wrote an Event (repr(C), integers only) of exactly this size.
                out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
            }
        }
        guard.clear_ready();
        if !out.is_empty() {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::user_text;

    #[test]
    fn a_guarded_user_is_named_with_its_escapes_decoded() {
        assert_eq!(user_text(b"%31%30%31"), "101");
        assert_eq!(user_text(b"Alice"), "Alice");
        assert_eq!(user_text(b"a%2"), "a%2", "a cut escape stays as written");
        assert_eq!(user_text(b"%zz1"), "%zz1");
        assert_eq!(user_text(b"1%0aforged"), "1?forged", "no line break reaches the log");
    }
}
