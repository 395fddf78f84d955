//! Failed authentications, through BPF_PROG_TEST_RUN of both programs: the XDP program notes
//! the REGISTERs and INVITEs that carry credentials, the egress program reads the PBX's answers
//! to them, and a source whose failures reach `auth.failures` is banned. Then the kernel against
//! the userspace model (`callguard_common::auth::AuthState`) on generated sequences. Per user:
//! a guess spread over many sources guards the user (`auth.user_failures`), and the kernel
//! reads users as the model (`callguard_common::auth::user_key`) does.

use callguard::kernel::{datapath::Datapath as _, objects::Loops};
use callguard_common::{
    Action, Reason,
    answer::CALLGUARD_MARK,
    auth::{AuthState, USER_UNREADABLE, UserAuth, user_key},
    events::{Event, event},
    limits::source_key_v4,
    sip::method,
};
use callguard_tests::{TestKernel, frame::Frame};

const PBX: &str = "198.18.0.1";

/// A credentialed REGISTER from `src` (port 5090) whose To is `to`.
fn register_to(src: &str, to: &str) -> Vec<u8> {
    let payload = format!(
        "REGISTER sip:pbx SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5090;branch=z9hG4bK1\r\n\
         From: <sip:101@pbx>;tag=a\r\nTo: {to}\r\nCall-ID: c1@{src}\r\nCSeq: 2 REGISTER\r\n\
         Authorization: Digest username=\"101\", realm=\"pbx\", nonce=\"n\", uri=\"sip:pbx\", response=\"0\"\r\n\
         Content-Length: 0\r\n\r\n"
    );
    Frame { sport: 5090, ..Frame::udp(src, 5060) }.payload(payload.as_bytes()).build()
}

/// The PBX's answer `status` to a REGISTER of `dst` (port 5090) whose To was `to`.
fn answer_to(dst: &str, status: u16, to: &str) -> Vec<u8> {
    let payload = format!(
        "SIP/2.0 {status} Answer\r\nVia: SIP/2.0/UDP {dst}:5090;branch=z9hG4bK1\r\n\
         From: <sip:101@pbx>;tag=a\r\nTo: {to};tag=p\r\nCall-ID: c1@{dst}\r\nCSeq: 2 REGISTER\r\n\
         WWW-Authenticate: Digest realm=\"pbx\", nonce=\"n2\"\r\nContent-Length: 0\r\n\r\n"
    );
    let d = dst.parse().expect("address");
    Frame { dst: d, sport: 5060, dport: 5090, ..Frame::udp(PBX, 5090) }.payload(payload.as_bytes()).build()
}

/// The users the kernel guarded, as its events name them (the user part as the To wrote it).
fn guard_events(ring: &mut aya::maps::RingBuf<aya::maps::MapData>) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        // SAFETY: the kernel writes Events of exactly this size into CG_EVENTS.
        let e = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) };
        if e.kind == event::GUARD_USER {
            out.push(String::from_utf8_lossy(&e.ua[..usize::from(e.ua_len)]).into_owned());
        }
    }
    out
}

/// A request from `src` (port 5090) to the PBX's SIP port.
fn request(src: &str, m: &str, creds: bool) -> Vec<u8> {
    let auth = if creds {
        let h = if m == "INVITE" { "Proxy-Authorization" } else { "Authorization" };
        format!(
            "{h}: Digest username=\"101\", realm=\"pbx\", nonce=\"n1\", uri=\"sip:pbx\", response=\"00\"\r\n"
        )
    } else {
        String::new()
    };
    let payload = format!(
        "{m} sip:101@{PBX} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5090;branch=z9hG4bK1\r\n\
         From: <sip:101@pbx>;tag=a\r\nTo: <sip:101@pbx>\r\nCall-ID: c1@{src}\r\nCSeq: 2 {m}\r\n\
         User-Agent: Yealink SIP-T46S\r\n{auth}Content-Length: 0\r\n\r\n"
    );
    Frame { sport: 5090, ..Frame::udp(src, 5060) }.payload(payload.as_bytes()).build()
}

