//! The slow path: reads the requests the kernel hands up ([`callguard_common::handup`]), decides
//! each with the [`policy::CallPolicy`] in force, and carries the verdict out:
//!
//! - `allow`: the IP packet is sent again, unchanged (or with the authorization code removed),
//!   through a raw socket to its own destination, so the PBX receives it from the caller's
//!   address and port;
//! - `deny`: a `403 Forbidden` goes back to the caller from the address and port it called;
//! - `drop`: nothing.
//!
//! An ACK to one of those `403`s (the kernel hands up those whose To tag looks like callguard's)
//! is absorbed; when its tag is the one made for its source ([`ProofTags`]), the source is
//! noted as [`Proven`]: it receives what is sent to its address.
//!
//! The same task beats the heartbeat the kernel checks, so a stuck or dead slow path is noticed
//! by the kernel within a second and the failure policy takes over. Retransmissions of a request
//! get the first verdict again without a second evaluation.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use callguard_common::{
    answer::CALLGUARD_MARK,
    handup::{HEARTBEAT_EVERY_MS, HandUp},
};
use chrono::Utc;
use etherparse::{IpHeaders, Ipv4Header, Ipv6Header, NetSlice, SlicedPacket, TransportSlice, UdpHeader};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use crate::{
    calls::{
        fraud::FraudGuard,
        message::{self, Message},
        policy::{self, Decision, Facts, Step, Verdict},
        proven::{ProofTags, Proven},
    },
    events::{EventKind, EventRecord, Hub},
    kernel::datapath::HandUpMaps,
    throttle::{self, Throttle},
};

/// Most requests remembered for retransmission matching.
const REMEMBERED_MAX: usize = 65_536;

/// Counters of the slow path, by verdict and deciding step.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlowStats {
    /// Requests decided, by `verdict/step` (`allow/default`, `deny/blacklist`, …).
    pub decisions: BTreeMap<String, u64>,
    /// Retransmissions answered with an earlier verdict.
    pub retransmissions: u64,
    /// Frames that were not UDP over IP (never expected from the kernel).
    pub malformed_frames: u64,
    /// Verdicts that could not be carried out (a send failed).
    pub send_errors: u64,
    /// Requests addressed to none of this host's addresses: dropped undecided. Sending them on
    /// would make callguard a relay for spoofed packets, past `ip_forward` and the firewall.
    #[serde(default)]
    pub not_local: u64,
    /// Denials left unanswered because the `403` would be longer than the request (compact
    /// headers written out): a spoofed source must not get more bytes than were sent.
    #[serde(default)]
    pub unanswered: u64,
    /// Calls with an authorization code refused unchecked: their source (or caller) dialed too
    /// many wrong codes (`calls.authcode_failures`).
    #[serde(default)]
    pub authcode_lockouts: u64,
    /// Calls refused because they would cross a fraud threshold (`calls.fraud`).
    #[serde(default)]
    pub fraud_refusals: u64,
    /// ACKs to callguard's `403`s whose tag was the one made for their source: proofs that the
    /// source receives at its address (escalation counts only such sources).
    #[serde(default)]
    pub proofs: u64,
    /// ACKs whose To tag looked like callguard's but was not made for their source and call
    /// (a PBX's own tag that happens to begin `cg-`, a forgery, a tag from before a restart or
    /// from more than two hours ago): passed on to the PBX, nothing proven.
    #[serde(default)]
    pub false_proofs: u64,
    /// Requests that came through the registered sources' queue (sources the PBX accepted a
    /// registration from), which a flood from other sources cannot fill.
    #[serde(default)]
    pub registered: u64,
}

/// How long handed-up requests took, from the kernel's hand-up to the verdict carried out
/// (queueing and deciding), in seconds: the metrics' `callguard_slow_path_latency_seconds`.
/// Buckets from 50 µs to 1.2 s; a call's setup notices tens of milliseconds.
#[derive(Clone, Debug)]
pub struct Latency(pub prometheus_client::metrics::histogram::Histogram);

impl Default for Latency {
    fn default() -> Self {
        Self(prometheus_client::metrics::histogram::Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(50e-6, 2.5, 12),
        ))
    }
}

