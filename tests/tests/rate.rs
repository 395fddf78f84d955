//! Per-source rate limits, kernel bans, enumeration detection and drop events: the real XDP
//! program through BPF_PROG_TEST_RUN, with the kernel's own clock.

use std::time::{Duration, Instant};

use callguard::{
    config::{Bucket, Config},
    kernel::{datapath::Datapath as _, tables},
    net::{NetAction, Scope},
};
use callguard_common::{
    Action, Reason,
    events::{Event, event},
};
use callguard_tests::{
    TestKernel, default_signatures,
    frame::Frame,
    rule,
    sipmsg::{self, SvTool},
};

const SIP: u16 = 5060;
const OFF: Bucket = Bucket { rate: 0, burst: 1 };

fn sip_frame(src: &str, payload: &[u8]) -> Vec<u8> {
    Frame::udp(src, SIP).payload(payload).build()
}

/// Limits for tests: everything off except what the test sets.
fn quiet() -> Config {
    let mut cfg = Config::default();
    cfg.rate.requests = OFF;
    cfg.rate.register = OFF;
    cfg.rate.invite = OFF;
    cfg.rate.ban_after_secs = 0;
    cfg.enumeration.users = 0;
    cfg.events.sample = 0;
    cfg.sip.signature_ban = false;
    cfg
}

fn register(ext: &str) -> Vec<u8> {
    sipmsg::sipvicious(SvTool::Svcrack, "REGISTER", ext, "198.18.0.1", true)
}

fn invite(ext: &str) -> Vec<u8> {
    sipmsg::sipvicious(SvTool::Svwar, "INVITE", ext, "198.18.0.1", true)
}

fn events(k: &mut TestKernel) -> Vec<Event> {
    let mut rb = k.kernel.take_events().expect("ring buffer");
    let mut out = Vec::new();
    while let Some(item) = rb.next() {
        assert_eq!(item.len(), size_of::<Event>());
        // SAFETY: the kernel wrote an Event (repr(C), integers only) of exactly this size.
        out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
    }
    out
}

/// An IPv4 address whose source cache slot is `a`'s in `k` (as an attacker who knew the
/// cache's hash key would pick one).
fn slot_mate(k: &TestKernel, a: [u8; 4]) -> [u8; 4] {
    use callguard_common::limits::{cache_key, cache_slot, source_key_v4};
    let seed = k.kernel.source_cache_seed().expect("the cache's hash key");
    let slot = |a: [u8; 4]| cache_slot(cache_key(&source_key_v4(a)), seed);
    let target = slot(a);
    (0..=u32::from(u16::MAX))
        .flat_map(|i| {
            let [_, _, c, d] = i.to_be_bytes();
            [[198, 19, c, d], [203, 0, c, d]]
        })
        .find(|m| slot(*m) == target)
        .expect("two IPv4 sources in one slot")
}

/// An IPv4 address as text.
fn dotted(a: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(a).to_string()
}

#[test]
fn register_and_invite_buckets_per_source_ipv4_address_and_ipv6_64() {
    let mut cfg = quiet();
    cfg.rate.register = Bucket { rate: 1, burst: 5 };
    cfg.rate.invite = Bucket { rate: 1, burst: 2 };
    let mut k = TestKernel::with_config(&cfg);
    let verdicts: Vec<Action> = (0..8).map(|_| k.run(&sip_frame("198.18.0.66", &register("100")))).collect();
    assert_eq!(verdicts, [[Action::Pass; 5].as_slice(), &[Action::Drop; 3]].concat());
    // INVITE has its own bucket; another address its own too.
    assert_eq!(k.run(&sip_frame("198.18.0.66", &invite("100"))), Action::Pass);
    assert_eq!(k.run(&sip_frame("198.18.0.67", &register("100"))), Action::Pass);
    // IPv6: one bucket per /64.
    for a in ["2001:db8:1:2::1", "2001:db8:1:2::2"] {
        assert_eq!(k.run(&sip_frame(a, &invite("1"))), Action::Pass, "{a}");
    }
    assert_eq!(k.run(&sip_frame("2001:db8:1:2::ffff", &invite("1"))), Action::Drop, "same /64");
    assert_eq!(k.run(&sip_frame("2001:db8:1:3::1", &invite("1"))), Action::Pass, "another /64");
    assert_eq!(k.counter(Action::Drop, Reason::Rate).packets, 4);
}

#[test]
fn the_all_requests_bucket_counts_every_method() {
    let mut cfg = quiet();
    cfg.rate.requests = Bucket { rate: 1, burst: 3 };
    let mut k = TestKernel::with_config(&cfg);
    let options = sipmsg::sipvicious(SvTool::Svwar, "OPTIONS", "1", "198.18.0.1", true);
    let v: Vec<Action> = [register("1"), invite("1"), options.clone(), options]
        .iter()
        .map(|m| k.run(&sip_frame("198.18.0.66", m)))
        .collect();
    assert_eq!(v, [Action::Pass, Action::Pass, Action::Pass, Action::Drop]);
    // Responses are not requests: not limited.
    for r in sipmsg::responses() {
        assert_eq!(k.run(&sip_frame("198.18.0.66", &r)), Action::Pass);
    }
}