/// The PBX's answer `status` to a `m` request of `to` (port 5090), a challenge when 401/407.
fn answer(to: &str, status: u16, m: &str, stale: bool) -> Vec<u8> {
    let challenge = match status {
        401 => "WWW-Authenticate: Digest realm=\"pbx\", nonce=\"n2\"",
        407 => "Proxy-Authenticate: Digest realm=\"pbx\", nonce=\"n2\"",
        _ => "",
    };
    let stale = if stale && !challenge.is_empty() { ", stale=true\r\n" } else { "\r\n" };
    let challenge = if challenge.is_empty() { String::new() } else { format!("{challenge}{stale}") };
    let payload = format!(
        "SIP/2.0 {status} Answer\r\nVia: SIP/2.0/UDP {to}:5090;branch=z9hG4bK1\r\n\
         From: <sip:101@pbx>;tag=a\r\nTo: <sip:101@pbx>;tag=p\r\nCall-ID: c1@{to}\r\nCSeq: 2 {m}\r\n\
         {challenge}Content-Length: 0\r\n\r\n"
    );
    let dst = to.parse().expect("address");
    Frame { dst, sport: 5060, dport: 5090, ..Frame::udp(PBX, 5090) }.payload(payload.as_bytes()).build()
}

fn key(src: &str) -> [u8; 16] {
    source_key_v4(src.parse::<std::net::Ipv4Addr>().expect("IPv4").octets())
}

/// The bans the kernel reported, by source.
fn ban_events(ring: &mut aya::maps::RingBuf<aya::maps::MapData>) -> Vec<(std::net::IpAddr, u8)> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        // SAFETY: the kernel writes Events of exactly this size into CG_EVENTS.
        let e = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) };
        if e.kind != event::DROP && e.kind != event::GUARD_USER {
            out.push((e.addr(), e.kind));
        }
    }
    out
}

/// fail2ban's shape: five wrong passwords, then the source is banned; the sixth guess never
/// reaches the PBX. A phone that answers a challenge with the right password, or whose nonce
/// expired, counts nothing; neither does callguard's own 403.
#[test]
fn wrong_passwords_ban_their_source_and_a_challenge_never_counts() {
    wrong_passwords(Loops::of_this_kernel());
}

/// The same with the build for kernels before 6.9, whose answer walk and `stale=true` search
/// are `bpf_loop` callbacks (`callguard_common::loops`).
#[test]
fn the_build_for_older_kernels_reads_the_answers_alike() {
    wrong_passwords(Loops::Callbacks);
}

fn wrong_passwords(loops: Loops) {
    const GUESSER: &str = "198.18.0.20";
    const PHONE: &str = "198.18.0.21";
    // Per source only: every request here names user 101.
    let mut cfg = TestKernel::quiet();
    cfg.auth.user_failures = 0;
    let mut k = TestKernel::with_loops(&cfg, loops);
    let mut events = k.kernel.take_events().expect("the event ring");

    // The phone: a challenge, the right password, twenty times; a stale nonce twenty times.
    for _ in 0..20 {
        assert_eq!(k.run(&request(PHONE, "REGISTER", false)), Action::Pass);
        k.run_egress(&answer(PHONE, 401, "REGISTER", false));
        assert_eq!(k.run(&request(PHONE, "REGISTER", true)), Action::Pass);
        k.run_egress(&answer(PHONE, 200, "REGISTER", false));
        assert_eq!(k.run(&request(PHONE, "REGISTER", true)), Action::Pass);
        k.run_egress(&answer(PHONE, 401, "REGISTER", true));
        // callguard's own 403 (the slow path's, marked) to a credentialed INVITE.
        assert_eq!(k.run(&request(PHONE, "INVITE", true)), Action::Pass);
        k.run_egress_marked(&answer(PHONE, 403, "INVITE", false), CALLGUARD_MARK);
    }
    let phone = k.auth_state(&key(PHONE)).expect("the phone's state");
    assert_eq!(phone.failures, 0, "{phone:?}");
    assert_eq!(phone.pending, [0, 20], "callguard's 403s are not answers: their INVITEs stay pending");

    // The guesser: each guess answered 401; the fifth bans.
    for guess in 1..=5 {
        assert_eq!(k.run(&request(GUESSER, "REGISTER", true)), Action::Pass, "guess {guess}");
        k.run_egress(&answer(GUESSER, 401, "REGISTER", false));
    }
    assert_eq!(ban_events(&mut events), [(GUESSER.parse().unwrap(), event::BAN_AUTH)]);
    assert_eq!(k.run(&request(GUESSER, "REGISTER", true)), Action::Drop, "the sixth guess");
    assert_eq!(k.counter(Action::Drop, Reason::Banned).packets, 1);
    assert_eq!(k.run(&request(PHONE, "REGISTER", true)), Action::Pass, "the phone is untouched");

    // A 403 to a REGISTER counts without credentials; five ban.
    const REFUSED: &str = "198.18.0.22";
    for _ in 0..5 {
        k.run(&request(REFUSED, "REGISTER", false));
        k.run_egress(&answer(REFUSED, 403, "REGISTER", false));
    }
    assert_eq!(ban_events(&mut events), [(REFUSED.parse().unwrap(), event::BAN_AUTH)]);
    // 407s to credentialed INVITEs count like 401s to REGISTERs.
    const INVITER: &str = "198.18.0.23";
    for _ in 0..5 {
        k.run(&request(INVITER, "INVITE", true));
        k.run_egress(&answer(INVITER, 407, "INVITE", false));
    }
    assert_eq!(ban_events(&mut events), [(INVITER.parse().unwrap(), event::BAN_AUTH)]);
}