/// This host's addresses: only a request addressed to one of them is decided and sent on.
#[derive(Debug, Default)]
struct LocalAddrs {
    addrs: std::collections::HashSet<IpAddr>,
    read: Option<Instant>,
}

impl LocalAddrs {
    /// How often a miss may read the addresses again: addresses come and go (DHCP, failover),
    /// and a flood of frames to foreign addresses must not turn into a flood of system calls.
    const REREAD: Duration = Duration::from_secs(1);

    /// Whether `ip` is an address of this host (in this network namespace).
    fn contains(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.addrs.contains(&ip) {
            return true;
        }
        if self.read.is_some_and(|t| now.duration_since(t) < Self::REREAD) {
            return false;
        }
        self.read = Some(now);
        match if_addrs::get_if_addrs() {
            Ok(list) => self.addrs = list.iter().map(if_addrs::Interface::ip).collect(),
            Err(e) => tracing::warn!("reading this host's addresses: {e}"),
        }
        self.addrs.contains(&ip)
    }
}

/// What one request led to.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// Whether it repeated an earlier decision (a retransmission).
    pub retransmission: bool,
}

/// The UDP datagram of a handed-up frame.
#[derive(Clone, Debug)]
struct Datagram<'a> {
    ip: IpHeaders,
    src: SocketAddr,
    dst: SocketAddr,
    payload: &'a [u8],
}

fn datagram(frame: &[u8]) -> Option<Datagram<'_>> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(TransportSlice::Udp(udp)) = p.transport else { return None };
    let (ip, src, dst): (IpHeaders, IpAddr, IpAddr) = match p.net? {
        NetSlice::Ipv4(v4) => {
            let h = v4.header().to_header();
            let (s, d) = (h.source.into(), h.destination.into());
            (IpHeaders::Ipv4(h, v4.extensions().to_header()), s, d)
        }
        NetSlice::Ipv6(v6) => {
            let h = v6.header().to_header();
            let (s, d) = (h.source.into(), h.destination.into());
            let (ext, _, _) =
                etherparse::Ipv6Extensions::from_slice(h.next_header, v6.extensions().slice()).ok()?;
            (IpHeaders::Ipv6(h, ext), s, d)
        }
        NetSlice::Arp(_) => return None,
    };
    Some(Datagram {
        ip,
        src: SocketAddr::new(src, udp.source_port()),
        dst: SocketAddr::new(dst, udp.destination_port()),
        payload: udp.payload(),
    })
}

/// An IP packet carrying `payload` in UDP from `src` to `dst`, with checksums; `like` gives the
/// IP header fields to keep (TTL or hop limit, traffic class). Never the sender's IPv4 options or
/// IPv6 extension headers: a source route or a router alert has no business in what callguard
/// sends.
fn udp_packet(like: &IpHeaders, src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(payload.len() + 68);
    let udp_len = payload.len() + UdpHeader::LEN;
    match (like, src.ip(), dst.ip()) {
        (IpHeaders::Ipv4(h, _), IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut ip = Ipv4Header {
                source: s.octets(),
                destination: d.octets(),
                options: etherparse::Ipv4Options::default(),
                ..h.clone()
            };
            ip.set_payload_len(udp_len).ok()?;
            ip.fragment_offset = Default::default();
            ip.more_fragments = false;
            ip.header_checksum = ip.calc_header_checksum();
            let udp = UdpHeader::with_ipv4_checksum(src.port(), dst.port(), &ip, payload).ok()?;
            ip.write(&mut out).ok()?;
            udp.write(&mut out).ok()?;
        }
        (IpHeaders::Ipv6(h, _), IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut ip = Ipv6Header { source: s.octets(), destination: d.octets(), ..h.clone() };
            ip.next_header = etherparse::IpNumber::UDP;
            ip.set_payload_length(udp_len).ok()?;
            let udp = UdpHeader::with_ipv6_checksum(src.port(), dst.port(), &ip, payload).ok()?;
            ip.write(&mut out).ok()?;
            udp.write(&mut out).ok()?;
        }
        _ => return None,
    }
    out.extend_from_slice(payload);
    Some(out)
}

