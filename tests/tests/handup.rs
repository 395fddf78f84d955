//! The kernel's half of the slow path, through BPF_PROG_TEST_RUN: which requests are handed up
//! (whole, into the ring buffer), and what the failure policy does when the daemon's heartbeat
//! is stale, its queue is full, or a request cannot be handed up whole.

use callguard::{
    clock::boot_ns,
    config::PassDrop,
    kernel::datapath::{Datapath as _, HandUpMaps},
    net::{NetAction, Scope},
};
use callguard_common::{
    Action, KernelConfig, Reason,
    config::{FLAG_FAIL_CLOSED, FLAG_HANDUP_INVITE, FLAG_HANDUP_REGISTER, FLAG_QUEUE_FULL_OPEN},
    handup::{FRAME_MAX, HEARTBEAT_TIMEOUT_NS, HandUp},
};
use callguard_tests::{TestKernel, frame::Frame, rule};

const CALLER: &str = "198.18.0.7";

fn request(method: &str, to_tag: &str) -> Vec<u8> {
    format!(
        "{method} sip:004930123@198.18.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.18.0.7:5060;branch=z9hG4bK1\r\n\
         From: <sip:101@tenant.example>;tag=a\r\n\
         To: <sip:004930123@198.18.0.1>{to_tag}\r\n\
         Call-ID: 1@198.18.0.7\r\n\
         CSeq: 1 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn frame(src: &str, payload: &[u8]) -> Vec<u8> {
    Frame::udp(src, 5060).payload(payload).build()
}

fn set_flags(k: &mut TestKernel, flags: u16) {
    let base = TestKernel::quiet().kernel_config();
    k.kernel.set_config(KernelConfig { flags: base.flags | flags, ..base }).unwrap();
}

#[test]
fn requests_are_handed_up_whole_only_while_asked_and_the_daemon_beats() {
    let mut k = TestKernel::new();
    let HandUpMaps { common: mut ring, mut heartbeat, .. } =
        k.kernel.take_handup().expect("the hand-up maps");
    let invite = frame(CALLER, &request("INVITE", ""));

    // Not asked: nothing is handed up.
    assert_eq!(k.run(&invite), Action::Pass);
    k.assert_counters(&[(Action::Pass, Reason::Clean, 1)]);

    // Asked, but no heartbeat yet: fail-open passes it.
    set_flags(&mut k, FLAG_HANDUP_INVITE);
    assert_eq!(k.run(&invite), Action::Pass);
    assert_eq!(k.counter(Action::Pass, Reason::DaemonGone).packets, 1);

    // A fresh heartbeat: the frame is taken from the stack and appears whole in the ring.
    heartbeat.set(0, boot_ns(), 0).unwrap();
    assert_eq!(k.run(&invite), Action::Drop);
    assert_eq!(k.counter(Action::HandUp, Reason::HandedUp).packets, 1);
    let item = ring.next().expect("a handed-up record");
    assert_eq!(item.len(), size_of::<HandUp>());
    // SAFETY: the kernel wrote a HandUp of exactly this size.
    let rec = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<HandUp>()) };
    drop(item);
    assert_eq!(rec.bytes(), invite.as_slice());

    // In-dialog INVITEs (a To tag), other methods and REGISTER (not asked) stay on the fast path.
    for (what, payload) in [
        ("re-INVITE", request("INVITE", ";tag=b")),
        ("re-INVITE, odd spacing", request("INVITE", " ; TAG = b")),
        ("OPTIONS", request("OPTIONS", "")),
        ("REGISTER", request("REGISTER", "")),
    ] {
        assert_eq!(k.run(&frame(CALLER, &payload)), Action::Pass, "{what}");
    }
    assert_eq!(k.counter(Action::Pass, Reason::Clean).packets, 5);
    assert!(ring.next().is_none(), "nothing else was handed up");

    // A tag inside the URI or the display name is not a To tag.
    for to in ["<sip:004930123@198.18.0.1;tag=x>", "\"a;tag=x\" <sip:004930123@198.18.0.1>"] {
        let p = String::from_utf8(request("INVITE", "")).unwrap().replace("<sip:004930123@198.18.0.1>", to);
        assert_eq!(k.run(&frame(CALLER, p.as_bytes())), Action::Drop, "{to}");
        assert!(ring.next().is_some(), "{to} handed up");
    }

    // An ACK to one of the daemon's 403s (its To tag begins `cg-`) is the daemon's: handed up,
    // so the daemon can absorb it and take it as proof that its sender receives at its address.
    // Any other ACK, and an ACK without a tag, goes to the PBX as before.
    let ack = frame(CALLER, &request("ACK", ";tag=cg-0123456789abcdef"));
    assert_eq!(k.run(&ack), Action::Drop);
    assert_eq!(ring.next().expect("the ACK handed up").len(), size_of::<HandUp>());
    for (what, to_tag) in
        [("PBX's tag", ";tag=b"), ("no tag", ""), ("bare prefix", ";tag=cg-"), ("in the URI", "x;tag=cg-1")]
    {
        let p = String::from_utf8(request("ACK", to_tag)).unwrap().replace(">x;tag=cg-1", ";tag=cg-1>");
        assert_eq!(k.run(&frame(CALLER, p.as_bytes())), Action::Pass, "{what}");
    }
    assert!(ring.next().is_none(), "only the ACK to a 403 was handed up");

    // REGISTER once asked.
    set_flags(&mut k, FLAG_HANDUP_INVITE | FLAG_HANDUP_REGISTER);
    assert_eq!(k.run(&frame(CALLER, &request("REGISTER", ""))), Action::Drop);
    assert!(ring.next().is_some());
    assert_eq!(k.counter(Action::HandUp, Reason::HandedUp).packets, 5);

    // Authorized sources are never handed up.
    k.set_rules(&[rule(1, "198.18.0.0/24", NetAction::Allow, Scope::Sip)]);
    assert_eq!(k.run(&invite), Action::Pass);
    assert_eq!(k.counter(Action::Pass, Reason::Allowed).packets, 1);
    k.set_rules(&[]);

    // H2: a request that cannot be handed up whole (a first fragment, with `sip.fragmented =
    // "pass"`, these flags having it clear; or a frame longer than a record, jumbo frames) is
    // dropped, whatever the failure policy: the sender chose it, and its numbers would go
    // unchecked. Fail-open is for the daemon's absence only.
    let fragment = Frame::udp(CALLER, 5060).payload(&request("INVITE", "")).fragment(0, true).build();
    assert_eq!(k.run(&fragment), Action::Drop);
    assert_eq!(
        k.counter(Action::Drop, Reason::Fragmented).packets,
        1,
        "by default, as any fragmented request"
    );
    let mut cfg = TestKernel::quiet();
    cfg.sip.fragmented = PassDrop::Pass;
    let base = cfg.kernel_config();
    k.kernel.set_config(KernelConfig { flags: base.flags | FLAG_HANDUP_INVITE, ..base }).unwrap();
    assert_eq!(k.run(&fragment), Action::Drop);
    let mut long = request("INVITE", "");
    long.truncate(long.len() - 2);
    long.extend_from_slice(format!("X-Pad: {}\r\n\r\n", "p".repeat(FRAME_MAX)).as_bytes());
    assert_eq!(k.run(&frame(CALLER, &long)), Action::Drop);
    assert_eq!(k.counter(Action::Drop, Reason::Oversize).packets, 2);
    assert_eq!(k.counter(Action::Pass, Reason::Oversize).packets, 0);

    // Fail-closed with a stale heartbeat: dropped.
    set_flags(&mut k, FLAG_HANDUP_INVITE | FLAG_FAIL_CLOSED);
    heartbeat.set(0, boot_ns() - HEARTBEAT_TIMEOUT_NS - 100_000_000, 0).unwrap();
    assert_eq!(k.run(&invite), Action::Drop);
    assert_eq!(k.counter(Action::Drop, Reason::DaemonGone).packets, 1);
    assert!(ring.next().is_none());
}