/// A guesser whose scanner request got its source a signature ban before the PBX's answers to
/// its guesses came back: that ban, held by the source cache's slot alone (the source had no
/// state), stands when the failures reach the limit. It is written into the state the
/// failures create, not replaced by the shorter failed-password ban, and the source is not
/// reported banned twice.
#[test]
fn failed_passwords_do_not_shorten_a_signature_ban_held_by_the_source_cache() {
    use callguard_tests::{
        default_signatures,
        sipmsg::{self, SvTool},
    };
    const GUESSER: &str = "198.18.0.24";
    let mut cfg = TestKernel::quiet();
    cfg.auth.user_failures = 0;
    cfg.sip.signature_ban = true;
    cfg.sip.signature_ban_secs = 7200;
    let mut k = TestKernel::with_config(&cfg);
    k.set_signatures(&default_signatures());
    let mut events = k.kernel.take_events().expect("the event ring");
    for guess in 1..=5 {
        assert_eq!(k.run(&request(GUESSER, "REGISTER", true)), Action::Pass, "guess {guess}");
    }
    let scan = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", PBX, false);
    assert_eq!(
        k.run(&Frame { sport: 5090, ..Frame::udp(GUESSER, 5060) }.payload(&scan).build()),
        Action::Drop
    );
    assert!(k.kernel.source(&key(GUESSER)).unwrap().is_none(), "the signature ban: the slot's alone");
    let slot = k.source_cache_slot(&key(GUESSER));
    assert!(slot.banned_until > callguard::clock::boot_ns() + 7000 * 1_000_000_000, "{slot:?}");
    for _ in 0..5 {
        k.run_egress(&answer(GUESSER, 401, "REGISTER", false));
    }
    // Each answer took its guess (the fifth failure reached the limit, which starts the count
    // anew).
    assert_eq!(k.auth_state(&key(GUESSER)).expect("the guesser's failures").pending, [0, 0]);
    assert_eq!(ban_events(&mut events), [(GUESSER.parse().unwrap(), event::BAN_SIGNATURE)], "banned once");
    let state = k.kernel.source(&key(GUESSER)).unwrap().expect("the state the failures made");
    assert_eq!(state.banned_until, slot.banned_until, "the signature ban, not the shorter one");
    assert_eq!(k.source_cache_slot(&key(GUESSER)).banned_until, slot.banned_until);
}