#[test]
fn a_source_that_keeps_exceeding_is_banned_by_the_kernel_and_reported() {
    let mut cfg = quiet();
    cfg.rate.register = Bucket { rate: 1, burst: 2 };
    cfg.rate.ban_after_secs = 1;
    cfg.rate.ban_secs = 60;
    let mut k = TestKernel::with_config(&cfg);
    let t0 = Instant::now();
    let mut banned_at = None;
    while t0.elapsed() < Duration::from_secs(3) {
        let _ = k.run(&sip_frame("198.18.0.66", &register("100")));
        if k.counter(Action::Drop, Reason::Banned).packets > 0 {
            banned_at = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let banned_at = banned_at.expect("banned within 3 s");
    assert!(banned_at >= Duration::from_millis(900), "banned after {banned_at:?}, before 1 s of exceeding");
    // Now everything SIP from it is dropped, whatever the method; others are unaffected.
    let phone = &sipmsg::phones()[0].1;
    assert_eq!(k.run(&sip_frame("198.18.0.66", phone)), Action::Drop);
    assert_eq!(k.run(&sip_frame("198.18.0.67", phone)), Action::Pass);
    let ev = events(&mut k);
    let bans: Vec<&Event> = ev.iter().filter(|e| e.kind == event::BAN_RATE).collect();
    assert_eq!(bans.len(), 1, "{ev:?}");
    assert_eq!(bans[0].addr().to_string(), "198.18.0.66");
    // Forgetting the source (what deleting its automatic ban does) lifts the kernel's ban.
    k.kernel.forget_source(&callguard_common::limits::source_key_v4([198, 18, 0, 66])).unwrap();
    assert_eq!(k.run(&sip_frame("198.18.0.66", phone)), Action::Pass);
}

#[test]
fn enumeration_is_banned_after_k_distinct_to_values() {
    let mut cfg = quiet();
    cfg.enumeration.users = 10;
    cfg.enumeration.window_secs = 60;
    cfg.rate.ban_secs = 60;
    let mut k = TestKernel::with_config(&cfg);
    // The same To over and over (a phone re-registering) is one value.
    for _ in 0..50 {
        assert_eq!(k.run(&sip_frame("198.18.0.20", &register("201"))), Action::Pass);
    }
    // svwar -c: one extension after another.
    let mut passed = 0;
    for ext in 1000..1100 {
        if k.run(&sip_frame("198.18.0.66", &register(&ext.to_string()))) == Action::Pass {
            passed += 1;
        } else {
            break;
        }
    }
    // More than 10 distinct values get through before the ban (a few more when two values
    // share a sketch bit), never fewer.
    assert!((10..=14).contains(&passed), "{passed} passed");
    let after = k.run(&sip_frame("198.18.0.66", &register("201")));
    assert_eq!(after, Action::Drop);
    let ev = events(&mut k);
    assert_eq!(ev.iter().filter(|e| e.kind == event::BAN_ENUM).count(), 1);
    assert_eq!(k.counter(Action::Drop, Reason::Banned).packets, 2);
}

#[test]
fn authorized_sources_are_never_limited_or_banned() {
    let mut cfg = quiet();
    cfg.rate.requests = Bucket { rate: 1, burst: 1 };
    cfg.enumeration.users = 2;
    let mut k = TestKernel::with_config(&cfg);
    k.set_rules(&[rule(1, "198.18.0.64/29", NetAction::Allow, Scope::Sip)]);
    for ext in 0..30 {
        assert_eq!(k.run(&sip_frame("198.18.0.66", &register(&ext.to_string()))), Action::Pass);
    }
    assert_eq!(k.counter(Action::Pass, Reason::Allowed).packets, 30);
}

#[test]
fn sampled_drop_events_name_the_reason_signature_and_user_agent() {
    let mut cfg = quiet();
    cfg.events.sample = 2;
    let mut k = TestKernel::with_config(&cfg);
    k.set_signatures(&default_signatures());
    let svmap = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", "198.18.0.1", false);
    for _ in 0..10 {
        assert_eq!(k.run(&sip_frame("2001:db8:66::9", &svmap)), Action::Drop);
    }
    let ev = events(&mut k);
    assert_eq!(ev.len(), 5, "one in two drops");
    let e = ev[0];
    assert_eq!((e.kind, e.reason), (event::DROP, Reason::Signature as u8));
    assert_eq!(e.addr().to_string(), "2001:db8:66::");
    assert_eq!(&e.ua[..usize::from(e.ua_len)], b"friendly-scanner");
    assert_eq!(e.sig_slot, 1);
    assert_eq!(e.method, callguard_common::sip::method::OPTIONS);
}

#[test]
fn an_enforcing_signature_bans_its_source_once_and_dry_run_never_does() {
    let mut cfg = quiet();
    cfg.sip.signature_ban = true;
    cfg.rate.ban_secs = 60;
    let mut k = TestKernel::with_config(&cfg);
    let mut sigs = default_signatures();
    let sipsak = sigs.iter().find(|s| s.sig.text == "sipsak").expect("sipsak ships as dry-run").clone();
    assert_eq!(sipsak.sig.mode, callguard::sig::SigMode::DryRun);
    sigs.retain(|s| s.id != sipsak.id);
    sigs.push(sipsak);
    k.set_signatures(&sigs);
    let svmap = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", "198.18.0.1", false);
    // svwar -c after it: no User-Agent, no "sipvicious" anywhere; passes a fresh source.
    let svwar_c = sipmsg::sipvicious(SvTool::Svwar, "REGISTER", "100", "198.18.0.1", true);
    assert_eq!(k.run(&sip_frame("198.18.0.77", &svwar_c)), Action::Pass);
    // The first is read and matches; the kernel's ban drops the next ones unread.
    for _ in 0..3 {
        assert_eq!(k.run(&sip_frame("198.18.0.66", &svmap)), Action::Drop);
    }
    // The scanner's next tool is dropped whatever it sends; its neighbour is not affected.
    assert_eq!(k.run(&sip_frame("198.18.0.66", &svwar_c)), Action::Drop);
    assert_eq!(k.run(&sip_frame("198.18.0.77", &svwar_c)), Action::Pass);
    // A dry-run match is counted, never banned.
    let sipsak_msg = String::from_utf8(sipmsg::phones()[0].1.clone())
        .unwrap()
        .replacen("User-Agent: ", "User-Agent: sipsak 0.9.8 ", 1)
        .into_bytes();
    for _ in 0..3 {
        assert_eq!(k.run(&sip_frame("198.18.0.88", &sipsak_msg)), Action::Pass);
    }
    assert_eq!(k.run(&sip_frame("198.18.0.88", &svwar_c)), Action::Pass);
    k.assert_counters(&[
        (Action::Drop, Reason::Signature, 1),
        (Action::Drop, Reason::Banned, 3),
        (Action::Pass, Reason::Signature, 3),
        (Action::Pass, Reason::Clean, 3),
    ]);
    // One ban event for three matching requests, naming the signature.
    let ev = events(&mut k);
    let bans: Vec<&Event> = ev.iter().filter(|e| e.kind != event::DROP).collect();
    assert_eq!(bans.len(), 1, "{ev:?}");
    assert_eq!((bans[0].kind, bans[0].addr().to_string()), (event::BAN_SIGNATURE, "198.18.0.66".into()));
    assert_eq!(bans[0].sig_slot, sigs[0].slot, "friendly-scanner is the first default signature");
}

/// A flood from spoofed sources, every packet a new one carrying a scanner's signature: each
/// packet is a drop and a ban, so without a bound each would be an event and work for the
/// daemon. The event budget writes at most its rate (per CPU) and counts the rest; the kernel's
/// bans hold all the same, and a rate ban (sustained traffic from one source) is still written.
#[test]
fn a_spoofed_signature_flood_is_reported_within_the_event_budget() {
    const PER_SEC: u32 = 20;
    const SOURCES: u32 = 600;
    let mut cfg = quiet();
    cfg.events.sample = 1;
    cfg.events.per_sec = PER_SEC;
    cfg.sip.signature_ban = true;
    let mut k = TestKernel::with_config(&cfg);
    k.set_signatures(&default_signatures());
    let svmap = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", "198.18.0.1", false);
    let source = |i: u32| format!("198.18.{}.{}", 100 + i / 250, 1 + i % 250);
    let t0 = Instant::now();
    for i in 0..SOURCES {
        assert_eq!(k.run(&sip_frame(&source(i), &svmap)), Action::Drop);
    }
    let secs = t0.elapsed().as_secs_f64();
    // Banned without a state each (no insert into the sources' table for a source that may
    // never send again), and counted as banned all the same.
    let pins = k.kernel.pin_dir().to_path_buf();
    let tables = || tables::read(&pins, callguard::clock::boot_ns()).expect("the tables");
    let sources =
        |t: &tables::Tables| t.tables.iter().find(|t| t.map == "CG_SOURCES").expect("CG_SOURCES").entries;
    let t = tables();
    assert_eq!((sources(&t), t.banned), (0, u64::from(SOURCES)), "states and kernel bans after the flood");
    // Every source is banned by the kernel, reported or not: its next request, of any kind, is
    // dropped as banned, and has its ban written into a state.
    let phone = &sipmsg::phones()[0].1;
    for i in 0..SOURCES {
        assert_eq!(k.run(&sip_frame(&source(i), phone)), Action::Drop, "{}", source(i));
    }
    let t = tables();
    assert_eq!(
        (sources(&t), t.banned),
        (u64::from(SOURCES), u64::from(SOURCES)),
        "after a second packet each"
    );
    assert_eq!(k.counter(Action::Drop, Reason::Banned).packets, u64::from(SOURCES));
    let ev = events(&mut k);
    let budget = k.kernel.event_budget().expect("the event budget");
    // Offered: a drop sample and a ban for each first packet, a drop sample for each second.
    assert_eq!(budget.drops, u64::from(2 * SOURCES));
    assert_eq!(budget.written + budget.suppressed, u64::from(3 * SOURCES), "{budget:?}");
    assert_eq!(budget.written, ev.len() as u64, "every written event is in the ring");
    // Per kind, the burst (a second's worth) and the rate over the run, on each CPU the test
    // ran on.
    let cpus = aya::util::nr_cpus().expect("CPUs") as f64;
    let bound = cpus * f64::from(PER_SEC) * (1.0 + secs) + 1.0;
    for (kind, name) in [(event::DROP, "drop samples"), (event::BAN_SIGNATURE, "signature bans")] {
        let n = ev.iter().filter(|e| e.kind == kind).count();
        assert!((n as f64) <= bound, "{n} {name} in {secs:.2} s, budget {bound:.0}");
        assert!(n >= PER_SEC as usize, "the burst of {name} is written: {n}");
    }

    // Junk cannot use up what a scanner's ban is reported from: the drop samples' bucket spent
    // on not-SIP garbage, a scanner's first packet still gets its ban written.
    let mut k = TestKernel::with_config(&cfg);
    k.set_signatures(&default_signatures());
    for i in 0..SOURCES {
        assert_eq!(k.run(&sip_frame(&source(i), b"\x00\x01 not SIP at all")), Action::Drop);
    }
    assert_eq!(k.run(&sip_frame("198.18.99.1", &svmap)), Action::Drop);
    let ev = events(&mut k);
    assert!(
        ev.iter().any(|e| e.kind == event::BAN_SIGNATURE && e.addr().to_string() == "198.18.99.1"),
        "the scanner's ban is written after {} junk drops: {} events",
        SOURCES,
        ev.len()
    );
    assert!(k.kernel.event_budget().expect("budget").suppressed > 0, "the junk's samples were budgeted");

    // A rate ban is not budgeted: with the budget spent, a source that keeps exceeding its
    // limit is still reported.
    let mut cfg = quiet();
    cfg.rate.register = Bucket { rate: 1, burst: 1 };
    cfg.rate.ban_after_secs = 1;
    cfg.events.sample = 1;
    cfg.events.per_sec = 1;
    let mut k = TestKernel::with_config(&cfg);
    let t0 = Instant::now();
    while k.counter(Action::Drop, Reason::Banned).packets == 0 && t0.elapsed() < Duration::from_secs(3) {
        for _ in 0..50 {
            let _ = k.run(&sip_frame("198.18.0.66", &register("100")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ev = events(&mut k);
    assert!(ev.iter().any(|e| e.kind == event::BAN_RATE), "the rate ban is reported: {ev:?}");
    assert!(k.kernel.event_budget().expect("budget").suppressed > 0, "the drop samples were budgeted");
}

/// A banned source's datagrams are dropped before they are read, whatever they hold — a
/// response, a keepalive, a request dressed as a phone's, bytes that are not SIP — as its stored
/// ban (a deny rule) will drop them; its neighbour is read as before, and an authorized source
/// is never banned.
#[test]
fn a_banned_source_is_dropped_unread_whatever_it_sends() {
    let mut cfg = quiet();
    cfg.sip.signature_ban = true;
    let mut k = TestKernel::with_config(&cfg);
    k.set_signatures(&default_signatures());
    k.set_rules(&[rule(1, "198.18.5.0/24", NetAction::Allow, Scope::Sip)]);
    let svmap = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", "198.18.0.1", false);
    for src in ["198.18.0.66", "198.18.5.5"] {
        let _ = k.run(&sip_frame(src, &svmap));
    }
    let phone = sipmsg::phones()[0].1.clone();
    let response = sipmsg::responses().remove(0);
    for (what, payload) in [
        ("phone INVITE", phone.clone()),
        ("response", response.clone()),
        ("keepalive", b"\r\n\r\n".to_vec()),
        ("not SIP", b"\x00\x01garbage".to_vec()),
    ] {
        assert_eq!(k.run(&sip_frame("198.18.0.66", &payload)), Action::Drop, "{what} from the banned source");
        assert_eq!(
            k.run(&sip_frame("198.18.0.67", &payload)) == Action::Drop,
            what == "not SIP",
            "{what} from its neighbour"
        );
        assert_eq!(
            k.run(&sip_frame("198.18.5.5", &payload)),
            Action::Pass,
            "{what} from an authorized source"
        );
    }
    assert_eq!(k.counter(Action::Drop, Reason::Banned).packets, 4);
    assert_eq!(
        k.counter(Action::Drop, Reason::Signature).packets,
        1,
        "the allow rule's scanner is not inspected"
    );
}

/// The kernel's bans are also kept in a direct-mapped cache (`CG_SOURCE_CACHE`, a slot per hash
/// of the source under a key drawn for each map), read before the sources' map. An attacker
/// who learnt the key could pick sources that share a slot (the test knows it). Once the banned source has sent again (its state then holds the ban), a
/// second ban there must not lift the first, lifting one must not lift the other, a ban lifted
/// while its slot still names it ends at once, and a source that only shares a slot with a
/// banned one is not banned (IPv4 and IPv6 alike). A scanner that sent one request holds its
/// ban in the slot alone: another ban taking the slot ends it, and its next request is read,
/// and banned again if it is a scanner's.
#[test]
fn sources_sharing_a_source_cache_slot_keep_their_bans_once_they_send_again() {
    use callguard_common::limits::{cache_key, cache_slot, source_key_v4, source_key_v6};
    let mut cfg = quiet();
    cfg.sip.signature_ban = true;
    cfg.rate.ban_secs = 60;
    let mut k = TestKernel::with_config(&cfg);
    k.set_signatures(&default_signatures());
    // The cache's hash key, drawn when the map is made: another map has another.
    let seed = k.kernel.source_cache_seed().expect("the key");
    assert_ne!(seed, [0; 2], "no hash key drawn");
    assert_ne!(TestKernel::with_config(&cfg).kernel.source_cache_seed().expect("the key"), seed);
    let first = [198, 18, 0, 66];
    let second = slot_mate(&k, first);
    let v6 = |s: &str| source_key_v6(s.parse::<std::net::Ipv6Addr>().expect("an address").octets());
    let banned6 = "2001:db8:1:2::1";
    // A /64 of another /48 in the same slot (within one /48 each slot holds one /64).
    let target = k.cache_slot_of(&v6(banned6));
    let other6 = (0..=u16::MAX)
        .flat_map(|y| [format!("2001:db8:0:{y:x}::1"), format!("2001:db8:2:{y:x}::1")])
        .find(|o| cache_slot(cache_key(&v6(o)), seed) == target)
        .expect("a /64 in the banned one's slot");
    let other6 = other6.as_str();
    assert_ne!(v6(banned6), v6(other6));
    let svmap = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", "198.18.0.1", false);
    let phone = sipmsg::phones()[0].1.clone();
    let (a, b) = (dotted(first), dotted(second));
    // An IPv6 scanner banned; the /64 that shares its slot is not.
    assert_eq!(k.run(&sip_frame(banned6, &svmap)), Action::Drop);
    assert_eq!(k.run(&sip_frame(banned6, &phone)), Action::Drop, "the banned /64");
    assert_eq!(k.run(&sip_frame(other6, &phone)), Action::Pass, "a /64 in the same slot");
    // A scanner's ban after one request: held by its slot alone, which the next ban in the slot
    // takes. Its next request is read: a phone's passes, a scanner's is banned again.
    assert_eq!(k.run(&sip_frame(&a, &svmap)), Action::Drop, "{a}'s scanner");
    assert!(k.kernel.source(&source_key_v4(first)).unwrap().is_none(), "{a}'s ban: the slot alone");
    assert_eq!(k.run(&sip_frame(&b, &svmap)), Action::Drop, "{b}'s scanner");
    assert_eq!(k.run(&sip_frame(&a, &phone)), Action::Pass, "{a}'s ban was its slot's");
    // Two IPv4 scanners banned, each sending again, the second in the first's slot: both stay
    // banned (the first packet a slot drops writes the ban into the source's state).
    for src in [&a, &b] {
        assert_eq!(k.run(&sip_frame(src, &svmap)), Action::Drop, "{src}'s scanner");
        assert_eq!(k.run(&sip_frame(src, &phone)), Action::Drop, "{src} is banned");
    }
    for src in [&a, &b] {
        assert_eq!(k.run(&sip_frame(src, &phone)), Action::Drop, "{src} is still banned");
    }
    // The slot names the second, and holds its ban when the LRU map evicts its state.
    assert_eq!(k.source_cache_slot(&source_key_v4(first)).key, cache_key(&source_key_v4(second)));
    assert!(k.evict_source(&source_key_v4(second)), "{b} had state");
    assert_eq!(k.run(&sip_frame(&b, &phone)), Action::Drop, "{b}'s ban outlives its state");
    // Lifting the first (its slot names the second) leaves the second banned.
    k.kernel.forget_source(&source_key_v4(first)).unwrap();
    assert_eq!(k.run(&sip_frame(&a, &phone)), Action::Pass, "{a}'s ban lifted");
    assert_eq!(k.run(&sip_frame(&b, &phone)), Action::Drop, "{b} is still banned");
    // Lifting the second, whose slot names it, ends its ban at once.
    k.kernel.forget_source(&source_key_v4(second)).unwrap();
    assert_eq!(k.run(&sip_frame(&b, &phone)), Action::Pass, "{b}'s ban lifted");
    k.kernel.forget_source(&v6(banned6)).unwrap();
    assert_eq!(k.run(&sip_frame(banned6, &phone)), Action::Pass, "{banned6}'s ban lifted");
    k.assert_counters(&[
        (Action::Drop, Reason::Signature, 5),
        (Action::Drop, Reason::Banned, 7),
        (Action::Pass, Reason::Clean, 5),
    ]);
}

/// A restarted daemon adopts the pinned source cache with its hash key: its program finds each
/// source in the slot the running one wrote, so a ban the cache alone holds (a scanner seen
/// once, maybe forged) outlives the restart, and the key an attacker would have to learn by
/// flooding is not drawn anew.
#[test]
fn a_restart_adopting_the_source_cache_keeps_its_key_and_its_bans() {
    use callguard_common::limits::source_key_v4;
    let mut cfg = quiet();
    cfg.sip.signature_ban = true;
    let mut before = TestKernel::with_config(&cfg);
    before.set_signatures(&default_signatures());
    let seed = before.kernel.source_cache_seed().expect("the key");
    let svmap = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", "198.18.0.1", false);
    let phone = sipmsg::phones()[0].1.clone();
    let scanner = [198, 18, 0, 77];
    assert_eq!(before.run(&sip_frame(&dotted(scanner), &svmap)), Action::Drop);
    assert!(before.kernel.source(&source_key_v4(scanner)).unwrap().is_none(), "the slot alone holds the ban");
    // The kernel half of a restart: the same build loaded again on the same pins.
    let mut after = TestKernel::in_dir(before.dir().to_owned(), &cfg);
    assert_eq!(after.kernel.source_cache_seed().expect("the key"), seed, "the key was drawn again");
    assert_eq!(
        after.run(&sip_frame(&dotted(scanner), &phone)),
        Action::Drop,
        "the ban ended with the restart"
    );
    assert_eq!(after.run(&sip_frame("198.18.0.78", &phone)), Action::Pass, "another source");
    after.assert_counters(&[
        (Action::Drop, Reason::Signature, 1),
        (Action::Drop, Reason::Banned, 1),
        (Action::Pass, Reason::Clean, 1),
    ]);
}

/// A source over its rate for all requests is noted in the source cache, so that its next
/// requests in the same jiffy are dropped without a lookup. The note names the source whole: a
/// source that shares its slot is not limited by it; and a live ban keeps its slot against
/// the notes of a source over its rate.
#[test]
fn a_rate_note_in_the_source_cache_limits_no_other_source_and_evicts_no_ban() {
    use callguard_common::limits::{cache_key, source_key_v4};
    let over = [198, 18, 0, 66];
    let mut cfg = quiet();
    cfg.rate.requests = Bucket { rate: 1, burst: 2 };
    cfg.rate.ban_after_secs = 60;
    cfg.sip.signature_ban = true;
    let mut k = TestKernel::with_config(&cfg);
    k.set_signatures(&default_signatures());
    let neighbour = slot_mate(&k, over);
    let register =
        sipmsg::phones().into_iter().find(|(who, _)| who.contains("REGISTER")).expect("a REGISTER").1;
    let svmap = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", "198.18.0.1", false);
    let (a, b) = (dotted(over), dotted(neighbour));
    // Two within the burst, one over it (read: the streak starts), one dropped unread.
    let verdicts: Vec<Action> = (0..4).map(|_| k.run(&sip_frame(&a, &register))).collect();
    assert_eq!(verdicts, [Action::Pass, Action::Pass, Action::Drop, Action::Drop]);
    let slot = k.source_cache_slot(&source_key_v4(over));
    assert_eq!((slot.key, slot.banned_until), (cache_key(&source_key_v4(over)), 0), "{a} noted");
    assert_ne!(slot.over_jiffy, 0, "{a} noted over its rate");
    // Its neighbour in the slot is not limited by the note.
    for _ in 0..2 {
        assert_eq!(k.run(&sip_frame(&b, &register)), Action::Pass, "{b} within its own burst");
    }
    assert_eq!(k.run(&sip_frame(&a, &register)), Action::Drop, "{a} still over its rate");
    // The neighbour's ban takes the slot, and keeps it against the over-rate source's notes.
    assert_eq!(k.run(&sip_frame(&b, &svmap)), Action::Drop, "{b}'s scanner");
    for _ in 0..3 {
        assert_eq!(k.run(&sip_frame(&a, &register)), Action::Drop, "{a} over its rate");
    }
    assert_eq!(k.source_cache_slot(&source_key_v4(over)).key, cache_key(&source_key_v4(neighbour)));
    assert_eq!(k.run(&sip_frame(&b, &register)), Action::Drop, "{b} banned");
    k.assert_counters(&[
        (Action::Pass, Reason::Clean, 4),
        (Action::Drop, Reason::Rate, 6),
        (Action::Drop, Reason::Signature, 1),
        (Action::Drop, Reason::Banned, 1),
    ]);
}

/// The kernel's `jiffies`, as `/proc/timer_list` gives it (reading it takes about 0.1 ms; a
/// jiffy is 1 to 10 ms).
fn jiffies() -> u64 {
    let list = std::fs::read_to_string("/proc/timer_list").expect("reading /proc/timer_list");
    let line = list.lines().find(|l| l.starts_with("jiffies:")).expect("a jiffies line");
    line["jiffies:".len()..].trim().parse().expect("jiffies, a number")
}

/// Runs `attempt` (with the attempt's number, from 0) until the kernel's jiffy is the same
/// before and after it, so that every packet it sent fell in the jiffy of the notes it made;
/// returns that attempt's result. At most 50 attempts.
fn in_one_jiffy<T>(mut attempt: impl FnMut(u8) -> T) -> T {
    for n in 0..50 {
        let before = jiffies();
        let out = attempt(n);
        if jiffies() == before {
            return out;
        }
    }
    panic!("no attempt of 50 fell within one jiffy");
}

/// A source that sends many requests without being over its rate for all of them (here: over
/// its INVITE rate only) has its state looked up once a request, not twice: its slot notes
/// that the state had nothing to decide before the read, and its next requests in that jiffy
/// leave that check to the judge, after the read, with the lookup the rate limits use. The
/// note moves the check, never lets by what the check would drop: forged in the state
/// behind the slot's back (as a ban is when another CPU's note takes the slot as the ban is
/// written), a ban still drops what the source sends, even a datagram the read finds is no SIP
/// (which this configuration passes), and the slot gets the ban back; a streak over the rate
/// for all requests still drops what the source sends, a request as over the rate without a
/// token from its method's bucket (a request may now be dropped for what the read finds
/// first, such as a scanner's signature). Each of those packets falls in the jiffy of the
/// note (checked), so the check after the read decides it; and so it does with nothing
/// counted at all. A ban found after the read is not written back to a slot the daemon
/// cleared to lift it.
#[test]
fn a_clear_note_moves_the_early_check_after_the_read_and_drops_the_same() {
    use callguard::config::PassDrop;
    use callguard_common::limits::{BUCKET_ALL, BUCKET_REGISTER, cache_key, source_key_v4};
    let a = [198, 18, 0, 71];
    let key = source_key_v4(a);
    let mut cfg = quiet();
    cfg.rate.requests = Bucket { rate: 1, burst: 3 };
    cfg.rate.invite = Bucket { rate: 1, burst: 1 };
    cfg.sip.not_sip = PassDrop::Pass;
    let mut k = TestKernel::with_config(&cfg);
    k.set_signatures(&default_signatures());
    let invite = sipmsg::phones().into_iter().find(|(who, _)| who.contains("INVITE")).expect("an INVITE").1;
    let register =
        sipmsg::phones().into_iter().find(|(who, _)| who.contains("REGISTER")).expect("a REGISTER").1;
    let svmap = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", "198.18.0.1", false);
    let src = dotted(a);
    assert_eq!(k.run(&sip_frame(&src, &invite)), Action::Pass, "the first INVITE: its state begins");
    assert_eq!(k.source_cache_slot(&key).key, [0, 0], "no note for a source without state");
    assert_eq!(k.run(&sip_frame(&src, &invite)), Action::Drop, "over its INVITE rate");
    let slot = k.source_cache_slot(&key);
    assert_eq!(slot.key, cache_key(&key), "noted");
    assert!(slot.clear_jiffy != 0 && slot.over_jiffy == 0, "nothing to decide before the read: {slot:?}");
    // The third INVITE, over its own rate, takes the last of the bucket for all requests
    // (three): the over-rate note replaces the clear one at once, and the next request, a
    // scanner's, is dropped unread.
    assert_eq!(k.run(&sip_frame(&src, &invite)), Action::Drop, "still over its INVITE rate");
    let slot = k.source_cache_slot(&key);
    assert!(slot.over_jiffy != 0 && slot.clear_jiffy == 0, "the rate for all used up: {slot:?}");
    assert_eq!(k.run(&sip_frame(&src, &svmap)), Action::Drop);
    assert_eq!(
        (k.counter(Action::Drop, Reason::Rate).packets, k.counter(Action::Drop, Reason::Signature).packets),
        (3, 0),
        "the scanner's request dropped unread"
    );

    // Noted clear, then banned in its state alone: what it sends is dropped as banned, and the
    // ban is written back to its slot.
    let not_sip = b"HELLO, this begins like a request line and is no SIP\r\n".to_vec();
    let noted = |k: &mut TestKernel, s: [u8; 4]| {
        let src = dotted(s);
        for _ in 0..2 {
            assert_eq!(k.run(&sip_frame(&src, &register)), Action::Pass, "{src}: within its rate");
        }
        assert_ne!(k.source_cache_slot(&source_key_v4(s)).clear_jiffy, 0, "{src} noted");
    };
    let banned = in_one_jiffy(|n| {
        let s = [198, 18, 1, n];
        noted(&mut k, s);
        let mut state = k.kernel.source(&source_key_v4(s)).expect("reading CG_SOURCES").expect("its state");
        state.banned_until = callguard::clock::boot_ns() + 60_000_000_000;
        k.set_source_state(&source_key_v4(s), state);
        (s, k.run(&sip_frame(&dotted(s), &not_sip)))
    });
    assert_eq!(banned.1, Action::Drop, "{}: no SIP, but banned", dotted(banned.0));
    assert_eq!(k.counter(Action::Pass, Reason::NotSip).packets, 0);
    let slot = k.source_cache_slot(&source_key_v4(banned.0));
    assert!(slot.banned_until > callguard::clock::boot_ns(), "the ban written back to the slot: {slot:?}");

    // Noted clear, then in a streak with its bucket for all requests used up (forged): what it
    // sends is dropped, a datagram that is no SIP as over the rate (as it would have been
    // unread), a request for what the read finds first (a scanner's for its signature) or as
    // over the rate.
    let rate = k.counter(Action::Drop, Reason::Rate).packets;
    let over = in_one_jiffy(|n| {
        let s = [198, 18, 2, n];
        noted(&mut k, s);
        let mut state = k.kernel.source(&source_key_v4(s)).expect("reading CG_SOURCES").expect("its state");
        let now = callguard::clock::boot_ns();
        (state.over_since, state.last_over) = (now - 1_000_000, now);
        state.tat[BUCKET_ALL] = now + 3_600_000_000_000;
        k.set_source_state(&source_key_v4(s), state);
        let tokens = state.tat[BUCKET_REGISTER];
        let out = [&svmap, &register, &not_sip].map(|p| k.run(&sip_frame(&dotted(s), p)));
        let after = k.kernel.source(&source_key_v4(s)).expect("reading CG_SOURCES").expect("its state");
        (out, after.tat[BUCKET_REGISTER] == tokens)
    });
    assert_eq!(over.0, [Action::Drop; 3]);
    assert!(over.1, "the REGISTER over the rate took no token from its own bucket");
    assert_eq!(k.counter(Action::Pass, Reason::NotSip).packets, 0, "no SIP, but over the rate");
    assert!(k.counter(Action::Drop, Reason::Rate).packets >= rate + 2, "the REGISTER over the rate too");
    assert_eq!(k.counter(Action::Drop, Reason::Banned).packets, u64::from(banned.0[3]) + 1);

    // A ban being lifted: the daemon clears the slot, then removes the state. A packet in
    // between is dropped by the state's ban, which is not written back to the cleared slot;
    // once the state is gone, the source is free.
    let (key, src) = (source_key_v4(banned.0), dotted(banned.0));
    k.clear_source_cache_slot(&key);
    assert_eq!(k.run(&sip_frame(&src, &register)), Action::Drop, "the state's ban, until it is removed");
    assert_eq!(k.source_cache_slot(&key).banned_until, 0, "the cleared slot stays clear");
    assert!(k.evict_source(&key), "its state removed");
    assert_eq!(k.run(&sip_frame(&src, &register)), Action::Pass, "the ban lifted");

    // With nothing counted (no rates, no enumeration, no signature or password bans), the
    // judge has no rate state to look up, and still makes the skipped check: a ban in the state
    // of a source noted clear (its state, left by a ban that ended) drops its request.
    let mut off = quiet();
    off.auth.failures = 0;
    let mut k = TestKernel::with_config(&off);
    k.set_signatures(&default_signatures());
    let verdict = in_one_jiffy(|n| {
        let key = source_key_v4([198, 18, 3, n]);
        let src = dotted([198, 18, 3, n]);
        k.set_source_state(&key, Default::default());
        assert_eq!(k.run(&sip_frame(&src, &register)), Action::Pass, "{src}: no ban");
        assert_ne!(k.source_cache_slot(&key).clear_jiffy, 0, "{src} noted");
        let state = callguard_common::limits::SourceState {
            banned_until: callguard::clock::boot_ns() + 60_000_000_000,
            ..Default::default()
        };
        k.set_source_state(&key, state);
        k.run(&sip_frame(&src, &register))
    });
    assert_eq!(verdict, Action::Drop, "banned in its state");
}

/// A scanner's signature ban is written into its state by the first packet its source cache
/// slot drops after the ban (a source that sent once has no state: the ban is the slot's). A
/// banned source whose state the LRU map then evicts (a flood of new sources) keeps its ban:
/// its slot drops it, and the 256th packet the slot drops after the first writes the state
/// back, banned, so that a ban taking the slot later (one spoofed scanner packet from an
/// address an attacker picked to share it) does not lift it. The ban still ends on time.
#[test]
fn an_evicted_ban_is_written_back_and_ends_on_time() {
    use callguard_common::limits::{TOUCH_EVERY, cache_key, source_key_v4};
    let banned = [198, 18, 0, 66];
    let mut cfg = quiet();
    cfg.sip.signature_ban = true;
    cfg.sip.signature_ban_secs = 1;
    let mut k = TestKernel::with_config(&cfg);
    k.set_signatures(&default_signatures());
    let picked = slot_mate(&k, banned);
    let svmap = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", "198.18.0.1", false);
    let phone = sipmsg::phones()[0].1.clone();
    let (a, p) = (dotted(banned), dotted(picked));
    let key = source_key_v4(banned);
    assert_eq!(k.run(&sip_frame(&a, &svmap)), Action::Drop, "{a}'s scanner");
    let banned_at = Instant::now();
    assert!(k.kernel.source(&key).unwrap().is_none(), "{a}'s first ban is its slot's alone");
    assert_eq!(k.run(&sip_frame(&a, &phone)), Action::Drop, "the first packet the slot drops");
    let state = k.kernel.source(&key).unwrap().expect("the ban written into a state");
    assert_eq!(state.banned_until, k.source_cache_slot(&key).banned_until, "the slot's ban");
    assert!(k.evict_source(&key), "{a} had state");
    for i in 1..=TOUCH_EVERY {
        assert_eq!(k.run(&sip_frame(&a, &phone)), Action::Drop, "packet {i} from {a}");
        let state = k.kernel.source(&key).expect("reading CG_SOURCES");
        assert_eq!(state.is_some(), i == TOUCH_EVERY, "{a}'s state after {i} packets");
    }
    assert!(k.kernel.source(&key).unwrap().is_some_and(|s| s.banned_until > 0), "written back banned");
    // A ban takes the slot; the source stays banned by its state.
    assert_eq!(k.run(&sip_frame(&p, &svmap)), Action::Drop, "{p}'s scanner");
    assert_eq!(k.source_cache_slot(&key).key, cache_key(&source_key_v4(picked)), "{p} took the slot");
    assert_eq!(k.run(&sip_frame(&a, &phone)), Action::Drop, "{a} is still banned");
    assert!(banned_at.elapsed() < Duration::from_millis(900), "too slow to test the ban's end");
    // Past the second (and a tick), both bans are over.
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(banned_at.elapsed()));
    for src in [&a, &p] {
        assert_eq!(k.run(&sip_frame(src, &phone)), Action::Pass, "{src}'s ban ended");
    }
}

/// A source over its rate for all requests has its requests dropped before they are read, so
/// that a flood from it costs a lookup per packet instead of an inspection: once a read request
/// has started its exceeding streak, a scanner's request counts as `rate`, not `signature`.
/// Before that, an empty bucket alone drops nothing unread (requests the read would refuse must
/// not start a streak). What does not begin like a request — a response, a keepalive, a method
/// in lower case — is still read, and policed as before. The streak goes on unread and still
/// ends in the rate ban, whose event names the method the read found; another source is not
/// affected.
#[test]
fn a_source_over_its_rate_for_all_requests_is_dropped_unread_and_still_banned() {
    let mut cfg = quiet();
    cfg.rate.requests = Bucket { rate: 1, burst: 2 };
    cfg.rate.ban_after_secs = 1;
    cfg.rate.ban_secs = 60;
    let mut k = TestKernel::with_config(&cfg);
    k.set_signatures(&default_signatures());
    let register =
        sipmsg::phones().into_iter().find(|(who, _)| who.contains("REGISTER")).expect("a REGISTER").1;
    let svmap = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", "198.18.0.1", false);
    let src = "198.18.0.66";
    for _ in 0..2 {
        assert_eq!(k.run(&sip_frame(src, &register)), Action::Pass, "within the burst");
    }
    assert_eq!(k.run(&sip_frame(src, &svmap)), Action::Drop);
    assert_eq!(
        (k.counter(Action::Drop, Reason::Signature).packets, k.counter(Action::Drop, Reason::Rate).packets),
        (1, 0),
        "an empty bucket but no streak yet: read, and dropped for what it is"
    );
    assert_eq!(k.run(&sip_frame(src, &register)), Action::Drop, "over the rate: the streak starts");
    assert_eq!(k.run(&sip_frame(src, &svmap)), Action::Drop, "the scanner in the streak");
    assert_eq!(k.counter(Action::Drop, Reason::Rate).packets, 2);
    assert_eq!(k.counter(Action::Drop, Reason::Signature).packets, 1, "dropped before it was read");
    for (what, payload) in
        [("a response", sipmsg::responses().remove(0)), ("a keepalive", b"\r\n\r\n".to_vec())]
    {
        assert_eq!(k.run(&sip_frame(src, &payload)), Action::Pass, "{what} is read, and passes");
    }
    let lower = String::from_utf8(register.clone()).expect("text").replacen("REGISTER", "register", 1);
    // Read in full: its CSeq names REGISTER, so the read drops it for an ambiguous request.
    assert_eq!(k.run(&sip_frame(src, lower.as_bytes())), Action::Drop);
    assert_eq!(
        (
            k.counter(Action::Drop, Reason::AmbiguousHeader).packets,
            k.counter(Action::Drop, Reason::Rate).packets
        ),
        (1, 2),
        "a lower-case method is read in full"
    );
    assert_eq!(k.run(&sip_frame("198.18.0.67", &svmap)), Action::Drop);
    assert_eq!(k.counter(Action::Drop, Reason::Signature).packets, 2, "its neighbour is read");

    let t0 = Instant::now();
    while k.counter(Action::Drop, Reason::Banned).packets == 0 {
        assert!(t0.elapsed() < Duration::from_secs(3), "not banned within 3 s of exceeding");
        let _ = k.run(&sip_frame(src, &register));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(t0.elapsed() >= Duration::from_millis(900), "banned after {:?}, before 1 s", t0.elapsed());
    assert!(k.counter(Action::Drop, Reason::Rate).packets > 10, "the streak was dropped unread");
    let ev = events(&mut k);
    let bans: Vec<&Event> = ev.iter().filter(|e| e.kind == event::BAN_RATE).collect();
    assert_eq!(bans.len(), 1, "{ev:?}");
    assert_eq!(bans[0].addr().to_string(), src);
    assert_eq!(bans[0].method, callguard_common::sip::method::REGISTER, "the read found the method");

    // IPv6: the state is the /64's, so a scanner that moves to the next address of its /64 is
    // still in the streak, and still dropped unread.
    let rate = k.counter(Action::Drop, Reason::Rate).packets;
    let signature = k.counter(Action::Drop, Reason::Signature).packets;
    for _ in 0..2 {
        assert_eq!(k.run(&sip_frame("2001:db8:7:1::1", &register)), Action::Pass, "within the burst");
    }
    assert_eq!(k.run(&sip_frame("2001:db8:7:1::2", &register)), Action::Drop, "the /64 over the rate");
    assert_eq!(k.run(&sip_frame("2001:db8:7:1::3", &svmap)), Action::Drop);
    assert_eq!(
        (
            k.counter(Action::Drop, Reason::Rate).packets - rate,
            k.counter(Action::Drop, Reason::Signature).packets - signature
        ),
        (2, 0),
        "the /64's scanner dropped unread"
    );
}

/// Keys that the hash of an earlier release put in one slot whatever its key, because it
/// folded a key's words to 32 bits before the key went in: any /64 whose two halves XOR to an
/// IPv4 source's fold shared that source's slot, so one forged IPv6 packet could end its
/// slot-only ban. Under the keyed hash such /64s fall in the slots their multipliers give.
#[test]
fn no_source_shares_a_slot_whatever_the_key() {
    use callguard_common::limits::{cache_key, source_key_v4};
    let mut k = TestKernel::with_config(&quiet());
    k.set_signatures(&default_signatures());
    let victim = source_key_v4([198, 18, 0, 66]);
    let w = cache_key(&victim)[1];
    let fold = (w ^ (w >> 32)) as u32;
    let target = k.cache_slot_of(&victim);
    // Sixteen /64s (q, q ^ fold): each folded to the victim's 32 bits under the old hash.
    let shared = (1..=16u32)
        .map(|i| {
            let q = i.wrapping_mul(0x0101_0101) ^ 0x2001_0db8;
            let word = u64::from(q) | (u64::from(q ^ fold) << 32);
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&word.to_ne_bytes());
            key
        })
        .filter(|key| k.cache_slot_of(key) == target)
        .count();
    assert!(shared < 4, "{shared} of 16 crafted /64s share the victim's slot");
}