/// M13. A full queue is something a sender can cause (a flood of INVITEs from spoofed sources),
/// so by default it drops, whatever the failure policy for an absent daemon says: the flood
/// delays calls instead of letting every call through unchecked. `calls.queue_full = "open"`
/// passes them.
#[test]
fn a_full_queue_drops_even_when_the_daemon_failure_policy_is_open() {
    let mut k = TestKernel::new();
    let HandUpMaps { mut heartbeat, .. } = k.kernel.take_handup().expect("the hand-up maps");
    // Fail-open for an absent daemon (the default), the queue policy left at its default.
    set_flags(&mut k, FLAG_HANDUP_INVITE);
    let invite = frame(CALLER, &request("INVITE", ""));
    // Nobody reads the ring: it fills, then the queue policy drops.
    let mut sent = 0;
    while k.counter(Action::Drop, Reason::QueueFull).packets == 0 {
        heartbeat.set(0, boot_ns(), 0).unwrap();
        assert_eq!(k.run(&invite), Action::Drop);
        sent += 1;
        assert!(sent < 5000, "the ring never filled");
    }
    let queued = k.counter(Action::HandUp, Reason::HandedUp).packets;
    println!("ring full after {queued} requests");
    assert_eq!(queued + 1, sent);
    assert!(queued > 1000, "room for about 2,000 requests: {queued}");
    assert_eq!(k.counter(Action::Pass, Reason::QueueFull).packets, 0, "nothing passed unchecked");
    // Asked for, a full queue passes.
    set_flags(&mut k, FLAG_HANDUP_INVITE | FLAG_QUEUE_FULL_OPEN);
    heartbeat.set(0, boot_ns(), 0).unwrap();
    assert_eq!(k.run(&invite), Action::Pass);
    assert_eq!(k.counter(Action::Pass, Reason::QueueFull).packets, 1);
}