/// The kernel counts as the model does: random requests (REGISTER or INVITE, with or without
/// credentials) and answers (2xx, 401, 407, 403, 404, 100, stale or not) from eight sources
/// through both programs, and the same through `AuthState`; failures, pending requests and bans
/// agree for every source.
#[test]
fn the_kernel_counts_failed_authentications_as_the_model_does() {
    // Per source only: every request here names user 101.
    let mut cfg = TestKernel::quiet();
    cfg.auth.user_failures = 0;
    let mut k = TestKernel::with_config(&cfg);
    let mut events = k.kernel.take_events().expect("the event ring");
    let sources: Vec<String> = (0..8).map(|i| format!("198.18.1.{}", i + 1)).collect();
    let mut model: Vec<AuthState> = vec![AuthState::default(); sources.len()];
    let mut banned = vec![false; sources.len()];
    const LIMIT: u32 = 5;
    // The window never ends within the test: the model's time stands still past its first roll.
    let (now, window) = (1 << 50, 600_000_000_000);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut bans = 0;
    for _ in 0..400 {
        let r = next();
        let i = (r % 8) as usize;
        let src = &sources[i];
        let m = if r >> 8 & 3 == 0 { "INVITE" } else { "REGISTER" };
        let id = if m == "INVITE" { method::INVITE } else { method::REGISTER };
        if r >> 10 & 1 == 0 {
            let creds = r >> 11 & 1 == 0;
            let action = k.run(&request(src, m, creds));
            assert_eq!(action == Action::Drop, banned[i], "{src}: dropped only when banned");
            if creds && !banned[i] {
                model[i].on_request(id, now, window);
            }
        } else {
            let status = [200, 401, 407, 403, 404, 100, 200, 401][(r >> 12 & 7) as usize];
            let stale = r >> 15 & 3 == 0;
            k.run_egress(&answer(src, status, m, stale));
            if model[i].on_answer(id, status, stale && (status == 401 || status == 407), now, window)
                && model[i].reached(LIMIT)
                && !banned[i]
            {
                banned[i] = true;
                bans += 1;
            }
        }
    }
    for (i, src) in sources.iter().enumerate() {
        let kernel = k.auth_state(&key(src)).unwrap_or_default();
        assert_eq!(
            (kernel.failures, kernel.pending),
            (model[i].failures, model[i].pending),
            "{src}: kernel {kernel:?}, model {:?}",
            model[i]
        );
    }
    let reported: Vec<_> = ban_events(&mut events);
    assert_eq!(reported.len(), bans, "{reported:?}");
    assert!((2..8).contains(&bans), "the generator must ban some sources and spare others: {bans}");
}

/// A guess spread over many sources, each below `auth.failures` (5): four wrong passwords from
/// each of three sources, the user written three ways. The tenth failure guards user 101: a new
/// source's REGISTER for it is dropped (`guarded_user`), the phone the PBX registered earlier
/// keeps registering, another user is untouched. A To the kernel cannot read (a display name
/// longer than it reads) is one user of its own, guarded the same way.
#[test]
fn a_guess_spread_over_many_sources_guards_the_user() {
    let mut k = TestKernel::new();
    let mut events = k.kernel.take_events().expect("the event ring");
    const PHONE: &str = "198.18.2.100";
    k.run(&register_to(PHONE, "<sip:101@pbx>"));
    k.run_egress(&answer_to(PHONE, 200, "<sip:101@pbx>"));

    let forms = ["<sip:101@pbx>", "sip:101@pbx", "\"101\" <sip:%31%30%31@198.18.0.1>"];
    let mut failures = 0;
    for (i, to) in forms.iter().enumerate() {
        let src = format!("198.18.2.{}", i + 1);
        for guess in 1..=4 {
            let action = k.run(&register_to(&src, to));
            if failures == 10 {
                assert_eq!(action, Action::Drop, "{src} guess {guess}: the user is guarded");
                continue;
            }
            assert_eq!(action, Action::Pass, "{src} guess {guess}");
            k.run_egress(&answer_to(&src, 401, to));
            failures += 1;
        }
    }
    assert_eq!(failures, 10);
    assert_eq!(guard_events(&mut events), ["%31%30%31"], "one guard, named as the To wrote the user");
    let dropped = k.counter(Action::Drop, Reason::GuardedUser).packets;
    assert_eq!(dropped, 2, "the third source's last two guesses");
    assert_eq!(k.run(&register_to("198.18.2.50", "<sip:101@pbx>")), Action::Drop, "a new source");
    assert_eq!(k.run(&register_to("198.18.2.50", "<sip:102@pbx>")), Action::Pass, "another user");
    assert_eq!(k.run(&register_to(PHONE, "<sip:101@pbx>")), Action::Pass, "the registered phone");
    let users = k.auth_users();
    let u = users.iter().find(|(key, _)| *key == user_key(b"<sip:101@pbx>")).expect("101's state");
    assert!(u.1.guarded_until > 0 && u.1.failures == 0, "{u:?}");

    // Unreadable: a display name past the 128 bytes the kernel reads.
    let long = format!("\"{}\" <sip:103@pbx>", "x".repeat(130));
    for i in 0..10 {
        let src = format!("198.18.2.{}", 10 + i / 4);
        assert_eq!(k.run(&register_to(&src, &long)), Action::Pass, "unreadable guess {i}");
        k.run_egress(&answer_to(&src, 401, &long));
    }
    assert_eq!(guard_events(&mut events), [""], "the unreadable To's guard names no user");
    assert_eq!(k.run(&register_to("198.18.2.51", &long)), Action::Drop);
    assert_eq!(k.run(&register_to("198.18.2.51", "<sip:103@pbx>")), Action::Pass, "written readably");
    assert!(users.iter().all(|(key, _)| *key != USER_UNREADABLE), "none before");
}

