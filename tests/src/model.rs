//! A userspace model of the XDP program's verdict, written from the decision table in the README
//! rather than from the kernel code: it takes a frame's description ([`Frame`]), not its bytes.
//! The differential test runs the kernel on the bytes and compares.
//!
//! What the model shares with the kernel: the SIP line parser ([`callguard_common::sip`], the
//! same source compiled for the host) and the compiled signature automata, walked in userspace.
//! What it does not: frame parsing (it never parses the frame), the network decision (it uses the
//! rule model, [`net::decide`], not the kernel's hash and LPM maps with their expiry fallback),
//! ports, policies, the bounded copy of the payload and the `bpf_loop` chunking. As an extra
//! check independent of the automata, User-Agent signatures are also matched with plain string
//! search ([`Model::ua_by_text`]). Per-source state is out of its scope: it models a kernel with
//! no rate limits and no bans (rows 8a and 15–17 of the table), as the differential test loads it.

use callguard::{
    config::{Config, PassDrop},
    net::{self, NetAction, NetRule, Scope},
    sig::{Compiled, SigField, SigMatch, SigMode, Signature},
};
use callguard_common::{
    Action, Reason,
    sig::{MODE_DRY_RUN, MODE_ENFORCE, field},
    sip::{self, FIELD_MAX, Kind as SipKind, Scratch},
};
use chrono::{DateTime, Utc};

use crate::frame::{Frame, TCP, UDP};

/// The rules, signatures and configuration a verdict depends on.
#[derive(Debug)]
pub struct Model<'a> {
    /// Policies, ports, methods.
    pub cfg: &'a Config,
    /// Network rules.
    pub rules: &'a [NetRule],
    /// Signatures as stored.
    pub sigs: &'a [Signature],
    /// The same signatures compiled (the automata the kernel walks).
    pub compiled: &'a Compiled,
    /// The time rules are judged at.
    pub now: DateTime<Utc>,
}

impl Model<'_> {
    /// The verdict and reason of the README's decision table for a well-formed frame.
    pub fn verdict(&self, f: &Frame) -> (Action, Reason) {
        let policy = |drop: bool, r: Reason| (if drop { Action::Drop } else { Action::Pass }, r);
        let net = net::decide(self.rules, f.src, self.now);
        if let Some(r) = net
            && r.action == NetAction::Deny
            && r.scope == Scope::All
        {
            return (Action::Drop, Reason::Denied);
        }
        // Six extension headers are walked, and one round more that reads what follows the last:
        // the transport protocol, or a fragment header (the builder appends it to the chain),
        // which for a later fragment ends the walk as well.
        let later = matches!(f.frag, Some((off, _)) if off > 0);
        let headers = f.ipv6_ext.len() + usize::from(f.src.is_ipv6() && f.frag.is_some());
        if f.src.is_ipv6() && headers > 6 && !(later && f.ipv6_ext.len() <= 6) {
            return match net.map(|r| r.action) {
                Some(NetAction::Allow) => (Action::Pass, Reason::Allowed),
                _ => policy(self.cfg.policy.ipv6_long_chains == PassDrop::Drop, Reason::HeaderChainTooLong),
            };
        }
        if matches!(f.frag, Some((off, _)) if off > 0) {
            return policy(self.cfg.policy.fragments == PassDrop::Drop, Reason::Fragment);
        }
        let ports = match f.proto {
            UDP => &self.cfg.ports.udp,
            TCP => &self.cfg.ports.tcp,
            _ => return (Action::Pass, Reason::Unguarded),
        };
        if !ports.iter().any(|p| (p.first..=p.last).contains(&f.dport)) {
            return (Action::Pass, Reason::Unguarded);
        }
        match net.map(|r| r.action) {
            Some(NetAction::Allow) => (Action::Pass, Reason::Allowed),
            Some(NetAction::Deny) => (Action::Drop, Reason::Denied),
            None if f.proto == UDP => self.inspect(&f.payload, f.frag == Some((0, true))),
            None => (Action::Pass, Reason::Clean),
        }
    }

    /// SIP inspection of a UDP payload from a source in neither list (rate limits off);
    /// `first_fragment`: the payload is the start of a fragmented datagram.
    fn inspect(&self, payload: &[u8], first_fragment: bool) -> (Action, Reason) {
        let not_sip = if self.cfg.sip.not_sip == PassDrop::Drop { Action::Drop } else { Action::Pass };
        let fragmented = first_fragment && self.cfg.sip.fragmented == PassDrop::Drop;
        if payload.is_empty() {
            return (not_sip, Reason::NotSip);
        }
        let (scratch, n) = Scratch::new(payload);
        let info = sip::parse(&scratch, n);
        match info.kind {
            SipKind::NotSip | SipKind::Keepalive if fragmented => return (Action::Drop, Reason::Fragmented),
            SipKind::NotSip => return (not_sip, Reason::NotSip),
            SipKind::Keepalive => return (Action::Pass, Reason::Keepalive),
            SipKind::Request | SipKind::Response => {}
        }
        let text = |s: sip::Span| &scratch.buf[usize::from(s.off)..usize::from(s.off) + usize::from(s.len)];
        let ua = text(info.user_agent);
        let modes = [
            self.compiled.walk(field::USER_AGENT, ua).mode,
            self.compiled.walk(field::FROM, text(info.from)).mode,
            self.compiled.walk(field::TO, text(info.to)).mode,
        ];
        let by_text = self.ua_by_text(ua);
        assert_eq!(
            modes[0],
            by_text,
            "the automaton and plain string search disagree on User-Agent {:?}",
            String::from_utf8_lossy(ua)
        );
        if modes.contains(&MODE_ENFORCE) {
            return (Action::Drop, Reason::Signature);
        }
        if info.kind == SipKind::Request && fragmented {
            return (Action::Drop, Reason::Fragmented);
        }
        if info.kind == SipKind::Request && info.headers & sip::header::DUPLICATE != 0 {
            return (Action::Drop, Reason::DuplicateHeader);
        }
        if info.kind == SipKind::Request && info.headers & sip::header::AMBIGUOUS != 0 {
            return (Action::Drop, Reason::AmbiguousHeader);
        }
        if info.kind == SipKind::Request && self.cfg.kernel_config().method_drop & (1 << info.method) != 0 {
            return (Action::Drop, Reason::Method);
        }
        if modes.contains(&MODE_DRY_RUN) {
            return (Action::Pass, Reason::Signature);
        }
        (Action::Pass, Reason::Clean)
    }

    /// The User-Agent signatures' verdict by case-insensitive string search over the first
    /// `FIELD_MAX` bytes: enforce beats dry-run.
    pub fn ua_by_text(&self, ua: &[u8]) -> u8 {
        let ua = ua[..ua.len().min(FIELD_MAX)].to_ascii_lowercase();
        let mut mode = 0;
        for s in self.sigs.iter().filter(|s| s.sig.field == SigField::UserAgent) {
            let t = s.sig.text.to_ascii_lowercase();
            let t = t.as_bytes();
            let hit = match s.sig.matches {
                SigMatch::Prefix => ua.starts_with(t),
                SigMatch::Contains => ua.windows(t.len()).any(|w| w == t),
            };
            if hit {
                match s.sig.mode {
                    SigMode::Enforce => return MODE_ENFORCE,
                    SigMode::DryRun => mode = MODE_DRY_RUN,
                }
            }
        }
        mode
    }
}