/// What the PBX at 198.18.0.1 sends from its SIP port 5060 to `to`, port 5090.
fn answer(to: &str, status: &str, cseq: &str) -> Vec<u8> {
    let payload = format!(
        "SIP/2.0 {status}\r\nVia: SIP/2.0/UDP {to}:5090;branch=z9hG4bK7;received={to}\r\n\
         From: <sip:101@tenant.example>;tag=a\r\nTo: <sip:101@tenant.example>;tag=p\r\n\
         Call-ID: reg-1@{to}\r\nCSeq: {cseq}\r\nContact: <sip:101@{to}:5090>;expires=600\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let to_addr = to.parse().expect("address");
    Frame { dst: to_addr, sport: 5060, dport: 5090, ..Frame::udp("198.18.0.1", 5090) }
        .payload(payload.as_bytes())
        .build()
}

/// M13. A flood from spoofed sources can fill the common queue, but not the registered
/// sources' own: a source the PBX accepted a registration from (its `200` to a REGISTER, read
/// by the egress program as it leaves) is still handed up and checked while every other source
/// meets the full queue. Nothing but such an answer makes a source registered.
#[test]
fn a_flood_that_fills_the_queue_leaves_registered_sources_their_own() {
    const PHONE: &str = "198.18.0.9";
    let mut k = TestKernel::new();
    let HandUpMaps { common: _common, mut registered, mut heartbeat } =
        k.kernel.take_handup().expect("the hand-up maps");
    set_flags(&mut k, FLAG_HANDUP_INVITE);
    let registered_now = |k: &TestKernel| k.kernel.answers().unwrap().registered;

    // Answers that prove nothing: a challenge, a 200 to an INVITE or an OPTIONS, a 200 from a
    // port that is not guarded, a request the PBX sends.
    for (what, frame) in [
        ("401", answer(PHONE, "401 Unauthorized", "1 REGISTER")),
        ("200 to INVITE", answer(PHONE, "200 OK", "1 INVITE")),
        ("200 to OPTIONS", answer(PHONE, "200 OK", "1 OPTIONS")),
        ("from port 5070", {
            let mut f = answer(PHONE, "200 OK", "2 REGISTER");
            // The UDP source port, after Ethernet (14) and IPv4 (20) headers.
            f[34..36].copy_from_slice(&5070u16.to_be_bytes());
            f
        }),
        ("a request", Frame { sport: 5060, ..Frame::udp("198.18.0.1", 5090) }.build()),
    ] {
        assert_eq!(k.run_egress(&frame), 0, "{what}: the host's packets are never held back");
        assert_eq!(registered_now(&k), 0, "{what} registered a source");
    }
    // The PBX accepts the phone's registration.
    assert_eq!(k.run_egress(&answer(PHONE, "200 OK", "2 REGISTER")), 0);
    assert_eq!(registered_now(&k), 1);
    let seen = k.kernel.answers().unwrap().counts;
    assert_eq!(seen, [4, 1], "responses read, registrations");

    // Spoofed sources, each new, fill the common queue that nobody reads.
    heartbeat.set(0, boot_ns(), 0).unwrap();
    let mut sent = 0u32;
    while k.counter(Action::Drop, Reason::QueueFull).packets == 0 {
        let src = format!("10.{}.{}.{}", sent >> 16 & 255, sent >> 8 & 255, sent & 255);
        assert_eq!(k.run(&frame(&src, &request("INVITE", ""))), Action::Drop);
        sent += 1;
        assert!(sent < 5000, "the queue never filled");
    }
    let flood = k.counter(Action::HandUp, Reason::HandedUp).packets;

    // The phone's INVITE is handed up whole, through its own queue; another caller's is not.
    heartbeat.set(0, boot_ns(), 0).unwrap();
    let invite = frame(PHONE, &request("INVITE", ""));
    assert_eq!(k.run(&invite), Action::Drop);
    assert_eq!(k.counter(Action::HandUp, Reason::HandedUp).packets, flood + 1);
    let item = registered.next().expect("the phone's request in its queue");
    // SAFETY: the kernel wrote a HandUp of exactly this size.
    let rec = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<HandUp>()) };
    drop(item);
    assert_eq!(rec.bytes(), invite.as_slice());
    assert_eq!(k.run(&frame("198.18.0.10", &request("INVITE", ""))), Action::Drop);
    assert_eq!(k.counter(Action::Drop, Reason::QueueFull).packets, 2);
    assert!(registered.next().is_none(), "only the registered source uses the reserve");
}