/// The kernel reads users as the model does: 600 wrong guesses with random To values (three
/// users, display names with quotes, escapes and `<`, schemes, percent escapes, upper case,
/// parameters, display names too long to read) from sources that change every four guesses,
/// through both programs, and the same through `user_key` and `UserAuth`: the failures and
/// guards per user agree, and so does every drop.
#[test]
fn the_kernel_reads_users_as_the_model_does() {
    let mut k = TestKernel::new();
    let mut events = k.kernel.take_events().expect("the event ring");
    let (now, window, guard) = (1u64 << 50, 600_000_000_000u64, 3_600_000_000_000u64);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut model: std::collections::HashMap<u64, UserAuth> = std::collections::HashMap::new();
    let (mut guards, mut drops) = (0, 0);
    for n in 0..600u32 {
        let r = next();
        let mut user: String = ["101", "102", "alice"][(r % 3) as usize].into();
        if r >> 2 & 3 == 0 {
            user = user.to_uppercase();
        }
        if r >> 4 & 3 == 0 {
            user = format!("%{:02X}{}", user.as_bytes()[0], &user[1..]);
        }
        let host = ["pbx", "198.18.0.1:5060", "pbx;transport=udp"][(r >> 6 & 3) as usize % 3];
        let scheme = ["sip", "sips", "SIP"][(r >> 8 & 3) as usize % 3];
        let uri = format!("{scheme}:{user}@{host}");
        let name =
            ["", "x", "\"a<b\" ", "\"q\\\"<sip:9@x>\" ", "Bob ", "\"sip:1@2\" "][(r >> 10 & 7) as usize % 6];
        let to = match r >> 13 & 7 {
            0 => uri,
            1 => format!("\"{}\" <{uri}>", "y".repeat(120 + (r >> 16 & 15) as usize)),
            _ if name == "x" => format!("<{uri}>"),
            _ => format!("{name}<{uri}>"),
        };
        let src = format!("198.18.{}.{}", 4 + n / 4 / 250, 1 + n / 4 % 250);
        let key = user_key(to.as_bytes());
        let st = model.entry(key).or_default();
        let want = if st.guarded(now) { Action::Drop } else { Action::Pass };
        assert_eq!(k.run(&register_to(&src, &to)), want, "{to}");
        if want == Action::Drop {
            drops += 1;
            continue;
        }
        k.run_egress(&answer_to(&src, 401, &to));
        if st.on_failure(now, window, 10, guard) {
            guards += 1;
        }
    }
    let kernel: std::collections::HashMap<u64, UserAuth> = k.auth_users().into_iter().collect();
    for (key, st) in &model {
        let got = kernel.get(key).copied().unwrap_or_default();
        assert_eq!(
            (got.failures, got.guarded_until != 0),
            (st.failures, st.guarded_until != 0),
            "user {key:x}"
        );
    }
    assert_eq!(kernel.len(), model.len(), "the same users");
    assert_eq!(guard_events(&mut events).len(), guards);
    assert_eq!(k.counter(Action::Drop, Reason::GuardedUser).packets, drops);
    assert!(
        model.len() == 4 && guards == 4 && drops > 100,
        "{} users, {guards} guards, {drops} drops",
        model.len()
    );
}
