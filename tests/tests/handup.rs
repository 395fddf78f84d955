//! The kernel's half of the slow path, through BPF_PROG_TEST_RUN: which requests are handed up
//! (whole, into the ring buffer), and what the failure policy does when the daemon's heartbeat
//! is stale, its queue is full, or a request cannot be handed up whole.

use callguard::{
    clock::boot_ns,
    config::PassDrop,
    kernel::datapath::Datapath as _,
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
    let (mut ring, mut heartbeat) = k.kernel.take_handup().expect("the hand-up maps");
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
    let (_ring, mut heartbeat) = k.kernel.take_handup().expect("the hand-up maps");
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