/// Issue 17, item 3: a source in an allow rule with a call profile has its INVITEs handed up
/// whatever their form (an in-dialog one too, which the daemon passes on), and everything that
/// begins as another request or a response passes as `allowed`: neither signatures nor rate
/// limits nor the method policy apply. An INVITE written oddly (lower case, CRLF first) is
/// handed up as well, for the daemon's parser to read: it cannot slip past the checks. A
/// trusted allow rule hands nothing up.
#[test]
fn a_profiled_allow_rule_hands_up_its_invites_only() {
    let mut k = TestKernel::new();
    let HandUpMaps { common: mut ring, mut heartbeat, .. } =
        k.kernel.take_handup().expect("the hand-up maps");
    set_flags(&mut k, FLAG_HANDUP_INVITE);
    heartbeat.set(0, boot_ns(), 0).unwrap();
    let mut phones = rule(1, "198.18.0.0/24", NetAction::Allow, Scope::Sip);
    phones.profile = callguard::net::Profile::Phones;
    k.set_rules(&[phones.clone()]);
    k.set_signatures(&callguard_tests::default_signatures());
    let invite = String::from_utf8(request("INVITE", "")).unwrap();
    let scanner = invite.replace("Content-Length", "User-Agent: friendly-scanner\r\nContent-Length");
    for (what, payload) in [
        ("INVITE", invite.clone()),
        ("re-INVITE", String::from_utf8(request("INVITE", ";tag=b")).unwrap()),
        ("lower-case invite", invite.replacen("INVITE", "invite", 1)),
        ("CRLF first", format!("\r\n{invite}")),
        ("a scanner's User-Agent", scanner),
    ] {
        assert_eq!(k.run(&frame(CALLER, payload.as_bytes())), Action::Drop, "{what}: handed up");
        assert!(ring.next().is_some(), "{what} in the ring");
    }
    for (what, payload) in [
        ("REGISTER", request("REGISTER", "")),
        ("ACK", request("ACK", ";tag=b")),
        ("BYE", request("BYE", ";tag=b")),
        ("unknown method", request("FOO", "")),
        ("keepalive", b"\r\n\r\n".to_vec()),
    ] {
        let want = if what == "unknown method" { Action::Drop } else { Action::Pass };
        assert_eq!(k.run(&frame(CALLER, &payload)), want, "{what}");
    }
    assert!(ring.next().is_some(), "the unknown method went to the daemon's parser");
    assert!(ring.next().is_none());
    assert_eq!(k.counter(Action::Pass, Reason::Allowed).packets, 4);
    assert_eq!(k.counter(Action::Drop, Reason::Method).packets, 0, "the method policy does not apply");
    assert_eq!(k.counter(Action::Drop, Reason::Signature).packets, 0);

    // Trusted (the default): nothing handed up.
    phones.profile = callguard::net::Profile::Trusted;
    k.set_rules(&[phones]);
    assert_eq!(k.run(&frame(CALLER, invite.as_bytes())), Action::Pass);
    assert!(ring.next().is_none());
}