/// The `403 Forbidden` for a request (RFC 3261 §8.2.6): its Via fields in order, From, To with
/// `tag` added, Call-ID and CSeq, no body.
pub fn forbidden(m: &Message<'_>, tag: &str) -> Vec<u8> {
    let mut out = b"SIP/2.0 403 Forbidden\r\n".to_vec();
    for name in ["via", "from", "to", "call-id", "cseq"] {
        for h in m.all(name) {
            out.extend_from_slice(name_of(name).as_bytes());
            out.extend_from_slice(b": ");
            if name == "to" && message::NameAddr::parse(&h.value).map_or(true, |n| n.tag().is_none()) {
                // An empty `;tag=` is no tag: it gives way to ours rather than stand beside it.
                out.extend_from_slice(message::without_tag(&h.value).as_bytes());
                out.extend_from_slice(b";tag=");
                out.extend_from_slice(tag.as_bytes());
            } else {
                out.extend_from_slice(h.value.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"Server: callguard\r\nContent-Length: 0\r\n\r\n");
    out
}

fn name_of(lower: &str) -> &'static str {
    match lower {
        "via" => "Via",
        "from" => "From",
        "to" => "To",
        "call-id" => "Call-ID",
        _ => "CSeq",
    }
}

/// Where a response to `m` goes (RFC 3261 §18.2.2 with RFC 3581): the source address; the source
/// port when the top Via asks for `rport`, else the Via's sent-by port (5060 when absent).
fn reply_to(m: &Message<'_>, src: SocketAddr) -> SocketAddr {
    match m.top_via() {
        Ok(v) if !v.rport => SocketAddr::new(src.ip(), v.port.unwrap_or(5060)),
        _ => src,
    }
}

/// `payload` with the Request-URI user (and the To URI user, when it is the same) changed from
/// `old` to `new`.
fn redial(m: &Message<'_>, old: &str, new: &str) -> Vec<u8> {
    let raw = m.raw;
    let mut out = Vec::with_capacity(raw.len());
    let replace_first = |out: &mut Vec<u8>, part: &[u8]| {
        let text = String::from_utf8_lossy(part);
        // The user as written may be percent-encoded differently from `old`; replace the first
        // occurrence after the scheme's colon.
        match text.find(&format!(":{old}@")) {
            Some(i) => {
                out.extend_from_slice(&part[..=i]);
                out.extend_from_slice(new.as_bytes());
                out.extend_from_slice(&part[i + 1 + old.len()..]);
            }
            None => out.extend_from_slice(part),
        }
    };
    replace_first(&mut out, &raw[m.start_span.clone()]);
    let mut pos = m.start_span.end;
    for h in &m.headers {
        out.extend_from_slice(&raw[pos..h.span.start]);
        if h.name == "to" {
            replace_first(&mut out, &raw[h.span.clone()]);
        } else {
            out.extend_from_slice(&raw[h.span.clone()]);
        }
        pos = h.span.end;
    }
    out.extend_from_slice(&raw[pos..]);
    out
}

/// Raw sockets for re-injection and replies (one per address family; `IPPROTO_RAW` implies
/// that the packet carries its own IP header).
#[derive(Debug)]
struct Injector {
    v4: Socket,
    v6: Option<Socket>,
}

impl Injector {
    fn new() -> anyhow::Result<Self> {
        let raw = || Protocol::from(libc::IPPROTO_RAW);
        let v4 = Socket::new(Domain::IPV4, Type::RAW, Some(raw()))?;
        let v6 = Socket::new(Domain::IPV6, Type::RAW, Some(raw()))
            .map_err(|e| tracing::warn!("no IPv6 raw socket ({e}); IPv6 hand-ups cannot be carried out"))
            .ok();
        // The egress program reads the PBX's answers for failed authentications; callguard's own
        // 403s carry this mark so that they are not taken for the PBX's.
        for sock in std::iter::once(&v4).chain(v6.as_ref()) {
            if let Err(e) = sock.set_mark(CALLGUARD_MARK) {
                tracing::warn!("marking the slow path's packets (SO_MARK, needs CAP_NET_ADMIN): {e}");
            }
        }
        Ok(Self { v4, v6 })
    }

    /// Sends an IP packet (header included) towards `dst`.
    fn send(&self, packet: &[u8], dst: IpAddr) -> std::io::Result<()> {
        let sock = match dst {
            IpAddr::V4(_) => &self.v4,
            IpAddr::V6(_) => self.v6.as_ref().ok_or_else(|| std::io::Error::other("no IPv6 raw socket"))?,
        };
        sock.send_to(packet, &SockAddr::from(SocketAddr::new(dst, 0))).map(|_| ())
    }
}

/// A request as its retransmissions repeat it: the same bytes (RFC 3261 §17.1.1.2 retransmits
/// the request unchanged) between the same addresses and ports. Anything less would let a
/// different request that shares the transaction's identifiers (Call-ID, CSeq, branch), sent
/// to another port or dialing another number, inherit an earlier "allow".
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TxKey {
    src: SocketAddr,
    dst: SocketAddr,
    digest: [u8; 32],
}

impl TxKey {
    /// The key of a handed-up datagram.
    fn of(d: &Datagram<'_>) -> Self {
        use sha2::Digest as _;
        Self { src: d.src, dst: d.dst, digest: sha2::Sha256::digest(d.payload).into() }
    }
}

/// The decision on a request the daemon cannot read.
fn unreadable(e: &message::ParseError) -> Decision {
    Decision {
        verdict: Verdict::Drop,
        step: Step::Unreadable,
        rule: "-".into(),
        why: format!("not readable as a SIP request: {e}"),
        dial: None,
    }
}

/// The slow path's state.
#[derive(Debug)]
pub struct SlowPath {
    live: Arc<policy::Live>,
    hub: Arc<Hub>,
    inject: Injector,
    window: Duration,
    seen: HashMap<TxKey, (Instant, Decision)>,
    order: VecDeque<(Instant, TxKey)>,
    stats: Arc<Mutex<SlowStats>>,
    local: LocalAddrs,
    /// Wrong authorization codes by source and by caller.
    codes: Throttle,
    /// The To tags of the 403s, and the sources that acknowledged one.
    tags: ProofTags,
    proven: Arc<Proven>,
    /// The fraud thresholds' counts.
    fraud: FraudGuard,
    /// Where the sources to ban for fraud go (`calls.fraud.ban_secs`): the daemon stores the bans.
    bans: Option<tokio::sync::mpsc::Sender<IpAddr>>,
    /// Each request's time from hand-up to verdict.
    latency: Latency,
}

impl SlowPath {
    /// A slow path deciding with `live`, publishing decisions to `hub`.
    pub fn new(
        live: Arc<policy::Live>,
        hub: Arc<Hub>,
        window: Duration,
        stats: Arc<Mutex<SlowStats>>,
        proven: Arc<Proven>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            live,
            hub,
            inject: Injector::new()?,
            window,
            seen: HashMap::new(),
            order: VecDeque::new(),
            stats,
            local: LocalAddrs::default(),
            codes: Throttle::default(),
            tags: ProofTags::new()?,
            proven,
            fraud: FraudGuard::default(),
            bans: None,
            latency: Latency::default(),
        })
    }

    /// Sends the sources of calls past a fraud threshold to `bans` (when `calls.fraud.ban_secs`
    /// asks for bans).
    #[must_use]
    pub fn banning_to(mut self, bans: tokio::sync::mpsc::Sender<IpAddr>) -> Self {
        self.bans = Some(bans);
        self
    }

    /// Observes each request's time from hand-up to verdict into `latency`.
    #[must_use]
    pub fn timed_by(mut self, latency: Latency) -> Self {
        self.latency = latency;
        self
    }

    fn count(&self, f: impl FnOnce(&mut SlowStats)) {
        f(&mut self.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    /// Decides one handed-up frame and carries the verdict out.
    pub fn handle(&mut self, frame: &[u8]) -> Option<Outcome> {
        let Some(d) = datagram(frame) else {
            self.count(|s| s.malformed_frames += 1);
            return None;
        };
        let now = Instant::now();
        if !self.local.contains(d.dst.ip(), now) {
            self.count(|s| s.not_local += 1);
            return None;
        }
        while let Some((t, _)) = self.order.front() {
            if now.duration_since(*t) < self.window && self.order.len() < REMEMBERED_MAX {
                break;
            }
            if let Some((_, k)) = self.order.pop_front() {
                self.seen.remove(&k);
            }
        }
        let parsed = message::parse(d.payload);
        if let Ok(m) = &parsed
            && m.method() == Some("ACK")
        {
            self.acknowledged(&d, m);
            return None;
        }
        let (outcome, msg) = match parsed {
            Err(e) => (Outcome { decision: unreadable(&e), retransmission: false }, None),
            Ok(m) => (self.decide(&m, TxKey::of(&d), d.src, now), Some(m)),
        };
        self.carry_out(&d, msg.as_ref(), &outcome);
        Some(outcome)
    }

    fn decide(&mut self, m: &Message<'_>, key: TxKey, src: SocketAddr, now: Instant) -> Outcome {
        if let Some((_, decision)) = self.seen.get(&key) {
            return Outcome { decision: decision.clone(), retransmission: true };
        }
        let decision = match Facts::read(m, src.ip()) {
            Ok(mut f) => {
                let policy = self.live.get();
                f.profile = policy.profile_of(src.ip(), Utc::now());
                let decision = policy.decide(&f, Utc::now());
                let decision = self.guard_codes(&policy, &f, decision);
                // The call: its Call-ID and From tag, the same in an INVITE re-sent with
                // credentials.
                let tag = m.from().ok().and_then(|n| n.tag().map(str::to_owned)).unwrap_or_default();
                let call = format!("{}\n{tag}", m.call_id().unwrap_or_default());
                self.guard_fraud(&policy, &f, &call, decision, now)
            }
            Err(e) => unreadable(&e),
        };
        self.seen.insert(key.clone(), (now, decision.clone()));
        self.order.push_back((now, key));
        Outcome { decision, retransmission: false }
    }

    /// Counts the authorization codes dialed (review finding M11): a source, or a caller from a
    /// source it never dialed a right code from, with `calls.authcode_failures` wrong codes in
    /// the window has its calls with a code refused, right code or not, and the answer is the
    /// same 403 as for a wrong code. Only decisions made by the code step are concerned.
    fn guard_codes(&mut self, policy: &policy::CallPolicy, f: &Facts, decision: Decision) -> Decision {
        if decision.step != Step::AuthCode {
            return decision;
        }
        let (max, window) = policy.authcode_lockout();
        let source = throttle::source_key("code-source", f.source);
        let caller = format!(
            "code-caller:{}@{}",
            f.from_user.as_deref().unwrap_or_default().to_ascii_lowercase(),
            f.from_host.to_ascii_lowercase()
        );
        if let Err(wait) = self.codes.begin(&source, &caller, max, window) {
            self.count(|s| s.authcode_lockouts += 1);
            return Decision::authcode_locked(wait);
        }
        if decision.verdict == Verdict::Allow {
            self.codes.succeeded(&source, &caller);
        }
        decision
    }

    /// Counts an allowed call against the fraud thresholds, or refuses it when it would cross
    /// one; a source past a source threshold is banned when configured and proven to receive at
    /// its address (it acknowledged a 403 of callguard's: a spoofed source never does).
    fn guard_fraud(
        &mut self,
        policy: &policy::CallPolicy,
        f: &Facts,
        call: &str,
        decision: Decision,
        now: Instant,
    ) -> Decision {
        if !policy::CallPolicy::fraud_applies(f) {
            return decision;
        }
        let (cfg, intl) = policy.fraud();
        match self.fraud.check(cfg, intl, f, call, decision, now) {
            Ok(d) => d,
            Err(mut r) => {
                self.count(|s| s.fraud_refusals += 1);
                if let (Some(ip), Some(bans)) = (r.ban, &self.bans) {
                    if self.proven.contains(&crate::net::source_net(ip)) {
                        // A full queue loses the ban, not the call's answer.
                        let _ = bans.try_send(ip);
                    } else {
                        r.decision
                            .why
                            .push_str("; not banned: the source is not proven to receive at its address");
                    }
                }
                r.decision
            }
        }
    }

    /// An ACK the kernel handed up because its To tag looks like one of callguard's. When the
    /// tag is the one made for this source and call, it acknowledges a 403 of callguard's, which
    /// the PBX never saw: it is absorbed, and the source is proven to receive at its address.
    /// Anything else (a PBX may choose tags like ours; a forger may copy the prefix) goes on to
    /// the PBX unchanged, as the kernel would have sent it: a PBX ignores an ACK that matches no
    /// transaction of its own.
    fn acknowledged(&mut self, d: &Datagram<'_>, m: &Message<'_>) {
        let tag = m.to().ok().and_then(|t| t.tag().map(str::to_owned));
        if let (Some(tag), Ok(call_id)) = (&tag, m.call_id())
            && self.tags.made(tag, d.src.ip(), call_id)
        {
            self.proven.note(d.src.ip());
            self.count(|s| s.proofs += 1);
            return;
        }
        self.count(|s| s.false_proofs += 1);
        if let Some(Err(e)) =
            udp_packet(&d.ip, d.src, d.dst, d.payload).map(|p| self.inject.send(&p, d.dst.ip()))
        {
            tracing::error!(source = %d.src, "passing an ACK on: {e}");
            self.count(|s| s.send_errors += 1);
        }
    }

    fn carry_out(&mut self, d: &Datagram<'_>, m: Option<&Message<'_>>, o: &Outcome) {
        let dec = &o.decision;
        let sent = match (dec.verdict, m) {
            (Verdict::Allow, Some(m)) => {
                // Only a call placed with an authorization code is rewritten; its Request-URI was
                // read when it was decided.
                let old = dec.dial.as_ref().and_then(|_| message::Uri::parse(m.request_uri()?).ok()?.user);
                let payload = match (&dec.dial, old) {
                    (Some(new), Some(old)) => redial(m, &old, new),
                    _ => d.payload.to_vec(),
                };
                udp_packet(&d.ip, d.src, d.dst, &payload).map(|p| self.inject.send(&p, d.dst.ip()))
            }
            (Verdict::Deny, Some(m)) => {
                let to = reply_to(m, d.src);
                let tag = self.tags.tag(d.src.ip(), m.call_id().unwrap_or_default());
                let body = forbidden(m, &tag);
                if body.len() > d.payload.len() {
                    self.count(|s| s.unanswered += 1);
                    None
                } else {
                    udp_packet(&d.ip, d.dst, to, &body).map(|p| self.inject.send(&p, to.ip()))
                }
            }
            _ => None,
        };
        if let Some(Err(e)) = &sent {
            tracing::error!(source = %d.src, "carrying out `{}`: {e}", dec.verdict.as_str());
        }
        let failed = matches!(sent, Some(Err(_)));
        self.count(|s| {
            if o.retransmission {
                s.retransmissions += 1;
            } else {
                *s.decisions.entry(format!("{}/{}", dec.verdict.as_str(), dec.step.as_str())).or_default() +=
                    1;
            }
            if failed {
                s.send_errors += 1;
            }
        });
        if !o.retransmission {
            self.hub.publish(EventRecord {
                time: Utc::now(),
                kind: EventKind::Call,
                source: d.src.ip(),
                reason: format!("{}/{}", dec.verdict.as_str(), dec.step.as_str()),
                method: m.and_then(Message::method).unwrap_or("unknown").into(),
                rule: None,
                signature: None,
                user_agent: m.and_then(Message::user_agent).unwrap_or_default().chars().take(32).collect(),
                detail: format!("{}: {}", dec.rule, dec.why),
                user: String::new(),
            });
        }
    }
}

/// The slow path on a thread of its own (see [`spawn`]).
#[derive(Debug)]
pub struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    ended: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Running {
    /// Resolves when the slow path's thread ends, however it ends (its ring failed, it
    /// panicked, or it was stopped); taken once. While it is gone the kernel applies the failure
    /// policy to every call, so the daemon must not go on as if nothing happened.
    pub fn ended(&mut self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.ended.take()
    }

    /// Stops the slow path and waits for its thread. The heartbeat stops with it.
    pub fn stop(mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts [`run`] on its own thread with its own single-threaded runtime. Nothing else the daemon
/// does (SQLite writes, password hashing, a large import holding the state lock) runs there, so
/// none of it can delay a call waiting for its verdict.
pub fn spawn(slow: SlowPath, maps: HandUpMaps) -> std::io::Result<Running> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // Dropped when the thread ends, by return or by panic: what `Running::ended` waits for.
    let (end, ended) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new().name("callguard-slow".into()).spawn(move || {
        let _end = end;
        runtime.block_on(async move {
            tokio::select! {
                () = run(slow, maps) => {}
                _ = stopped => {}
            }
        });
    })?;
    Ok(Running { stop: Some(stop), thread: Some(thread), ended: Some(ended) })
}

/// Most records decided from one queue before the other queue and the heartbeat get their turn:
/// a flood that keeps a queue full starves neither the other queue nor the heartbeat (a stale
/// heartbeat would hand every call to the failure policy).
const BATCH: usize = 64;

/// Decides up to [`BATCH`] records of `ring`; `true` when it may hold more.
fn decide_batch(slow: &mut SlowPath, ring: &mut RingBuf<MapData>, registered: bool) -> bool {
    for _ in 0..BATCH {
        let Some(item) = ring.next() else { return false };
        if item.len() != size_of::<HandUp>() {
            continue;
        }
        // SAFETY: the kernel wrote a HandUp (repr(C), integers and bytes) of this size.
        let rec = unsafe { &*item.as_ptr().cast::<HandUp>() };
        if registered {
            slow.count(|s| s.registered += 1);
        }
        slow.handle(rec.bytes());
        // Both CLOCK_BOOTTIME; a record from before a clock oddity counts as instant.
        let waited = crate::clock::boot_ns().saturating_sub(rec.ts_ns);
        slow.latency.0.observe(waited as f64 / 1e9);
    }
    true
}

/// Runs the slow path until the daemon stops: beats the heartbeat and decides what the queues
/// hold, the registered sources' queue first. All of it happens in this one task, so a slow path
/// that stops deciding also stops beating.
pub async fn run(mut slow: SlowPath, maps: HandUpMaps) {
    let HandUpMaps { common, registered, mut heartbeat } = maps;
    let watch = |ring: RingBuf<MapData>| {
        // SAFETY: the ring buffer owns its map fd, which stays open and the same for as long as
        // the RingBuf lives, and the AsyncFd owns the RingBuf.
        unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| e.to_string())
    };
    let (mut common, mut registered) = match (watch(common), watch(registered)) {
        (Ok(c), Ok(r)) => (c, r),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("watching the hand-up ring buffers: {e}; the failure policy applies");
            return;
        }
    };
    let mut beat = tokio::time::interval(Duration::from_millis(HEARTBEAT_EVERY_MS));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = beat.tick() => {
                if let Err(e) = heartbeat.set(0, crate::clock::boot_ns(), 0) {
                    tracing::error!("writing the heartbeat: {e}");
                }
            }
            guard = registered.readable_mut() => {
                let mut guard = match guard {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::error!("reading the hand-up ring buffer: {e}; the failure policy applies");
                        return;
                    }
                };
                if !decide_batch(&mut slow, guard.get_inner_mut(), true) {
                    guard.clear_ready();
                }
            }
            guard = common.readable_mut() => {
                let mut guard = match guard {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::error!("reading the hand-up ring buffer: {e}; the failure policy applies");
                        return;
                    }
                };
                // A registered source's request waits for at most one batch of the others.
                decide_batch(&mut slow, registered.get_mut(), true);
                if !decide_batch(&mut slow, guard.get_inner_mut(), false) {
                    guard.clear_ready();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:*4711*0086123@pbx.example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK1\r\n\
        Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK0\r\n\
        From: <sip:101@tenant.example.com>;tag=abc\r\n\
        To: <sip:*4711*0086123@pbx.example.com>\r\n\
        Call-ID: c1@host\r\n\
        CSeq: 1 INVITE\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn forbidden_copies_the_transaction_and_tags_to() {
        let m = message::parse(INVITE.as_bytes()).unwrap();
        let r = String::from_utf8(forbidden(&m, "t1")).unwrap();
        let want = "SIP/2.0 403 Forbidden\r\n\
            Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK1\r\n\
            Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK0\r\n\
            From: <sip:101@tenant.example.com>;tag=abc\r\n\
            To: <sip:*4711*0086123@pbx.example.com>;tag=t1\r\n\
            Call-ID: c1@host\r\n\
            CSeq: 1 INVITE\r\n\
            Server: callguard\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(r, want);
        let reply = message::parse(r.as_bytes()).unwrap();
        assert_eq!(reply.to().unwrap().tag(), Some("t1"));
        assert_eq!(reply_to(&m, "192.0.2.10:40000".parse().unwrap()), "192.0.2.10:5062".parse().unwrap());
    }

    #[test]
    fn redial_removes_the_code_from_the_request_uri_and_to() {
        let m = message::parse(INVITE.as_bytes()).unwrap();
        let out = String::from_utf8(redial(&m, "*4711*0086123", "0086123")).unwrap();
        assert_eq!(out, INVITE.replace("*4711*0086123", "0086123"));
    }

    #[test]
    fn rebuilt_packets_carry_valid_checksums_and_no_options() {
        let mut h = Ipv4Header::new(0, 64, etherparse::IpNumber::UDP, [0; 4], [0; 4]).unwrap();
        // A loose source route (type 131), as an attacker would put in a request.
        h.options = [131u8, 7, 4, 192, 0, 2, 99, 0].as_slice().try_into().unwrap();
        let like = IpHeaders::Ipv4(h, Default::default());
        let p = udp_packet(
            &like,
            "192.0.2.10:5062".parse().unwrap(),
            "198.51.100.1:5060".parse().unwrap(),
            b"hello",
        )
        .unwrap();
        let s = SlicedPacket::from_ip(&p).unwrap();
        let Some(NetSlice::Ipv4(v4)) = s.net else { panic!() };
        assert_eq!(v4.header().header_checksum(), v4.header().to_header().calc_header_checksum());
        assert!(v4.header().options().is_empty(), "the sender's IPv4 options are not copied");
        let Some(TransportSlice::Udp(u)) = s.transport else { panic!() };
        let h = u.to_header();
        assert_eq!(h.checksum, h.calc_checksum_ipv4(&v4.header().to_header(), b"hello").unwrap());
        assert_eq!(u.payload(), b"hello");
    }

    /// Only this host's addresses are local; a miss does not reread them more than once a second.
    #[test]
    fn only_this_hosts_addresses_are_local() {
        let mut local = LocalAddrs::default();
        let now = Instant::now();
        assert!(local.contains("127.0.0.1".parse().unwrap(), now));
        assert!(!local.contains("203.0.113.77".parse().unwrap(), now));
        let read = local.read;
        assert!(!local.contains("203.0.113.78".parse().unwrap(), now + Duration::from_millis(10)));
        assert_eq!(local.read, read, "no second read within a second");
        assert!(!local.contains("203.0.113.78".parse().unwrap(), now + Duration::from_secs(2)));
        assert_ne!(local.read, read, "read again after a second");
    }

    /// A retransmission is the same bytes between the same addresses and ports; a request that
    /// only shares the transaction's identifiers (a replayed Call-ID, CSeq and branch) is not.
    #[test]
    fn only_the_same_bytes_between_the_same_ports_are_a_retransmission() {
        let ip = IpHeaders::Ipv4(
            Ipv4Header::new(0, 64, etherparse::IpNumber::UDP, [0; 4], [0; 4]).unwrap(),
            Default::default(),
        );
        let (src, dst) = ("192.0.2.10:5062".parse().unwrap(), "198.51.100.1:5060".parse().unwrap());
        let barred = INVITE.replace("*4711*0086123", "+882777");
        let key = |payload: &str, dst: SocketAddr| {
            TxKey::of(&Datagram { ip: ip.clone(), src, dst, payload: payload.as_bytes() })
        };
        assert_eq!(key(INVITE, dst), key(INVITE, dst));
        assert_ne!(key(INVITE, dst), key(&barred, dst), "another number dialed in the same transaction");
        assert_ne!(key(INVITE, dst), key(INVITE, "198.51.100.1:5061".parse().unwrap()), "another port");
    }
}
