//! Sources proven to receive what is sent to their address.
//!
//! A UDP source address can be forged by anyone, so what a packet says about its sender proves
//! nothing. What does: the daemon answers a barred call with a `403` whose To tag is a keyed hash
//! of the source address and the Call-ID ([`ProofTags`]); a real SIP stack acknowledges a final
//! response with an ACK that carries that tag (RFC 3261 §17.1.1.3), and only a sender who
//! received the `403` at that address can know it. The kernel hands such ACKs up
//! (`sip::TAG_CALLGUARD`), the slow path checks the tag and notes the source here, and subnet
//! escalation counts only the bans of sources noted here (review finding M2).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use callguard_common::sip::CALLGUARD_TAG_PREFIX;
use ipnet::IpNet;

use crate::net::source_net;

/// Sources noted at most; past it, the longest-noted make room.
pub const PROVEN_MAX: usize = 65_536;

/// How long a proof holds.
pub const PROVEN_FOR: Duration = Duration::from_secs(86_400);

/// The sources proven to receive at their address (an IPv4 address, an IPv6 /64), with when.
/// Shared by the slow path (which notes them) and the rule service (which escalates on them).
#[derive(Debug, Default)]
pub struct Proven {
    sources: Mutex<HashMap<IpNet, Instant>>,
}

impl Proven {
    /// Notes that `addr` acknowledged one of callguard's responses. When the table is full, the
    /// expired proofs go, then the oldest eighth: one sort per 8,192 new sources, not per source.
    pub fn note(&self, addr: IpAddr) {
        let now = Instant::now();
        let net = source_net(addr);
        let mut s = self.sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.len() >= PROVEN_MAX && !s.contains_key(&net) {
            s.retain(|_, t| now.duration_since(*t) < PROVEN_FOR);
            if s.len() >= PROVEN_MAX {
                let mut times: Vec<Instant> = s.values().copied().collect();
                times.sort_unstable();
                let cut = times[PROVEN_MAX / 8];
                s.retain(|_, t| *t > cut);
            }
        }
        s.insert(net, now);
    }

    /// Whether the source `net` (as [`source_net`] makes it) is proven, within [`PROVEN_FOR`].
    pub fn contains(&self, net: &IpNet) -> bool {
        let s = self.sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.get(net).is_some_and(|t| t.elapsed() < PROVEN_FOR)
    }

    /// How many sources are noted.
    pub fn len(&self) -> usize {
        self.sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The To tags of callguard's `403`s: [`CALLGUARD_TAG_PREFIX`], then 16 hex digits of
/// SHA-256(secret ‖ hour ‖ address as 16 bytes ‖ Call-ID length ‖ Call-ID). The secret is drawn
/// at start (a restart forgets what it proved, nothing else); the hour (Unix time / 3600) makes
/// a tag good for one to two hours, so whoever once held an address cannot keep it proven by
/// replaying an old ACK. Deterministic within the hour, so a retransmitted request gets the
/// same tag.
#[derive(Debug)]
pub struct ProofTags {
    secret: [u8; 32],
}

/// Seconds a tag's hour lasts.
const TAG_EPOCH_SECS: u64 = 3600;

impl ProofTags {
    /// Tags under a fresh secret.
    pub fn new() -> anyhow::Result<Self> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness for the 403 tags: {e}"))?;
        Ok(Self { secret })
    }

    fn epoch() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
            / TAG_EPOCH_SECS
    }

    fn tag_at(&self, epoch: u64, addr: IpAddr, call_id: &str) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(self.secret);
        h.update(epoch.to_be_bytes());
        // One length for both families (IPv4 as ::ffff:a.b.c.d), and the Call-ID's length: no
        // two (address, Call-ID) pairs hash the same bytes.
        let addr = match addr {
            IpAddr::V4(a) => a.to_ipv6_mapped(),
            IpAddr::V6(a) => a,
        };
        h.update(addr.octets());
        h.update((call_id.len() as u64).to_be_bytes());
        h.update(call_id.as_bytes());
        let digest = h.finalize();
        let mut out = String::from_utf8_lossy(CALLGUARD_TAG_PREFIX).into_owned();
        for b in &digest[..8] {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// The tag for a response to `addr` in the call `call_id`, now.
    pub fn tag(&self, addr: IpAddr, call_id: &str) -> String {
        self.tag_at(Self::epoch(), addr, call_id)
    }

    /// Whether `tag` is the one made for `addr` and `call_id` this hour or the last (compared
    /// in constant time).
    pub fn made(&self, tag: &str, addr: IpAddr, call_id: &str) -> bool {
        let now = Self::epoch();
        [now, now.saturating_sub(1)]
            .into_iter()
            .any(|e| crate::accounts::same_secret(&self.tag_at(e, addr, call_id), tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_bound_to_its_address_and_call() {
        let t = ProofTags::new().unwrap();
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let tag = t.tag(a, "call-1");
        assert!(tag.starts_with("cg-") && tag.len() == 3 + 16, "{tag}");
        assert_eq!(tag, t.tag(a, "call-1"), "a retransmission gets the same tag");
        assert!(t.made(&tag, a, "call-1"));
        assert!(!t.made(&tag, "192.0.2.8".parse().unwrap(), "call-1"), "another address");
        assert!(!t.made(&tag, a, "call-2"), "another call");
        assert!(!ProofTags::new().unwrap().made(&tag, a, "call-1"), "another daemon's secret");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(t.tag(mapped, "call-1"), tag, "IPv4 is hashed as its mapped IPv6 address");
        let old = t.tag_at(ProofTags::epoch() - 2, a, "call-1");
        assert!(!t.made(&old, a, "call-1"), "a tag two hours old proves nothing");
        let last_hour = t.tag_at(ProofTags::epoch() - 1, a, "call-1");
        assert!(t.made(&last_hour, a, "call-1"), "a tag from the hour before still does");
    }

    #[test]
    fn proofs_are_kept_per_source_network_and_bounded() {
        let p = Proven::default();
        p.note("2001:db8::1".parse().unwrap());
        assert!(p.contains(&source_net("2001:db8::ffff".parse().unwrap())), "the same /64");
        assert!(!p.contains(&source_net("2001:db8:0:1::1".parse().unwrap())));
        for i in 0..PROVEN_MAX as u32 + 10 {
            p.note(IpAddr::V4(i.into()));
        }
        assert!(p.len() <= PROVEN_MAX && p.len() > PROVEN_MAX * 7 / 8, "{}", p.len());
        assert!(p.contains(&source_net(IpAddr::V4((PROVEN_MAX as u32 + 9).into()))), "the newest stays");
    }
}
